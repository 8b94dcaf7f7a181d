"""MovieLens "latest-small": load, temporal split and rating-prediction prompts.

Each user's ratings are ordered by (timestamp, movieId); the last one is the test target,
the one before it the validation target (leave-last-out, as in SASRec / BERT4Rec). Every
prompt is built only from what the user had rated before the target, so a model never
sees the future. Downloading lives in cinephile.download (``ensure_movielens`` is
re-exported here).

References:
    F. M. Harper and J. A. Konstan. 2015. The MovieLens Datasets: History and Context.
    ACM TiiS 5(4). https://grouplens.org/datasets/movielens/ (README.txt holds the licence,
    which asks to keep it beside the data).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cinephile.data import write_jsonl
from cinephile.download import (COLUMNS, ML_FOLDER, ML_URL, _locate,  # noqa: F401  (ensure_movielens is re-exported)
                                ensure_movielens)

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MAX_LIKED, MAX_DISLIKED, MAX_TAGS, MAX_GENRES = 8, 5, 3, 3
MIN_HISTORY = 3  # a train target needs at least this many earlier ratings
GENRE_MIN_COUNT, GENRE_MARGIN = 2, 0.25  # a genre is preferred/avoided when its mean is this far from the user's
_YEAR = re.compile(r"\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
_ARTICLE = re.compile(r"^(?P<base>.+?), (?P<article>The|A|An)(?P<rest> \(.*\))?$")


@dataclass
class MovieLens:
    """The three MovieLens tables, cleaned.

    ratings: userId, movieId, rating, timestamp. movies: movieId, title, genres (list of str),
    year (Int64, missing when the title has none), name (title without year, "The X" not "X, The").
    tags: userId, movieId, tag (lower-cased), timestamp.
    """

    ratings: pd.DataFrame
    movies: pd.DataFrame
    tags: pd.DataFrame


def _read_csv(folder: Path, name: str) -> pd.DataFrame:
    """Read one CSV and check that it has the expected columns."""
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is missing {name}; expected files: {', '.join(COLUMNS)} "
                                f"(ensure_movielens downloads them from {ML_URL})")
    return check_columns(pd.read_csv(path), name, COLUMNS[name])


def check_columns(df: pd.DataFrame, name: str, expected) -> pd.DataFrame:
    """Raise a ValueError naming the first missing column of `df`; return `df` otherwise."""
    missing = [col for col in expected if col not in df.columns]
    if missing:
        raise ValueError(f"{name} is missing column '{missing[0]}'; expected columns: {', '.join(expected)}")
    return df


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

    Args:
        data_dir: folder holding ratings.csv, movies.csv and tags.csv, or its parent.

    Returns:
        A MovieLens with ratings of unknown movies dropped (the count is logged).
    """
    data_dir = Path(data_dir)
    folder = _locate(data_dir) or (data_dir / ML_FOLDER if (data_dir / ML_FOLDER).is_dir() else data_dir)
    ratings, movies, tags = (_read_csv(folder, name) for name in COLUMNS)
    movies = movies[list(COLUMNS["movies.csv"])].copy()
    parsed = [parse_title(t) for t in movies["title"]]
    movies["name"] = [name for name, _ in parsed]
    movies["year"] = pd.array([year for _, year in parsed], dtype="Int64")
    movies["genres"] = [[g for g in str(s).split("|") if g and g != "(no genres listed)"] for s in movies["genres"]]
    known = ratings["movieId"].isin(movies["movieId"])
    if (~known).any():
        logger.warning("dropped %d ratings of %d movies missing from movies.csv",
                       int((~known).sum()), ratings.loc[~known, "movieId"].nunique())
    ratings = ratings.loc[known, list(COLUMNS["ratings.csv"])].reset_index(drop=True)
    tags = tags[list(COLUMNS["tags.csv"])].dropna(subset=["tag"]).copy()
    tags["tag"] = tags["tag"].astype(str).str.strip().str.lower()
    tags = tags[tags["tag"] != ""].reset_index(drop=True)
    logger.info("MovieLens: %d ratings, %d users, %d movies, %d tags",
                len(ratings), ratings["userId"].nunique(), len(movies), len(tags))
    return MovieLens(ratings=ratings, movies=movies, tags=tags)


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


