"""File I/O of the pipeline: JSONL, JSON, figures and run folders, all written atomically.

Every artifact goes through ``lora.atomic.atomic_write`` (the project's one atomic writer): a
temporary file beside the target, then one rename, with the usual 0644-style permissions and
stale temporary files of killed writers cleaned up on the next write.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from lora.atomic import atomic_dir, atomic_path, atomic_write

__all__ = ["atomic_dir", "atomic_path", "atomic_write", "require_keys", "write_jsonl", "read_jsonl", "save_json",
           "save_figure", "make_run_dir"]


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> Path:
    """Write one JSON object per line, atomically (UTF-8, non-ASCII kept as is).

    Args:
        path: destination ``.jsonl`` file; parent folders are created.
        records: JSON-serialisable dicts.

    Returns:
        The path written.
    """
    with atomic_write(path) as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return Path(path)


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> list[dict]:
    """Read a JSONL file written by ``write_jsonl`` (blank lines are ignored).

    Args:
        path: ``.jsonl`` file, UTF-8 (a byte-order mark is accepted).
        required: keys every record must have.

    Returns:
        The list of records.

    Raises:
        ValueError: naming the file and line of text that is not UTF-8, not JSON, not a JSON object,
            or a record without a ``required`` key.
    """
    path, required = Path(path), list(required)
    if not path.is_file():
        raise FileNotFoundError(f"JSONL file not found: {path}; run the notebook step that writes it")
    records = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path} line {lineno} is not UTF-8 ({e.reason} at byte {e.start}); "
                                 "save it as UTF-8") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {lineno}: invalid JSON ({e.msg}); regenerate the file") from e
            if not isinstance(record, dict):
                raise ValueError(f"{path} line {lineno}: expected a JSON object (one record per line), got "
                                 f"{type(record).__name__}; regenerate the file")
            missing = next((key for key in required if key not in record), None)
            if missing is not None:
                raise ValueError(f"{path} line {lineno}: the record has no {missing!r} key; every record needs "
                                 f"{required}; regenerate the file")
            records.append(record)
    return records


def save_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically (non-JSON values such as paths become strings)."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")
    return Path(path)


def read_json(path: str | os.PathLike):
    """Read a JSON file written by ``save_json``; a clear error when it is missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run the notebook or benchmark that writes it")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e.msg}); regenerate the file") from e


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically; the format comes from the suffix (png by default)."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=dpi)
    return path


def make_run_dir(name: str, root: str | os.PathLike = "runs") -> Path:
    """``runs/<name>/``, created if needed: where a notebook writes config, metrics, adapter and plots.

    ``name`` must be a plain folder name: not empty, not "." or "..", no path separator, not absolute.
    """
    if (not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name
            or Path(name).is_absolute()):
        raise ValueError(f"run name {name!r} must be a plain folder name (no '/', '\\' or '..'); e.g. 'trivia'")
    path = Path(root) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def require_keys(records: Sequence[dict], keys: Sequence[str | tuple[str, ...]], *, what: str, fix: str) -> None:
    """Refuse records that lack a key the caller reads, before any work is done.

    Shared by every trivia stage that takes records (chunking, retrieval, the index, the film
    split and the metrics).

    Args:
        records: the records, dicts.
        keys: required keys; a tuple of keys means one of them with a non-empty value (e.g.
            ``("answer_aliases", "answer")``).
        what: the calling function, for the message.
        fix: what produces valid records, for the message.

    Raises:
        TypeError: a record is not a dict.
        ValueError: naming the first incomplete record (position and id), its missing keys and ``fix``.
    """
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise TypeError(f"{what}: record {i} is a {type(r).__name__}, not a dict; {fix}")
        missing = [repr(k) if isinstance(k, str) else f"a non-empty {' or '.join(map(repr, k))}" for k in keys
                   if (k not in r if isinstance(k, str) else not any(r.get(a) for a in k))]
        if missing:
            name = f" (id {r['id']!r})" if "id" in r else ""
            raise ValueError(f"{what}: record {i}{name} is missing {', '.join(missing)}; {fix}")
