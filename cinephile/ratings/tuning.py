"""The classic recommenders of the ratings table, the factor models at their best: settings chosen on validation
from a small grid, then fitted with several seeds, so a table can show how far one seed's RMSE moves from the next.

Everything is fitted on training ratings only; the grid is scored on the validation pairs (each user's ratings
just before the test ones), never on the test pairs.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cinephile.ratings import baselines
from cinephile.ratings.evaluate import rating_metrics, results_table

logger = logging.getLogger(__name__)


def grid(**axes) -> list[dict]:
    """Every combination of the axes' values: ``grid(n_factors=[50, 100], reg_all=[0.02])`` -> 2 settings."""
    names = list(axes)
    return [dict(zip(names, values)) for values in itertools.product(*(axes[n] for n in names))]


# Small grids around surprise's defaults (SVD: 100 factors, 20 epochs, lr 0.005, reg 0.02; SVD++: 20 factors),
# toward the stronger regularisation that a sparse 100k-rating set tends to want. An SVD fit takes about a
# second on ml-latest-small, an SVD++ fit about 40 s (50 factors: 90 s), so SVD++ varies its regularisation only.
GRIDS = {"SVD": grid(n_factors=[50, 150], n_epochs=[20, 40], reg_all=[0.02, 0.05, 0.1]),
         "SVD++": grid(n_factors=[20], n_epochs=[20], reg_all=[0.02, 0.05, 0.1])}


@dataclass
class Tuned:
    """One factor model: its grid on validation, the chosen settings and its seeds' predictions."""
    name: str
    params: dict  # the chosen settings
    grid: list[dict] = field(default_factory=list)  # {"params", "val_rmse", "fit_s"} per setting tried
    preds: np.ndarray | None = None  # (seeds, pairs) predictions on the target pairs
    seeds: tuple[int, ...] = ()

    def rmse_by_seed(self, y_true) -> np.ndarray:
        return np.array([rating_metrics(y_true, p)["rmse"] for p in self.preds])


def tune(name: str, train: pd.DataFrame, val: pd.DataFrame, settings: list[dict], *, seed: int = 0,
         progress: bool = True, n_jobs: int | None = None) -> tuple[dict, list[dict]]:
    """Fit ``name`` on ``train`` once per setting (side by side, ``baselines.fit_many``) and keep the one with
    the lowest RMSE on ``val``.

    Returns:
        ``(best settings, [{"params", "val_rmse", "fit_s"}, ...])``.
    """
    if not settings:
        raise ValueError(f"no settings to try for {name}; pass a non-empty grid (tuning.grid)")
    if val.empty:
        raise ValueError("no validation ratings to choose settings on; split with n_val >= 1 (data.temporal_split)")
    fits = baselines.fit_many([(name, train, val, seed, params) for params in settings], n_jobs=n_jobs,
                              desc=f"{name} grid on validation", progress=progress)
    rows = [{"params": params, "val_rmse": rating_metrics(val["rating"], pred)["rmse"], "fit_s": seconds}
            for params, (pred, seconds) in zip(settings, fits)]
    best = min(rows, key=lambda r: r["val_rmse"])
    logger.info("%s: best of %d settings on validation %s (RMSE %.4f)", name, len(rows), best["params"],
                best["val_rmse"])
    return best["params"], rows


def fit_seeds(name: str, train: pd.DataFrame, target: pd.DataFrame, params: dict, seeds: tuple[int, ...], *,
              progress: bool = True, n_jobs: int | None = None) -> np.ndarray:
    """Predictions on ``target`` of ``name`` fitted on ``train`` with each seed: shape (len(seeds), len(target))."""
    fits = baselines.fit_many([(name, train, target, s, params) for s in seeds], n_jobs=n_jobs,
                              desc=f"{name} seeds", progress=progress)
    return np.stack([pred for pred, _ in fits])


