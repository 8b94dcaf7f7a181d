"""Rating-prediction instructions from MovieLens: prompts built from a user's earlier ratings, recommender
predictions shown in them, and the adjustment (residual) target.

Every prompt is built only from what the user had rated before the target, so a model never sees the future.
"""

from __future__ import annotations

import logging
import numbers
from collections import Counter

import numpy as np
import pandas as pd

from cinephile.ratings.data import MAX_RATING, MIN_RATING, SPLITS
from cinephile.ratings.download import COLUMNS, check_columns

logger = logging.getLogger(__name__)


MAX_LIKED, MAX_DISLIKED, MAX_TAGS, MAX_GENRES = 5, 3, 3, 3
MAX_RECENT = 8  # recent ratings an example keeps (with their values), for prompts that show them


ADJUSTMENTS = tuple(k / 2 for k in range(-4, 5))  # -2.0 ... +2.0: answers of the residual target (as_residual)


MIN_HISTORY = 3  # a train target needs at least this many earlier ratings


GENRE_MIN_COUNT, GENRE_MARGIN = 2, 0.25  # a genre is preferred/avoided when its mean is this far from the user's


def build_prompt(liked: list[str], disliked: list[str], preferred_genres: list[str], avoided_genres: list[str],
                 title: str, year: int | None, genres: list[str], tags: list[str],
                 user_mean: float | None, item_mean: float | None, *, user_count: int | None = None,
                 item_count: int | None = None, predictions: dict[str, float] | None = None,
                 residual_to: str | None = None, recent: list[tuple[str, float]] | None = None) -> str:
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
        recent: (title, rating) of the user's latest earlier ratings, most recent first: shown with their
            values in place of the liked and disliked titles (None: liked and disliked).

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
            else f"Adjust the {residual_to} prediction.")  # the system prompt asks for 'Adjustment: +x.x'
    history = ([f"Liked: {join(liked[:MAX_LIKED], '; ')}", f"Disliked: {join(disliked[:MAX_DISLIKED], '; ')}"]
               if recent is None else
               [f"Recent ratings, newest first: {join([f'{t} {r:.1f}' for t, r in recent], '; ')}"])
    lines = [task, *history,
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
                        predictions=predictions, residual_to=residual_to,
                        recent=[tuple(x) for x in e["recent"][:e["show_recent"]]] if e.get("show_recent") else None)


def showing_recent(examples: list[dict], n: int) -> list[dict]:
    """The examples with prompts that show the ``n`` (<= MAX_RECENT) latest earlier ratings with their values in
    place of the liked and disliked titles (0: liked and disliked again); predictions and target kept.
    Rating examples only (``build_examples`` / ``with_predictions``): turn them into adjustments afterwards."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 0 <= n <= MAX_RECENT:
        raise ValueError(f"recent ratings shown must be a whole number from 0 to {MAX_RECENT}, got {n!r}")
    check_rating_examples(examples)
    for i, e in enumerate(examples):
        if "anchor" in e:
            raise ValueError(f"example {i} answers an adjustment; call showing_recent before as_residual")
        if n and "recent" not in e:
            raise ValueError(f"example {i} has no recent ratings; build the examples again with build_examples")
    return [{**e, "show_recent": n, "prompt": _render({**e, "show_recent": n}, e.get("predictions") or {})}
            for e in examples]


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
            ``baselines.recommender_predictions`` (computed from training data only).

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
                             "for every example (baselines.recommender_predictions)")
        preds = {name: float(table[key]) for name, table in predictions.items()}
        out.append({**e, "prompt": _render(e, preds), "predictions": preds})
    return out


def nearest_index(values, targets) -> np.ndarray:
    """For each target, the index of the nearest of ``values`` (the first on a tie; clipped to the range).

    The one rule for the answer a cross-entropy term trains: the response text of ``as_residual`` and
    the target of ``scoring.RatingLoss`` both come from it.
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
    is anchor + adjustment (``scoring.ADJUSTMENT_ANSWERS``). The true ``rating`` is kept.

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


