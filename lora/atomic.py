"""Atomic writes: a temporary name beside the target, then one rename (or one exchange).

The project's only atomic writer (``cinephile.io`` builds on it). A file or a directory is
either the old one or the new one, never half-written, missing or a mix. Written files and
directories get the permissions ``open()`` / ``mkdir()`` would give (0666 / 0777 minus the
umask, e.g. 0644 / 0755), and temporary files left by a killed writer
(``.<name>.<pid>-<random>.tmp``, obviously disposable) are removed on the next write.

Replacing a directory: on Linux the new directory is swapped with the old one in a single
``renameat2(RENAME_EXCHANGE)`` call (glibc >= 2.28; ext4, xfs, btrfs, tmpfs...). Where the
exchange is unavailable, the old directory is renamed to a backup (``.<name>.<pid>-<random>.bak``),
the new one renamed in, and the backup renamed back if that fails; ``recover_dir`` (called by
the next write and by readers such as ``lora.load_adapter``) restores a backup left by a
process that died between the two renames.

References: rename(2), renameat2(2) (RENAME_EXCHANGE), fsync(2).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import secrets
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}


def _load_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # no glibc, or glibc < 2.28
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _load_renameat2()


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap the entries ``a`` and ``b`` (both must exist) in one step.

    Returns:
        True if swapped; False where the OS or filesystem has no atomic exchange (nothing changed).

    Raises:
        OSError: any other failure of ``renameat2`` (nothing changed).
    """
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _umask_mode(base: int) -> int:
    """``base`` (0o666 files, 0o777 dirs) minus the process umask, as ``open()`` would give."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


def _side_path(path: Path, suffix: str) -> Path:
    """``.<name>.<pid>-<random><suffix>`` beside ``path``: hidden, naming the writer's process."""
    return path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{suffix}"


def _tmp_path(path: Path) -> Path:
    return _side_path(path, ".tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _side_entries(path: Path, suffix: str) -> list[tuple[Path, int]]:
    """``(entry, writer pid)`` of the ``.<name>.<pid>-<random><suffix>`` entries beside ``path``."""
    if not path.parent.is_dir():
        return []
    prefix, found = f".{path.name}.", []
    for entry in path.parent.iterdir():
        name = entry.name
        if name.startswith(prefix) and name.endswith(suffix):
            pid = name[len(prefix):-len(suffix)].split("-", 1)[0]
            if pid.isdigit():
                found.append((entry, int(pid)))
    return found


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def clean_stale_tmp(path: str | os.PathLike) -> int:
    """Remove temporary files or folders left beside ``path`` by writers that were killed.

    Only names written by ``atomic_write`` / ``atomic_dir`` whose process no longer runs are removed.

    Returns:
        The number of entries removed.
    """
    path = Path(path)
    stale = [e for e, pid in _side_entries(path, ".tmp") if pid != os.getpid() and not _pid_alive(pid)]
    for entry in stale:
        _remove(entry)
    if stale:
        logger.info("removed %d stale temporary files beside %s", len(stale), path)
    return len(stale)


def recover_dir(path: str | os.PathLike) -> bool:
    """Restore a directory that an interrupted ``atomic_dir`` (rename fallback) left only as a backup.

    If ``path`` is missing, the backup ``.<name>.<pid>-<random>.bak`` beside it is renamed back;
    backups of finished or dead writers beside an existing ``path`` are deleted.

    Returns:
        True if ``path`` was restored from a backup.
    """
    path = Path(path)
    backups = _side_entries(path, ".bak")
    restored = False
    if backups and not os.path.lexists(path):
        newest = max(backups, key=lambda item: item[0].stat().st_mtime)
        os.rename(newest[0], path)  # a writer still between its renames then fails and keeps this one
        logger.warning("%s was missing after an interrupted write; restored the previous version from %s",
                       path, newest[0].name)
        backups.remove(newest)
        restored = True
    for entry, pid in backups:
        if pid == os.getpid() or not _pid_alive(pid):
            _remove(entry)
    return restored


def _fsync(path: Path, directory: bool = False) -> None:
    if directory and os.name != "posix":  # directories cannot be opened for fsync on Windows
        return
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finish_tree(root: Path) -> None:
    """Give ``root`` and everything below it ``open()``'s modes, and flush it all to disk."""
    file_mode, dir_mode = _umask_mode(0o666), _umask_mode(0o777)
    for folder, dirs, files in os.walk(root, topdown=False):
        for name in files:
            entry = Path(folder, name)
            st = entry.lstat()
            if stat.S_ISREG(st.st_mode):  # keep executables executable (save_pretrained never makes one)
                os.chmod(entry, dir_mode if st.st_mode & 0o111 else file_mode)
                _fsync(entry)
        os.chmod(folder, dir_mode)
        _fsync(Path(folder), directory=True)


def _install_dir(new: Path, path: Path) -> Path | None:
    """Put directory ``new`` at ``path``; return where the old directory now is (to delete), if any."""
    if not os.path.lexists(path):
        os.rename(new, path)
        return None
    if exchange(new, path):  # one step: `path` is the old directory until it is the new one
        return new
    backup = _side_path(path, ".bak")
    os.rename(path, backup)
    try:
        os.rename(new, path)
    except BaseException:
        try:
            os.rename(backup, path)
        except OSError:  # the backup stays; recover_dir renames it back
            logger.error("could not restore %s from %s; recover_dir(%r) will", path, backup, str(path))
        raise
    return backup


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; on success rename it onto ``path``.

    The file gets the usual permissions (0666 minus the umask, e.g. 0644); on an exception
    the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(path)
    tmp = _tmp_path(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {path}")
        os.chmod(tmp, _umask_mode(0o666))
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temporary file beside ``path`` and rename it onto ``path`` on success.

    Args:
        path: destination file; its directory is created if needed.
        mode: ``"w"`` (UTF-8 text) or ``"wb"``.

    Returns:
        A context manager yielding the open temporary file.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with open(tmp, mode, **kwargs) as f:
            yield f


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces ``path`` as a whole.

    At every instant ``path`` holds the old directory or the new one, complete (never missing,
    never a mix of their files), even if the process dies or a rename fails part way: the new
    directory is flushed to disk, then swapped in (see the module docstring). Its files and
    folders get ``open()`` / ``mkdir()`` permissions under the current umask (e.g. 0644 / 0755).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    clean_stale_tmp(path)
    tmp = _tmp_path(path)
    os.mkdir(tmp, 0o700)
    old = None
    try:
        yield tmp
        _finish_tree(tmp)
        old = _install_dir(tmp, path)
        _fsync(path.parent, directory=True)
    finally:
        for leftover in (tmp, old):  # the unused new directory, or the replaced old one
            if leftover is not None and os.path.lexists(leftover):
                try:
                    shutil.rmtree(leftover)
                except OSError as err:  # cleaned by the next write (clean_stale_tmp / recover_dir)
                    logger.warning("could not remove %s (%s)", leftover, err)