def tuned_models(train: pd.DataFrame, val: pd.DataFrame, target: pd.DataFrame, names: tuple[str, ...], *,
                 seeds: int = 5, grids: dict[str, list[dict]] | None = None, progress: bool = True) -> dict[str, Tuned]:
    """Each factor model in ``names`` tuned on ``val`` (``GRIDS`` or ``grids``), then fitted with ``seeds`` seeds.

    A model without a grid keeps surprise's defaults. Seed 0 comes first: it is the fit the other tables use.
    """
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    grids = GRIDS if grids is None else grids
    out = {}
    for name in names:
        params, rows = tune(name, train, val, grids[name], progress=progress) if grids.get(name) else ({}, [])
        out[name] = Tuned(name, params, rows, fit_seeds(name, train, target, params, tuple(range(seeds)),
                                                        progress=progress), tuple(range(seeds)))
    return out


@dataclass
class Baselines:
    """The classic recommenders, fitted on the training ratings, with their predictions on every test pair."""
    test: pd.DataFrame  # the test ratings predicted: userId, movieId, rating
    preds: dict[str, np.ndarray]  # name -> predictions on ``test`` (factor models: their seed-0 fit)
    tuned: dict[str, Tuned]  # factor models: the grid on validation, the settings, every seed's predictions

    @property
    def params(self) -> dict[str, dict]:
        """The settings chosen on validation, per surprise model name (for the prompts' predictions)."""
        return {name: t.params for name, t in self.tuned.items()}

    def _positions(self, examples: list[dict]) -> np.ndarray:
        pos = pd.Series(np.arange(len(self.test)), index=pd.MultiIndex.from_frame(self.test[["userId", "movieId"]]))
        return pos.loc[[(e["user_id"], e["movie_id"]) for e in examples]].to_numpy()

    def on(self, examples: list[dict]) -> dict[str, np.ndarray]:
        """Every baseline's predictions on the pairs of ``examples``, in their order."""
        idx = self._positions(examples)
        return {name: p[idx] for name, p in self.preds.items()}

    def table(self) -> pd.DataFrame:
        """Every baseline on every test pair (factor models: seed 0, and RMSE over the seeds)."""
        seeds = {baseline_name(name, t): t.preds for name, t in self.tuned.items()}
        return results_table(self.test["rating"].to_numpy(), self.preds, seeds)

    def grids(self) -> pd.DataFrame:
        """The settings tried on validation, one row each, the chosen ones marked."""
        return pd.DataFrame([{"model": name, **row["params"], "val_rmse": row["val_rmse"], "fit_s": row["fit_s"],
                              "chosen": row["params"] == t.params} for name, t in self.tuned.items() for row in t.grid])

    def seeds_on(self, examples: list[dict]) -> dict[str, np.ndarray]:
        """Each factor model's (seeds, pairs) predictions on the pairs of ``examples``."""
        idx = self._positions(examples)
        return {baseline_name(name, t): t.preds[:, idx] for name, t in self.tuned.items()}


def baseline_name(name: str, tuned: Tuned | None = None) -> str:
    """A surprise model's row name: "SVD++ (surprise)", with ", tuned" once settings were chosen on validation."""
    return f"{name} (surprise{', tuned' if tuned is not None and tuned.grid else ''})"


def fit_baselines(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame, surprise: tuple[str, ...], *,
                  seeds: int = 5, tune: bool = True, progress: bool = True) -> Baselines:
    """The classic recommenders fitted on ``train``, predicting every pair of ``test``.

    The factor models among ``surprise`` (those in ``GRIDS``: SVD, SVD++) get their settings from a small grid
    scored on ``val`` (``tune=False`` keeps surprise's defaults) and are fitted with ``seeds`` seeds; the other
    surprise models (KNNBaseline) are fitted once.
    """
    test = test[["userId", "movieId", "rating"]].reset_index(drop=True)
    preds = {"global mean": baselines.global_mean(train, test), "user mean": baselines.user_mean(train, test),
             "item mean": baselines.item_mean(train, test),
             "user + item bias": baselines.BiasBaseline().fit(train).predict(test)}
    factor = tuple(n for n in surprise if n in GRIDS)
    for name in surprise:
        if name not in factor:
            preds[baseline_name(name)] = baselines.surprise_predict(name, train, test)
    tuned = tuned_models(train, val, test, factor, seeds=seeds, grids=None if tune else {}, progress=progress)
    for name, t in tuned.items():
        preds[baseline_name(name, t)] = t.preds[0]
    return Baselines(test, preds, tuned)