def build_prompt(liked: list[str], disliked: list[str], preferred_genres: list[str], avoided_genres: list[str],
                 title: str, year: int | None, genres: list[str], tags: list[str],
                 user_mean: float | None, item_mean: float | None) -> str:
    """Format the rating-prediction instruction (pure function).

    Args:
        liked, disliked: titles the user rated high/low, most recent first (cut to 8 and 5).
        preferred_genres, avoided_genres: genres the user rates above/below their own mean.
        title, year, genres, tags: the target movie.
        user_mean, item_mean: averages shown with one decimal, "unknown" when None.

    Returns:
        The prompt, lines joined by "\\n", without leading or trailing whitespace.
    """
    def join(items, sep=", "):
        items = [str(item).strip() for item in items if str(item).strip()]
        return sep.join(items) if items else "none"

    def mean(value):
        return "unknown" if value is None else f"{value:.1f}"

    target = f"{title.strip()} ({year})" if year is not None else title.strip()
    lines = ["Predict how this user rates a movie on a 0.5-5.0 scale.",
             f"Liked: {join(liked[:MAX_LIKED], '; ')}",
             f"Disliked: {join(disliked[:MAX_DISLIKED], '; ')}",
             f"Preferred genres: {join(preferred_genres)}",
             f"Avoided genres: {join(avoided_genres)}",
             f"Target movie: {target}",
             f"Genres: {join(genres)}",
             f"Tags: {join(tags)}",
             f"User's average rating so far: {mean(user_mean)}",
             f"Movie's average rating: {mean(item_mean)}",
             "Answer with 'Rating: x.x'."]
    return "\n".join(lines).strip()


def _pick_targets(split: np.ndarray, which: str, max_per_user: int | None, rng: np.random.Generator) -> np.ndarray:
    """Positions (in a user's chronological ratings) of the targets to turn into examples."""
    positions = np.flatnonzero(split == which)
    if which != "train":
        return positions
    positions = positions[positions >= MIN_HISTORY]
    if max_per_user is not None and len(positions) > max_per_user:
        positions = np.sort(rng.choice(positions, size=max_per_user, replace=False))
    return positions


def _genre_preferences(counts: np.ndarray, sums: np.ndarray, user_mean: float | None,
                       names: list[str]) -> tuple[list[str], list[str]]:
    """Genres whose mean rating (over >= GENRE_MIN_COUNT ratings) is GENRE_MARGIN above/below the user's."""
    if user_mean is None:
        return [], []
    diff = np.where(counts >= GENRE_MIN_COUNT, sums / np.maximum(counts, 1) - user_mean, 0.0)
    order = np.argsort(-diff, kind="stable")  # strongest first
    return ([names[i] for i in order if diff[i] >= GENRE_MARGIN][:MAX_GENRES],
            [names[i] for i in order[::-1] if diff[i] <= -GENRE_MARGIN][:MAX_GENRES])


def _top_tags(stamps: np.ndarray, texts: np.ndarray, before: int) -> list[str]:
    """The MAX_TAGS most frequent tags given strictly before `before` (ties alphabetical)."""
    counts = Counter(texts[stamps < before].tolist())
    return [tag for tag, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_TAGS]]


