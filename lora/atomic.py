"""Atomic writes: a temporary name beside the target, then one rename.

The project's only atomic writer (``cinephile.io`` builds on it). A file or a directory is
either the old one or the new one, never half-written or a mix; files get the usual
permissions (0666 minus the umask, e.g. 0644), and temporary files left by a killed writer
(``.<name>.<pid>-<random>.tmp``, obviously disposable) are removed on the next write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


def _umask_mode(base: int) -> int:
    """``base`` (0o666 files, 0o777 dirs) minus the process umask, as ``open()`` would give."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


def _tmp_path(path: Path) -> Path:
    """``.<name>.<pid>-<random>.tmp`` beside ``path``: hidden, and obviously disposable."""
    return path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_tmp(path: str | os.PathLike) -> int:
    """Remove temporary files or folders left beside ``path`` by writers that were killed.

    Only names written by ``atomic_write`` / ``atomic_dir`` whose process no longer runs are removed.

    Returns:
        The number of entries removed.
    """
    path = Path(path)
    removed = 0
    if not path.parent.is_dir():
        return 0
    prefix = f".{path.name}."
    for entry in path.parent.iterdir():
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix):-4].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    if removed:
        logger.info("removed %d stale temporary files beside %s", removed, path)
    return removed


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

    An old ``path`` is moved aside and deleted only after the new one is in place, so a crash
    leaves either the old directory or the new one, never a mix of their files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(path)
    tmp = _tmp_path(path)
    tmp.mkdir(mode=0o700)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode(0o777))
        old = None
        if path.exists():
            old = _tmp_path(path)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
