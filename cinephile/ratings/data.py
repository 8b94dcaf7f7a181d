"""MovieLens "latest-small": load, temporal split and rating-prediction prompts.

Each user's ratings are ordered by (timestamp, movieId); the last one is the test target,
the one before it the validation target (leave-last-out, as in SASRec / BERT4Rec). Every
prompt is built only from what the user had rated before the target, so a model never
sees the future. Downloading lives in cinephile.download.

References:
    F. M. Harper and J. A. Konstan. 2015. The MovieLens Datasets: History and Context.
    ACM TiiS 5(4). https://grouplens.org/datasets/movielens/ (README.txt holds the licence,
    which asks to keep it beside the data).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cinephile.ratings.download import COLUMNS, ML_FOLDER, check_columns, find_movielens_folder, read_movielens_csv

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MIN_RATING, MAX_RATING = 0.5, 5.0  # the MovieLens scale, in half stars
_YEAR = re.compile(r"\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
_ARTICLE = re.compile(r"^(?P<base>.+?), (?P<article>The|A|An)(?P<rest> \(.*\))?$")


@dataclass
class MovieLens:
    """The three MovieLens tables, cleaned.

    ratings: userId, movieId, rating, timestamp. movies: movieId, title, genres (list of str),
    year (Int64, missing when the title has none), name (title without year, "The X" not "X, The").
    tags: userId, movieId, tag (lower-cased), timestamp. report: rows read, kept and dropped per reason.
    """

    ratings: pd.DataFrame
    movies: pd.DataFrame
    tags: pd.DataFrame
    report: dict = field(default_factory=dict)


def _whole(values: pd.Series) -> np.ndarray:
    """True where a number is whole and fits int64 (NaN, inf, 2.5 and 1e30 are not)."""
    v = values.to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        return np.isfinite(v) & (np.floor(v) == v) & (np.abs(v) < 2.0**63)


def _drop(df: pd.DataFrame, bad, reason: str, dropped: dict, examples: dict) -> pd.DataFrame:
    """``df`` without the ``bad`` rows, whose count (and first few index labels) go under ``reason``."""
    bad = np.asarray(bad, dtype=bool)
    if bad.any():
        dropped[reason] = dropped.get(reason, 0) + int(bad.sum())
        examples[reason] = (examples.get(reason, []) + df.index[bad].tolist())[:5]
    return df[~bad]


def _log_dropped(source: str, rows: int, dropped: dict, examples: dict, row_name: str) -> None:
    if dropped:
        where = "; ".join(f"{reason}: {row_name} {', '.join(map(str, labels))}" for reason, labels in examples.items())
        logger.warning("%s: dropped %d of %d rows: %s (first %ss: %s)", source, sum(dropped.values()), rows,
                       dropped, row_name, where)


def clean_ratings(ratings: pd.DataFrame, known_movies: pd.Series | None = None, *, source: str = "ratings",
                  row_name: str = "row") -> tuple[pd.DataFrame, dict]:
    """Drop unusable ratings and count each reason (never silently).

    Dropped: rows with a missing or non-numeric value, ids or timestamps that are not whole numbers
    within int64 (2.5, inf, 1e30), ratings outside the 0.5-5 scale, ratings of movies not in
    ``known_movies``, and all but the latest of duplicate (userId, movieId) rows (latest timestamp,
    then the last row), so a test movie can never also sit in its own history.

    Args:
        ratings: userId, movieId, rating, timestamp (numbers or text).
        known_movies: movieIds of movies.csv; None keeps every movie.
        source, row_name: how the warning names the table and its index labels (``load_movielens``
            passes the file and indexes by CSV line).

    Returns:
        ``(ratings, report)`` with report ``{"rows", "kept", "dropped": {reason: count}}``.
    """
    check_columns(ratings, "ratings", COLUMNS["ratings.csv"])
    df = ratings[list(COLUMNS["ratings.csv"])].apply(pd.to_numeric, errors="coerce")
    if not df.index.is_unique:
        df = df.reset_index(drop=True)
    dropped, examples = {}, {}
    df = _drop(df, df.isna().any(axis=1), "not a number", dropped, examples)
    df = _drop(df, ~(_whole(df["userId"]) & _whole(df["movieId"])), "userId or movieId not a whole number",
               dropped, examples)
    df = _drop(df, ~_whole(df["timestamp"]), "timestamp not a whole number of seconds", dropped, examples)
    df = _drop(df, ~df["rating"].between(MIN_RATING, MAX_RATING), "rating outside 0.5-5", dropped, examples)
    if known_movies is not None:
        df = _drop(df, ~df["movieId"].isin(known_movies), "movie missing from movies.csv", dropped, examples)
    df = df.astype({"userId": "int64", "movieId": "int64", "timestamp": "int64"})
    dup = df.sort_values("timestamp", kind="stable").duplicated(["userId", "movieId"], keep="last")
    df = _drop(df, dup.reindex(df.index), "older duplicate of (userId, movieId)", dropped, examples)
    _log_dropped(source, len(ratings), dropped, examples, row_name)
    return df.reset_index(drop=True), {"rows": len(ratings), "kept": len(df), "dropped": dropped}


def _clean_tags(tags: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Tags lower-cased and stripped; rows with unusable ids or timestamps, or no tag text, dropped and counted."""
    df = tags[list(COLUMNS["tags.csv"])].copy()
    for col in ("userId", "movieId", "timestamp"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["tag"] = df["tag"].where(df["tag"].notna(), "").astype(str).str.strip().str.lower()
    dropped, examples = {}, {}
    df = _drop(df, ~(_whole(df["userId"]) & _whole(df["movieId"]) & _whole(df["timestamp"])),
               "userId, movieId or timestamp not a whole number", dropped, examples)
    df = _drop(df, df["tag"] == "", "empty tag", dropped, examples)
    df = df.astype({"userId": "int64", "movieId": "int64", "timestamp": "int64"})
    _log_dropped("tags.csv", len(tags), dropped, examples, "line")
    return df.reset_index(drop=True), {"rows": len(tags), "kept": len(df), "dropped": dropped}


def _clean_movies(movies: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """movieId as int64, parsed titles and genre lists; refuses bad ids, repeated ids and empty titles (by line)."""
    df = movies[list(COLUMNS["movies.csv"])].copy()
    ids = pd.to_numeric(df["movieId"], errors="coerce")
    if not (ok := _whole(ids)).all():
        line = df.index[~ok][0]
        value = str(movies.at[line, "movieId"])
        raise ValueError(f"movies.csv line {line}: movieId {value!r} is not a whole number; fix or remove that row")
    df["movieId"] = ids.astype("int64")
    if (repeated := df["movieId"].duplicated(keep=False)).any():
        movie = df.loc[repeated, "movieId"].iat[0]
        first, second = df.index[df["movieId"] == movie][:2]
        raise ValueError(f"movies.csv lists movieId {movie} twice, on lines {first} and {second}; "
                         "keep one of the two rows")
    titles = df["title"].astype("string").str.strip()
    if (empty := titles.isna() | (titles == "")).any():
        line = df.index[empty.to_numpy()][0]
        raise ValueError(f"movies.csv line {line}: movie {df.at[line, 'movieId']} has an empty title; "
                         "fill it in or remove the row")
    parsed = [parse_title(t) for t in titles]
    df["name"] = [name for name, _ in parsed]
    df["year"] = pd.array([year for _, year in parsed], dtype="Int64")
    genres = df["genres"].astype("string").fillna("")
    df["genres"] = [[g for g in s.split("|") if g and g != "(no genres listed)"] for s in genres]
    if (empty := (genres.str.strip() == "").to_numpy()).any():
        logger.warning("movies.csv: %d movies have an empty genres cell (read as no genres), first on line %s",
                       empty.sum(), df.index[empty][0])
    return df.reset_index(drop=True), {"rows": len(df), "empty genres": int(empty.sum())}


def parse_title(title: str) -> tuple[str, int | None]:
    """Split "Matrix, The (1999)" into ("The Matrix", 1999); the year is None when absent."""
    title = str(title).strip()
    match = _YEAR.search(title)
    year = int(match.group(1)) if match else None
    name = title[: match.start()] if match else title
    article = _ARTICLE.match(name)
    if article:
        name = f"{article['article']} {article['base']}{article['rest'] or ''}"
    return name.strip(), year


def load_movielens(data_dir: str | Path) -> MovieLens:
    """Load and clean the MovieLens CSVs (never downloads; see ensure_movielens).

    Ratings and tags with unusable values are dropped and counted (``clean_ratings``); a movies.csv
    with a bad or repeated movieId or an empty title is refused, naming the line.

    Args:
        data_dir: folder holding ratings.csv, movies.csv and tags.csv, or its parent.

    Returns:
        A MovieLens whose ``report`` counts the ratings dropped by ``clean_ratings`` (unknown movies,
        ratings off the 0.5-5 scale, older duplicates, unusable values) and holds ``tags`` (the same
        counts for tags.csv) and ``movies`` (rows, and movies with an empty genres cell).
    """
    data_dir = Path(data_dir)
    folder = find_movielens_folder(data_dir) or (data_dir / ML_FOLDER if (data_dir / ML_FOLDER).is_dir() else data_dir)
    ratings, movies, tags = (read_movielens_csv(folder, name) for name in COLUMNS)
    movies, movie_report = _clean_movies(movies)
    ratings, report = clean_ratings(ratings, movies["movieId"], source="ratings.csv", row_name="line")
    tags, tag_report = _clean_tags(tags)
    logger.info("MovieLens: %d ratings, %d users, %d movies, %d tags",
                len(ratings), ratings["userId"].nunique(), len(movies), len(tags))
    return MovieLens(ratings=ratings, movies=movies, tags=tags, report={**report, "tags": tag_report,
                                                                        "movies": movie_report})


def temporal_split(ratings: pd.DataFrame, *, n_test: int = 1, n_val: int = 1, min_train: int = 5) -> pd.DataFrame:
    """Leave-last-out split per user, in (timestamp, movieId) order.

    Args:
        ratings: userId, movieId, rating, timestamp.
        n_test: last ratings of each user that go to "test".
        n_val: ratings just before those that go to "val".
        min_train: users with fewer than min_train + n_val + n_test ratings go wholly to "train".

    Returns:
        A copy sorted by userId, timestamp, movieId with a "split" column.
    """
    check_columns(ratings, "ratings", COLUMNS["ratings.csv"])
    if n_test < 0 or n_val < 0 or min_train < 1:
        raise ValueError(f"need n_test >= 0, n_val >= 0 and min_train >= 1; got {n_test=}, {n_val=}, {min_train=}")
    df = ratings.sort_values(["userId", "timestamp", "movieId"], kind="stable").reset_index(drop=True)
    from_end = df.groupby("userId").cumcount(ascending=False).to_numpy()
    eligible = (df.groupby("userId")["movieId"].transform("size") >= min_train + n_val + n_test).to_numpy()
    split = np.where(from_end < n_test, "test", np.where(from_end < n_test + n_val, "val", "train"))
    df["split"] = np.where(eligible, split, "train")
    n_small = df.loc[~eligible, "userId"].nunique()
    if n_small:
        logger.info("%d users with < %d ratings kept wholly in train", n_small, min_train + n_val + n_test)
    return df


