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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cinephile.download import COLUMNS, ML_FOLDER, check_columns, find_movielens_folder, read_movielens_csv

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MIN_RATING, MAX_RATING = 0.5, 5.0  # the MovieLens scale, in half stars
MAX_LIKED, MAX_DISLIKED, MAX_TAGS, MAX_GENRES = 5, 3, 3, 3
ADJUSTMENTS = tuple(k / 2 for k in range(-4, 5))  # -2.0 ... +2.0: answers of the residual target (as_residual)
MIN_HISTORY = 3  # a train target needs at least this many earlier ratings
GENRE_MIN_COUNT, GENRE_MARGIN = 2, 0.25  # a genre is preferred/avoided when its mean is this far from the user's
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


def build_prompt(liked: list[str], disliked: list[str], preferred_genres: list[str], avoided_genres: list[str],
                 title: str, year: int | None, genres: list[str], tags: list[str],
                 user_mean: float | None, item_mean: float | None, *, user_count: int | None = None,
                 item_count: int | None = None, predictions: dict[str, float] | None = None,
                 residual_to: str | None = None) -> str:
    """Format the rating-prediction instruction (pure function).

    Args:
        liked, disliked: titles the user rated high/low, most recent first (cut to MAX_LIKED, MAX_DISLIKED).
        preferred_genres, avoided_genres: genres the user rates above/below their own mean.
        title, year, genres, tags: the target movie.
        user_mean, item_mean: averages shown with one decimal, "unknown" when None.
        user_count, item_count: how many ratings each average rests on (shown when given).
        predictions: recommender name -> predicted rating from training data only (e.g. the
            bias model's), shown with two decimals.
        residual_to: ask for the adjustment to this recommender's prediction ("Adjustment: +x.x",
            see ``as_residual``) instead of the rating itself.

    Returns:
        The prompt, lines joined by "\\n", without leading or trailing whitespace.
    """
    def join(items, sep=", "):
        items = [str(item).strip() for item in items if str(item).strip()]
        return sep.join(items) if items else "none"

    def mean(value, count=None):
        text = "unknown" if value is None else f"{value:.1f}"
        return text if count is None else f"{text} ({count} ratings)"

    target = f"{title.strip()} ({year})" if year is not None else title.strip()
    task = ("Predict how this user rates the target movie on a 0.5-5.0 scale; answer 'Rating: x.x'." if residual_to is None
            else f"Predict how far this user's rating of the target movie lies from the {residual_to} prediction; "
                 f"answer 'Adjustment: +x.x' ({ADJUSTMENTS[0]:+.1f} to {ADJUSTMENTS[-1]:+.1f}).")
    lines = [task,
             f"Liked: {join(liked[:MAX_LIKED], '; ')}",
             f"Disliked: {join(disliked[:MAX_DISLIKED], '; ')}",
             f"Preferred genres: {join(preferred_genres)}",
             f"Avoided genres: {join(avoided_genres)}",
             f"Target movie: {target}",
             f"Genres: {join(genres)}",
             f"Tags: {join(tags)}",
             f"User's average rating so far: {mean(user_mean, user_count)}",
             f"Movie's average rating: {mean(item_mean, item_count)}"]
    if predictions:
        lines.append("Recommender predictions: " + ", ".join(f"{k} {v:.2f}" for k, v in predictions.items()))
    return "\n".join(lines).strip()


def _render(e: dict, predictions: dict[str, float], residual_to: str | None = None) -> str:
    """``build_prompt`` from an example's stored features."""
    return build_prompt(e["liked"], e["disliked"], e["preferred_genres"], e["avoided_genres"], e["name"],
                        e["year"], e["genres"], e["tags"], e["user_mean"], e["item_mean"],
                        **({"user_count": e["n_history"], "item_count": e["item_count"]} if e.get("show_counts") else {}),
                        predictions=predictions, residual_to=residual_to)


def check_rating_examples(examples: list[dict], *, anchor: bool = False) -> list[dict]:
    """Refuse rating examples that cannot be trained or scored, naming the example and the field.

    Each example needs a non-empty string ``prompt`` and ``response`` and a number ``rating`` on the
    0.5-5 scale; with ``anchor`` also a number ``anchor`` (the recommender prediction of ``as_residual``).

    Returns:
        ``examples``, unchanged. Raises TypeError for a wrong type and ValueError for a bad value.
    """
    for i, e in enumerate(examples):
        if not isinstance(e, dict):
            raise TypeError(f"example {i} is a {type(e).__name__}, not a dict; build examples with build_examples")
        for key in ("prompt", "response"):
            if not isinstance(e.get(key), str):
                raise TypeError(f"example {i}: {key} must be a string, got {e.get(key)!r}; "
                                "build examples with build_examples")
            if not e[key].strip():
                raise ValueError(f"example {i}: {key} is empty; build examples with build_examples")
        for key in ("rating", "anchor") if anchor else ("rating",):
            value = e.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"example {i}: {key} must be a number, got {value!r}")
            if not MIN_RATING <= value <= MAX_RATING:  # NaN fails too
                raise ValueError(f"example {i}: {key} {value!r} is not a rating on the 0.5-5 scale")
    return examples


