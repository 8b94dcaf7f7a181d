"""Rating prediction by classic recommenders: means, the regularised user + item bias model, scikit-surprise's
models (settings chosen on validation in cinephile.ratings.tuning) and the out-of-fold predictions the prompts show.

Reading a rating out of a language model (``score_ratings``, ``greedy_ratings``) lives in
cinephile.ratings.scoring, parsing generated answers (``parse_rating``) in cinephile.ratings.evaluate.

References:
    Koren, Bell, Volinsky 2009, "Matrix factorization techniques for recommender systems"
    (the mu + b_u + b_i baseline, fitted by alternating least squares as in Surprise's BaselineOnly).
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from cinephile.ratings.data import MAX_RATING, MIN_RATING

logger = logging.getLogger(__name__)


def _check_train(train: pd.DataFrame) -> pd.DataFrame:
    """Refuse empty tables, missing columns, missing ids or ratings, and val/test rows leaking into a fit."""
    missing = [c for c in ("userId", "movieId", "rating") if c not in train.columns]
    if missing:
        raise ValueError(f"train is missing column '{missing[0]}'; expected columns: userId, movieId, rating")
    if "split" in train.columns and (train["split"] != "train").any():
        raise ValueError("train holds val/test rows; fit on split_df[split_df['split'] == 'train'] only")
    if train.empty:
        raise ValueError("train is empty; baselines need at least one rating")
    rating = pd.to_numeric(train["rating"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(rating) | train["userId"].isna().to_numpy() | train["movieId"].isna().to_numpy()
    if bad.any():
        first = train.iloc[int(np.flatnonzero(bad)[0])]
        raise ValueError(f"train has {int(bad.sum())} rows with a missing id or a rating that is not a finite number, "
                         f"first {first[['userId', 'movieId', 'rating']].to_dict()} (index {first.name!r}); drop them "
                         "first (data.clean_ratings drops and counts them)")
    return train


def global_mean(train: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
    """Predict the mean train rating for every row of `target`.

    Args:
        train: train ratings (userId, movieId, rating).
        target: rows to predict (any split).

    Returns:
        Predictions, shape (len(target),).
    """
    return np.full(len(target), _check_train(train)["rating"].mean())


def _group_mean(train: pd.DataFrame, target: pd.DataFrame, key: str) -> np.ndarray:
    means = _check_train(train).groupby(key)["rating"].mean()
    return target[key].map(means).fillna(train["rating"].mean()).to_numpy(dtype=float)


def user_mean(train: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
    """Predict each user's mean train rating (the global mean for users absent from train).

    Args / Returns: as in global_mean.
    """
    return _group_mean(train, target, "userId")


def item_mean(train: pd.DataFrame, target: pd.DataFrame) -> np.ndarray:
    """Predict each movie's mean train rating (the global mean for movies absent from train).

    Args / Returns: as in global_mean.
    """
    return _group_mean(train, target, "movieId")


class BiasBaseline:
    """mu + b_u + b_i with L2-regularised biases, fitted by alternating least squares.

    Args:
        reg_user, reg_item: L2 weights (Surprise's BaselineOnly defaults).
        n_epochs: ALS sweeps (each solves the items, then the users, in closed form).
    """

    def __init__(self, reg_user: float = 15.0, reg_item: float = 10.0, n_epochs: int = 10):
        self.reg_user, self.reg_item, self.n_epochs = reg_user, reg_item, n_epochs
        self.mu: float | None = None

    def fit(self, train: pd.DataFrame) -> BiasBaseline:
        """Fit on train ratings (userId, movieId, rating); returns self."""
        _check_train(train)
        u, self.users = pd.factorize(train["userId"])
        i, self.items = pd.factorize(train["movieId"])
        r = train["rating"].to_numpy(dtype=float)
        self.mu = float(r.mean())
        n_u, n_i = np.bincount(u), np.bincount(i)
        self.b_u, self.b_i = np.zeros(len(self.users)), np.zeros(len(self.items))
        for _ in range(self.n_epochs):
            self.b_i = np.bincount(i, r - self.mu - self.b_u[u], len(self.items)) / (self.reg_item + n_i)
            self.b_u = np.bincount(u, r - self.mu - self.b_i[i], len(self.users)) / (self.reg_user + n_u)
        return self

    def predict(self, target: pd.DataFrame) -> np.ndarray:
        """Predict ratings for `target` (unknown users/items get a zero bias), clipped to [0.5, 5]."""
        if self.mu is None:
            raise RuntimeError("BiasBaseline is not fitted; call fit(train) first")
        u, i = self.users.get_indexer(target["userId"]), self.items.get_indexer(target["movieId"])
        b_u = np.where(u >= 0, self.b_u[u], 0.0)
        b_i = np.where(i >= 0, self.b_i[i], 0.0)
        return np.clip(self.mu + b_u + b_i, MIN_RATING, MAX_RATING)


SURPRISE_MODELS = ("BaselineOnly", "KNNBaseline", "SVD", "SVD++")  # scikit-surprise models surprise_predict fits


def surprise_model(name: str, seed: int = 0, **params):
    """A fresh scikit-surprise model by name, with ``params`` over its defaults (imported lazily: optional)."""
    try:
        from surprise import SVD, BaselineOnly, KNNBaseline, SVDpp
    except ModuleNotFoundError:
        raise ModuleNotFoundError("the SVD / SVD++ baselines need scikit-surprise: "
                                  "pip install scikit-surprise==1.1.5") from None
    bsl = {"method": "als", "reg_u": 15, "reg_i": 10, "n_epochs": 10}
    build = {"BaselineOnly": lambda: BaselineOnly(bsl_options=bsl, verbose=False, **params),
             # item-based k-NN on baseline-corrected ratings (Koren 2010), shrunk Pearson similarities
             "KNNBaseline": lambda: KNNBaseline(sim_options={"name": "pearson_baseline", "user_based": False},
                                                bsl_options=bsl, verbose=False, **params),
             "SVD": lambda: SVD(random_state=seed, **params),
             "SVD++": lambda: SVDpp(random_state=seed, cache_ratings=True, **params)}
    if name not in build:
        raise ValueError(f"unknown surprise model {name!r}; choose one of {sorted(build)}")
    return build[name]()


def surprise_predict(name: str, train: pd.DataFrame, target: pd.DataFrame, *, seed: int = 0,
                     params: dict | None = None) -> np.ndarray:
    """Fit scikit-surprise's ``name`` (one of SURPRISE_MODELS) on ``train``; predict ``target``.

    Same split, same pairs as every other model here; surprise clips predictions to [0.5, 5].
    ``seed`` is the factor models' initialisation; ``params`` their settings (None: surprise's defaults).
    """
    from surprise import Dataset, Reader

    algo = surprise_model(name, seed, **(params or {}))
    _check_train(train)
    data = Dataset.load_from_df(train[["userId", "movieId", "rating"]], Reader(rating_scale=(MIN_RATING, MAX_RATING)))
    algo.fit(data.build_full_trainset())
    return np.array([algo.predict(u, m).est for u, m in zip(target["userId"], target["movieId"])], dtype=float)


def _fit_predict(name: str, train: pd.DataFrame, target: pd.DataFrame, seed: int = 0,
                 params: dict | None = None) -> tuple[np.ndarray, float]:
    """One fit of ``name`` ("bias" or a surprise model) on ``train``: its predictions on ``target`` and seconds."""
    t0 = time.perf_counter()
    pred = (BiasBaseline().fit(train).predict(target) if name == "bias"
            else surprise_predict(name, train, target, seed=seed, params=params))
    return pred, time.perf_counter() - t0


def fit_many(tasks: list[tuple], *, n_jobs: int | None = None, desc: str = "fits",
             progress: bool = False) -> list[tuple[np.ndarray, float]]:
    """``(name, train, target, seed, params)`` fits, side by side on the machine's cores (a surprise fit uses one),
    in the order given: ``[(predictions, seconds), ...]``. ``n_jobs=1`` runs them in this process."""
    n_jobs = min(len(tasks), n_jobs or os.cpu_count() or 1)
    if n_jobs <= 1:
        return [_fit_predict(*t) for t in tqdm(tasks, desc=desc, disable=not progress)]
    results = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(_fit_predict)(*t) for t in tasks)
    return list(tqdm(results, total=len(tasks), desc=desc, disable=not progress))


def recommender_predictions(train: pd.DataFrame, pairs: dict[str, list[tuple[int, int]]], *,
                            models: tuple[str, ...] = ("bias",), folds: int = 5, seed: int = 0,
                            params: dict[str, dict] | None = None,
                            n_jobs: int | None = None) -> dict[str, dict[tuple[int, int], float]]:
    """Predictions a recommender makes from training data only, to show in the LLM's prompt.

    Pairs of the "train" split are predicted out of fold: the model is refitted without those
    ratings, ``folds`` times (``folds=1``: one fit without all of them, e.g. when they are each
    user's latest train ratings), so a training prompt never shows a prediction that saw its own
    answer. Pairs of the other splits come from one fit on all of ``train``.

    Args:
        train: train ratings (userId, movieId, rating).
        pairs: split name -> [(user_id, movie_id)] to predict.
        models: "bias" (our BiasBaseline) and/or surprise names ("SVD", "SVD++", "BaselineOnly").
        folds: refits for the training pairs (>= 1).
        seed: fold assignment.
        params: model name -> its settings (e.g. those ``tuning.tune`` chose on validation).
        n_jobs: fits side by side (None: one per core; ``fit_many``).

    Returns:
        model name -> {(user_id, movie_id): prediction}.
    """
    if folds < 1:
        raise ValueError(f"folds must be >= 1, got {folds}")
    if unknown := [name for name in models if name not in ("bias", *SURPRISE_MODELS)]:
        raise ValueError(f"unknown recommender {unknown[0]!r}; choose from {['bias', *SURPRISE_MODELS]}")
    rated = set(zip(_check_train(train)["userId"], train["movieId"]))
    if absent := [p for p in pairs.get("train", []) if tuple(p) not in rated]:
        raise ValueError(f"training pair (user {absent[0][0]}, movie {absent[0][1]}) is not a rating in train "
                         f"({len(absent)} such pairs): training pairs are predicted out of fold, by a fit without "
                         "their own rating; list pairs that are not train ratings under another split (e.g. 'test')")

    jobs = []  # (name, fit on, target): every fit first, then run side by side
    others = [p for split, split_pairs in pairs.items() if split != "train" for p in split_pairs]
    if others:
        target = pd.DataFrame(others, columns=["userId", "movieId"]).drop_duplicates()
        jobs += [(name, train, target) for name in models]
    if pairs.get("train"):
        target = pd.DataFrame(pairs["train"], columns=["userId", "movieId"]).drop_duplicates()
        keyed = train.set_index(["userId", "movieId"])
        fold = np.random.default_rng(seed).integers(0, folds, len(target))
        for f in range(folds):
            held = target[fold == f]
            if len(held):
                fit_on = keyed.drop(index=list(map(tuple, held.to_numpy()))).reset_index()
                jobs += [(name, fit_on, held) for name in models]
    out: dict[str, dict[tuple[int, int], float]] = {name: {} for name in models}
    done = fit_many([(name, fit_on, target, 0, (params or {}).get(name)) for name, fit_on, target in jobs],
                    n_jobs=n_jobs)
    for (name, _, target), (values, _) in zip(jobs, done):
        out[name].update(zip(map(tuple, target.to_numpy().tolist()), values))
    return out