def latest_per_user(user_ids, n: int) -> np.ndarray:
    """Indices (ascending) of each user's ``n`` (>= 1) last items; items are in time order within each user.

    The one rule for "each user's latest ratings": ``build_examples(pick="latest")`` picks training targets
    with it, and the validation sweeps pick training instructions with it.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"per_user must be a whole number >= 1 (items kept per user), got {n!r}")
    seen: Counter = Counter()
    keep = []
    for i in range(len(user_ids) - 1, -1, -1):  # newest first
        if seen[user_ids[i]] < n:
            seen[user_ids[i]] += 1
            keep.append(i)
    return np.array(keep[::-1], dtype=int)


def _pick_targets(split: np.ndarray, which: str, max_per_user: int | None, rng: np.random.Generator,
                  pick: str = "random") -> np.ndarray:
    """Positions (in a user's chronological ratings) of the targets to turn into examples."""
    positions = np.flatnonzero(split == which)
    if which != "train":
        return positions
    positions = positions[positions >= MIN_HISTORY]
    if max_per_user is not None and len(positions) > max_per_user:
        if pick == "latest":
            return positions[latest_per_user(np.zeros(len(positions)), max_per_user)]  # one user
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
                   dislike: float = 2.0, seed: int = 0, counts: bool = False, pick: str = "random",
                   recent: int = 0, shared_history: bool = False) -> list[dict]:
    """Turn ratings into (prompt, "Rating: x.x") examples using only each user's earlier ratings.

    "Earlier" is the (timestamp, movieId) order of temporal_split, and a prompt only shows ratings
    of the training period, the ratings every recommender is fitted on: a training target sees the
    user's earlier ratings, a val or test target all of the user's train ratings and none of the
    other val / test ratings (which a recommender has not seen either). Liked/disliked titles come
    from the last `history_size` of those; user mean and genre preferences from all of them; the
    item mean from train ratings other than the target itself; tags only from before the target's
    timestamp.

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
        recent: show the user's latest ``recent`` (<= MAX_RECENT) earlier ratings with their values in place of
            the liked and disliked titles (0: liked and disliked). Every example keeps MAX_RECENT of them
            (``recent``), so ``showing_recent`` can switch later.
        shared_history: a user's training targets all show one history, the ratings before the earliest of
            them (as the user's val / test targets all show the same training period), so their prompts begin
            alike and ``scoring.RatingLoss`` runs that beginning once per batch (train with ``group_by="user_id"``).

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
    if isinstance(recent, bool) or not isinstance(recent, numbers.Integral) or not 0 <= recent <= MAX_RECENT:
        raise ValueError(f"recent must be a whole number from 0 to {MAX_RECENT}, got {recent!r}")
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
        n_train = int((g["split"] == "train").sum())  # train ratings come first in a user's time order
        hot = onehot.loc[mids].to_numpy()  # (n, G)
        genre_n = np.vstack([np.zeros(len(genre_names)), np.cumsum(hot, 0)])  # row k: counts over ratings[:k]
        genre_sum = np.vstack([np.zeros(len(genre_names)), np.cumsum(hot * ratings[:, None], 0)])
        rating_sum = np.concatenate([[0.0], np.cumsum(ratings)])
        first = int(min(targets)) if shared_history and which == "train" else len(mids)
        for k in targets:
            mid, rating, stamp = int(mids[k]), float(ratings[k]), int(stamps[k])
            h = min(k, n_train, first)  # ratings [0, h) are the history this prompt may show
            window = range(h - 1, max(h - history_size, 0) - 1, -1)  # most recent first
            liked = [shown[int(mids[j])] for j in window if ratings[j] >= like][:MAX_LIKED]
            disliked = [shown[int(mids[j])] for j in window if ratings[j] <= dislike][:MAX_DISLIKED]
            user_mean = rating_sum[h] / h if h else None
            preferred, avoided = _genre_preferences(genre_n[h], genre_sum[h], user_mean, genre_names)
            own = g["split"].iat[k] == "train"  # the target's own rating is in the train sums
            n_item = item_n.get(mid, 0) - own
            item_mean = (item_sum.get(mid, 0.0) - own * rating) / n_item if n_item > 0 else None
            top_tags = _top_tags(*tag_index.get(mid, (np.array([]), np.array([]))), before=stamp)
            genres = list(info.at[mid, "genres"])
            latest = [[shown[int(mids[j])], float(ratings[j])] for j in window][:MAX_RECENT]
            prompt = build_prompt(liked, disliked, preferred, avoided, info.at[mid, "name"], year[mid],
                                  genres, top_tags, user_mean, item_mean,
                                  **({"user_count": int(h), "item_count": int(n_item)} if counts else {}),
                                  recent=[tuple(x) for x in latest[:recent]] if recent else None)
            examples.append(dict(
                user_id=int(user), movie_id=mid, rating=rating, timestamp=stamp, split=which,
                prompt=prompt, response=f"Rating: {rating:.1f}", n_history=int(h), liked=liked,
                disliked=disliked, preferred_genres=preferred, avoided_genres=avoided, title=shown[mid],
                name=info.at[mid, "name"], year=year[mid], show_counts=counts, recent=latest, show_recent=recent,
                genres=genres, tags=top_tags, user_mean=None if user_mean is None else round(float(user_mean), 4),
                item_mean=None if item_mean is None else round(float(item_mean), 4), item_count=int(n_item)))
    if not examples:
        raise ValueError(f"no {which!r} examples: split_df has {int((df['split'] == which).sum())} {which} ratings "
                         f"(train targets also need >= {MIN_HISTORY} earlier ratings); check temporal_split's "
                         "n_val/n_test/min_train or pass another split")
    logger.info("%d %s examples from %d users", len(examples), which, len({e["user_id"] for e in examples}))
    return examples