def with_predictions(examples: list[dict], predictions: dict[str, dict[tuple[int, int], float]]) -> list[dict]:
    """Add recommender predictions to examples and re-render their prompts.

    Args:
        examples: output of ``build_examples``.
        predictions: name -> {(user_id, movie_id): predicted rating}, e.g. from
            ``ratings.recommender_predictions`` (computed from training data only).

    Returns:
        New examples with ``predictions`` ({name: value}) and the prompt showing them.
    """
    check_rating_examples(examples)
    out = []
    for e in examples:
        key = (e["user_id"], e["movie_id"])
        missing = [name for name, table in predictions.items() if key not in table]
        if missing:
            raise ValueError(f"no {missing} prediction for user {key[0]}, movie {key[1]}; compute predictions "
                             "for every example (ratings.recommender_predictions)")
        preds = {name: float(table[key]) for name, table in predictions.items()}
        out.append({**e, "prompt": _render(e, preds), "predictions": preds})
    return out


def nearest_index(values, targets) -> np.ndarray:
    """For each target, the index of the nearest of ``values`` (the first on a tie; clipped to the range).

    The one rule for the answer a cross-entropy term trains: the response text of ``as_residual`` and
    the target of ``rating_llm.RatingLoss`` both come from it.
    """
    targets = np.asarray(targets, dtype=float).reshape(-1, 1)
    return np.abs(np.asarray(values, dtype=float)[None, :] - targets).argmin(1)


def nearest_adjustment(residual: float) -> float:
    """The answer in ADJUSTMENTS closest to ``residual`` (clipped to the range): the cross-entropy target."""
    return ADJUSTMENTS[int(nearest_index(ADJUSTMENTS, [residual])[0])]


def as_residual(examples: list[dict], to: str = "SVD++") -> list[dict]:
    """Turn rating examples into adjustments to a recommender's prediction (the residual target).

    The prompt (which shows the prediction) asks for "Adjustment: +x.x"; the response is the step of
    ADJUSTMENTS nearest to rating - prediction; ``anchor`` holds the prediction, so the model's rating
    is anchor + adjustment (``rating_llm.ADJUSTMENT_ANSWERS``). The true ``rating`` is kept.

    Args:
        examples: output of ``with_predictions`` whose predictions include ``to``.
        to: the recommender the adjustment starts from.
    """
    check_rating_examples(examples)
    out = []
    for e in examples:
        preds = e.get("predictions") or {}
        if to not in preds:
            raise ValueError(f"example of user {e['user_id']}, movie {e['movie_id']} has no {to!r} prediction "
                             f"(it has {sorted(preds)}); add it with with_predictions first")
        anchor = preds[to]
        out.append({**e, "prompt": _render(e, preds, residual_to=to), "anchor": anchor,
                    "response": f"Adjustment: {nearest_adjustment(e['rating'] - anchor):+.1f}"})
    return out


def _pick_targets(split: np.ndarray, which: str, max_per_user: int | None, rng: np.random.Generator,
                  pick: str = "random") -> np.ndarray:
    """Positions (in a user's chronological ratings) of the targets to turn into examples."""
    positions = np.flatnonzero(split == which)
    if which != "train":
        return positions
    positions = positions[positions >= MIN_HISTORY]
    if max_per_user is not None and len(positions) > max_per_user:
        if pick == "latest":
            return positions[len(positions) - max_per_user:]
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
                   dislike: float = 2.0, seed: int = 0, counts: bool = False, pick: str = "random") -> list[dict]:
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
        max_per_user: train targets per user (None: all); val/test take every target.
        pick: which train targets when a user has more than ``max_per_user``: "random" (seeded
            sample over the history) or "latest" (the user's most recent train ratings, the
            situation of the val/test targets, which are each user's latest ratings).
        like, dislike: a rating >= like is "liked", <= dislike is "disliked".
        seed: seed of the per-user sample of train targets.
        counts: also show how many ratings the user and movie averages rest on.

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
    if pick not in ("random", "latest"):
        raise ValueError(f"pick must be 'random' or 'latest', got {pick!r}")
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
        targets = _pick_targets(g["split"].to_numpy(), which, max_per_user, rng, pick)
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
                                  genres, top_tags, user_mean, item_mean,
                                  **({"user_count": int(k), "item_count": int(n_item)} if counts else {}))
            examples.append(dict(
                user_id=int(user), movie_id=mid, rating=rating, timestamp=stamp, split=which,
                prompt=prompt, response=f"Rating: {rating:.1f}", n_history=int(k), liked=liked,
                disliked=disliked, preferred_genres=preferred, avoided_genres=avoided, title=shown[mid],
                name=info.at[mid, "name"], year=year[mid], show_counts=counts,
                genres=genres, tags=top_tags, user_mean=None if user_mean is None else round(float(user_mean), 4),
                item_mean=None if item_mean is None else round(float(item_mean), 4), item_count=int(n_item)))
    if not examples:
        raise ValueError(f"no {which!r} examples: split_df has {int((df['split'] == which).sum())} {which} ratings "
                         f"(train targets also need >= {MIN_HISTORY} earlier ratings); check temporal_split's "
                         "n_val/n_test/min_train or pass another split")
    logger.info("%d %s examples from %d users", len(examples), which, len({e["user_id"] for e in examples}))
    return examples