def build_examples(split_df: pd.DataFrame, movies: pd.DataFrame, tags: pd.DataFrame, *, which: str = "train",
                   history_size: int = 20, max_per_user: int | None = 8, like: float = 4.0,
                   dislike: float = 2.0, seed: int = 0) -> list[dict]:
    """Turn ratings into (prompt, "Rating: x.x") examples using only each user's earlier ratings.

    "Earlier" is the (timestamp, movieId) order of temporal_split, so val targets see the
    train ratings and test targets also the val rating. Liked/disliked titles come from the
    last `history_size` earlier ratings; user mean and genre preferences from all of them;
    the item mean from train ratings other than the target itself; tags only from before
    the target's timestamp.

    Args:
        split_df: output of temporal_split.
        movies, tags: MovieLens.movies and MovieLens.tags.
        which: "train", "val" or "test": the split the targets come from.
        history_size: earlier ratings scanned for liked/disliked titles.
        max_per_user: train targets sampled per user (None: all); val/test take every target.
        like, dislike: a rating >= like is "liked", <= dislike is "disliked".
        seed: seed of the per-user sample of train targets.

    Returns:
        One dict per target: user_id, movie_id, rating, timestamp, split, prompt, response
        and the features in the prompt.
    """
    if which not in SPLITS:
        raise ValueError(f"which must be one of {SPLITS}, got {which!r}")
    if "split" not in split_df.columns:
        raise ValueError("split_df has no 'split' column; pass the output of temporal_split(ratings)")
    check_columns(split_df, "split_df", COLUMNS["ratings.csv"])
    check_columns(movies, "movies", ("movieId", "name", "year", "genres"))
    if not like > dislike:
        raise ValueError(f"like must be greater than dislike, got like={like}, dislike={dislike}")
    df = split_df.sort_values(["userId", "timestamp", "movieId"], kind="stable")
    info = movies.set_index("movieId")
    if (unknown := ~df["movieId"].isin(info.index)).any():
        raise ValueError(f"split_df has {int(unknown.sum())} ratings of movies missing from movies; "
                         "load both with load_movielens, which drops them")
    genre_names = sorted({g for gs in info["genres"] for g in gs})
    onehot = pd.DataFrame([[g in gs for g in genre_names] for gs in info["genres"]],
                          index=info.index, columns=genre_names, dtype=float)
    year = {int(m): (None if pd.isna(y) else int(y)) for m, y in info["year"].items()}
    shown = {m: info.at[m, "name"] if year[m] is None else f"{info.at[m, 'name']} ({year[m]})" for m in year}
    train = df[df["split"] == "train"].groupby("movieId")["rating"].agg(["sum", "size"])
    item_sum, item_n = train["sum"].to_dict(), train["size"].to_dict()
    tags = tags.sort_values("timestamp", kind="stable")
    tag_index = {int(m): (g["timestamp"].to_numpy(), g["tag"].to_numpy()) for m, g in tags.groupby("movieId")}
    examples = []
    for user, g in df.groupby("userId", sort=True):
        rng = np.random.default_rng([seed, int(user)])
        targets = _pick_targets(g["split"].to_numpy(), which, max_per_user, rng)
        if len(targets) == 0:
            continue
        mids, ratings, stamps = (g[c].to_numpy() for c in ("movieId", "rating", "timestamp"))
        hot = onehot.loc[mids].to_numpy()  # (n, G)
        genre_n = np.vstack([np.zeros(len(genre_names)), np.cumsum(hot, 0)])  # row k: counts over ratings[:k]
        genre_sum = np.vstack([np.zeros(len(genre_names)), np.cumsum(hot * ratings[:, None], 0)])
        rating_sum = np.concatenate([[0.0], np.cumsum(ratings)])
        for k in targets:
            mid, rating, stamp = int(mids[k]), float(ratings[k]), int(stamps[k])
            window = range(k - 1, max(k - history_size, 0) - 1, -1)  # most recent first
            liked = [shown[int(mids[j])] for j in window if ratings[j] >= like][:MAX_LIKED]
            disliked = [shown[int(mids[j])] for j in window if ratings[j] <= dislike][:MAX_DISLIKED]
            user_mean = rating_sum[k] / k if k else None
            preferred, avoided = _genre_preferences(genre_n[k], genre_sum[k], user_mean, genre_names)
            own = g["split"].iat[k] == "train"  # the target's own rating is in the train sums
            n_item = item_n.get(mid, 0) - own
            item_mean = (item_sum.get(mid, 0.0) - own * rating) / n_item if n_item > 0 else None
            top_tags = _top_tags(*tag_index.get(mid, (np.array([]), np.array([]))), before=stamp)
            genres = list(info.at[mid, "genres"])
            prompt = build_prompt(liked, disliked, preferred, avoided, info.at[mid, "name"], year[mid],
                                  genres, top_tags, user_mean, item_mean)
            examples.append(dict(
                user_id=int(user), movie_id=mid, rating=rating, timestamp=stamp, split=which,
                prompt=prompt, response=f"Rating: {rating:.1f}", n_history=int(k), liked=liked,
                disliked=disliked, preferred_genres=preferred, avoided_genres=avoided, title=shown[mid],
                genres=genres, tags=top_tags, user_mean=None if user_mean is None else round(float(user_mean), 4),
                item_mean=None if item_mean is None else round(float(item_mean), 4), item_count=int(n_item)))
    logger.info("%d %s examples from %d users", len(examples), which, len({e["user_id"] for e in examples}))
    return examples


def write_examples_jsonl(examples: list[dict], path: str | Path) -> Path:
    """Write examples as JSONL, atomically (cinephile.data.write_jsonl).

    Args:
        examples: JSON-serialisable dicts, e.g. from build_examples.
        path: destination .jsonl file; parent folders are created.

    Returns:
        The path written.
    """
    write_jsonl(path, examples)
    return Path(path)
