"""Download MovieLens "latest-small" from GroupLens, checked against its published MD5, and read its CSVs.

The zip is streamed to a temporary file beside the destination, verified, extracted into a
temporary folder and moved into place with one rename, so a crash never leaves a
half-written download or a half-extracted folder.

References:
    F. M. Harper and J. A. Konstan. 2015. The MovieLens Datasets: History and Context.
    ACM TiiS 5(4). https://grouplens.org/datasets/movielens/ (README.txt holds the licence,
    which asks to keep it beside the data).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

ML_URL = "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
ML_MD5_URL = ML_URL + ".md5"  # the checksum GroupLens publishes beside the zip
ML_FOLDER = "ml-latest-small"
COLUMNS = {
    "ratings.csv": ("userId", "movieId", "rating", "timestamp"),
    "movies.csv": ("movieId", "title", "genres"),
    "tags.csv": ("userId", "movieId", "tag", "timestamp"),
}


def find_movielens_folder(data_dir: str | Path) -> Path | None:
    """The folder holding the CSVs: `data_dir` itself or `data_dir/ml-latest-small`; None if neither."""
    data_dir = Path(data_dir)
    for folder in (data_dir, data_dir / ML_FOLDER):
        if all((folder / name).is_file() for name in COLUMNS):
            return folder
    return None


def _fetch(url: str, dest, timeout: float) -> str:
    """Stream `url` into the open binary file `dest` with a progress bar; return its MD5 hex digest."""
    digest = hashlib.md5()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1]) as bar:
            while chunk := response.read(1 << 16):
                dest.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()


def _published_md5(timeout: float) -> str:
    """The checksum in ML_MD5_URL, which reads "MD5 (ml-latest-small.zip) = <hex>"."""
    with urllib.request.urlopen(ML_MD5_URL, timeout=timeout) as response:
        found = re.findall(r"\b[0-9a-fA-F]{32}\b", response.read().decode("ascii", "replace"))
    if not found:
        raise RuntimeError(f"{ML_MD5_URL} holds no MD5 checksum; pass md5=... to ensure_movielens")
    return found[-1]


def ensure_movielens(data_dir: str | Path, *, download: bool = True, md5: str | None = None,
                     timeout: float = 60.0) -> Path:
    """Return the folder holding MovieLens' CSVs, downloading and unzipping it if missing.

    Args:
        data_dir: folder holding ratings.csv/movies.csv/tags.csv, or its parent (the zip
            unpacks into `data_dir/ml-latest-small`, README.txt and licence included).
        download: fetch ML_URL when the files are missing; otherwise raise.
        md5: expected MD5 of the zip; None reads the value published at ML_MD5_URL.
        timeout: seconds to wait for the server.

    Returns:
        The folder holding the CSVs.
    """
    data_dir = Path(data_dir)
    if (found := find_movielens_folder(data_dir)) is not None:
        return found
    target = data_dir / ML_FOLDER
    hint = f"download {ML_URL} and unzip it so that {target} holds {', '.join(COLUMNS)} and README.txt"
    if target.exists():
        missing = [name for name in COLUMNS if not (target / name).is_file()]
        raise FileNotFoundError(f"{target} exists but is missing {', '.join(missing)}; remove the folder or {hint}")
    if not download:
        raise FileNotFoundError(f"No MovieLens files in {data_dir}; {hint} (or pass download=True)")
    data_dir.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(dir=data_dir, suffix=".zip.part")
    try:
        with open(fd, "wb") as f:
            try:
                expected = (md5 or _published_md5(timeout)).lower()
                got = _fetch(ML_URL, f, timeout)
            except OSError as err:  # URLError, HTTPError, timeouts, resets
                raise RuntimeError(f"Could not download MovieLens from {ML_URL} ({err}); {hint}") from err
        if got != expected:
            raise RuntimeError(f"Checksum mismatch for {ML_URL}: md5 {got}, expected {expected}; "
                               f"the download is corrupt or the file changed upstream: retry or {hint}")
        with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
            try:
                with zipfile.ZipFile(part) as zf:
                    zf.extractall(tmp)  # then one rename: a crash never leaves a half-extracted folder
            except zipfile.BadZipFile as err:
                raise RuntimeError(f"the download from {ML_URL} is not a zip archive ({err}); a proxy or "
                                   f"captive portal may have answered instead: {hint}") from None
            if find_movielens_folder(Path(tmp) / ML_FOLDER) is None:
                raise RuntimeError(f"{ML_URL} does not hold {ML_FOLDER}/ with {', '.join(COLUMNS)}; {hint}")
            os.replace(Path(tmp) / ML_FOLDER, target)
    finally:
        os.remove(part)
    logger.info("MovieLens downloaded to %s", target)
    return target


def resolve_movielens(data_dir: str | Path, *, alternatives: tuple[str | Path, ...] = (),
                      download: bool = True) -> Path:
    """The MovieLens folder to use: ``data_dir`` if it holds the data, else the first alternative
    that does (e.g. a shared copy beside the project), else a download into ``data_dir``.

    Returns:
        The folder holding ratings.csv, movies.csv and tags.csv.
    """
    for candidate in (data_dir, *alternatives):
        if (found := find_movielens_folder(candidate)) is not None:
            if Path(candidate) != Path(data_dir):
                logger.info("using MovieLens from %s", found)
            return found
    return ensure_movielens(data_dir, download=download)


def read_movielens_csv(folder: str | Path, name: str) -> pd.DataFrame:
    """Read one MovieLens CSV, indexed by line number (the header is line 1), and check its columns.

    A missing, empty, non-UTF-8 or malformed file, or a missing column, raises an error naming it and the fix.
    """
    path = Path(folder) / name
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is missing {name}; expected files: {', '.join(COLUMNS)} "
                                f"(ensure_movielens downloads them from {ML_URL})")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty (no header line '{','.join(COLUMNS[name])}'); replace it with the "
                         f"file from {ML_URL}") from None
    except UnicodeDecodeError:
        raise ValueError(_not_utf8(path)) from None
    except pd.errors.ParserError as err:
        raise ValueError(f"{path} is not a valid CSV ({err}); replace it with the file from {ML_URL}") from None
    df.index = pd.RangeIndex(2, len(df) + 2)
    return check_columns(df, name, COLUMNS[name])


def check_columns(df: pd.DataFrame, name: str, expected) -> pd.DataFrame:
    """Raise a ValueError naming the first missing column of `df`; return `df` otherwise."""
    missing = [col for col in expected if col not in df.columns]
    if missing:
        raise ValueError(f"{name} is missing column '{missing[0]}'; expected columns: {', '.join(expected)}")
    return df


def _not_utf8(path: Path) -> str:
    """Where a file stops being UTF-8, and how to fix it."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
        return f"{path} could not be read as UTF-8; save it as UTF-8"
    except UnicodeDecodeError as err:
        offset = err.start
    line = data.count(b"\n", 0, offset) + 1
    return (f"{path} is not UTF-8: byte {offset} (line {line}) is 0x{data[offset]:02x}; save it as UTF-8 "
            f"(MovieLens files are UTF-8), e.g. iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8.csv")
