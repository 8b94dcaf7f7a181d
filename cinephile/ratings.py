"""Rating prediction: baselines, metrics and plots; reading a rating out of a causal LM.

The language-model part (``score_ratings``, ``greedy_ratings``, ``parse_rating``) lives in
cinephile.rating_llm and is re-exported here.

References:
    Koren, Bell, Volinsky 2009, "Matrix factorization techniques for recommender systems"
    (the mu + b_u + b_i baseline, fitted by alternating least squares as in Surprise's BaselineOnly).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from cinephile.data import atomic_write
from cinephile.rating_llm import (CANDIDATES, MAX_RATING, MIN_RATING, greedy_ratings,  # noqa: F401  (re-exported)
                                  parse_rating, score_ratings)

logger = logging.getLogger(__name__)


def _check_train(train: pd.DataFrame) -> pd.DataFrame:
    """Refuse empty tables, missing columns and val/test rows leaking into a fit."""
    missing = [c for c in ("userId", "movieId", "rating") if c not in train.columns]
    if missing:
        raise ValueError(f"train is missing column '{missing[0]}'; expected columns: userId, movieId, rating")
    if "split" in train.columns and (train["split"] != "train").any():
        raise ValueError("train holds val/test rows; fit on split_df[split_df['split'] == 'train'] only")
    if train.empty:
        raise ValueError("train is empty; baselines need at least one rating")
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


def rating_metrics(y_true, y_pred) -> dict:
    """RMSE, MAE, Pearson and Spearman correlation of predicted ratings.

    Args:
        y_true, y_pred: equal-length sequences of numbers (no NaN/None in y_pred).

    Returns:
        dict(rmse, mae, pearson, spearman, n); a correlation is NaN when either side is constant.
    """
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {y_true.shape} and {y_pred.shape}")
    if len(y_true) == 0:
        raise ValueError("no predictions to score: y_true is empty")
    if (n_nan := int(np.isnan(y_pred).sum())) or np.isnan(y_true).any():
        raise ValueError(f"y_pred has {n_nan} missing values (NaN/None) and y_true {int(np.isnan(y_true).sum())}; "
                         "drop the failed predictions first and report their count")
    err = y_pred - y_true
    varied = len(y_true) > 1 and np.ptp(y_true) > 0 and np.ptp(y_pred) > 0
    return dict(rmse=float(np.sqrt(np.mean(err**2))), mae=float(np.mean(np.abs(err))),
                pearson=float(stats.pearsonr(y_true, y_pred)[0]) if varied else float("nan"),
                spearman=float(stats.spearmanr(y_true, y_pred)[0]) if varied else float("nan"), n=len(y_true))


def plot_predictions(y_true, preds: dict[str, np.ndarray], path: str | Path | None = None) -> Figure:
    """Predicted vs true rating (true jittered) and the error histogram, one colour per model.

    Args:
        y_true: true ratings, shape (N,).
        preds: model name -> predictions, shape (N,); NaN/None (failed parses) are left out.
        path: save the figure there (format from the suffix), atomically.

    Returns:
        The matplotlib Figure.
    """
    y_true = np.asarray(y_true, dtype=float)
    if not preds:
        raise ValueError("preds is empty; pass {model name: predictions}")
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    scatter, hist = fig.subplots(1, 2)
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(y_true))
    for name, pred in preds.items():
        pred = np.array([np.nan if p is None else p for p in pred], dtype=float)
        if pred.shape != y_true.shape:
            raise ValueError(f"preds[{name!r}] has {len(pred)} values but y_true has {len(y_true)}")
        ok = ~np.isnan(pred)
        rmse = float(np.sqrt(np.mean((pred[ok] - y_true[ok]) ** 2))) if ok.any() else float("nan")
        scatter.scatter(y_true[ok] + jitter[ok], pred[ok], s=8, alpha=0.4, label=f"{name} (RMSE {rmse:.3f})")
        hist.hist(pred[ok] - y_true[ok], bins=np.linspace(-4.5, 4.5, 37), histtype="step", label=name)
    scatter.plot([MIN_RATING, MAX_RATING], [MIN_RATING, MAX_RATING], "k--", lw=1)
    scatter.set(xlabel="true rating (jittered)", ylabel="predicted rating", title="Predicted vs true")
    hist.set(xlabel="predicted - true", ylabel="count", title="Errors")
    scatter.legend(fontsize=8)
    hist.legend(fontsize=8)
    if path is not None:
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format=Path(path).suffix.lstrip(".") or "png", dpi=120)
    return fig
