"""Rating prediction metrics: answers parsed from generated text, RMSE / MAE / correlations, paired bootstrap
intervals, the results table and plots.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from cinephile.io import save_figure
from cinephile.ratings.data import MAX_RATING, MIN_RATING
from cinephile.ratings.instructions import ADJUSTMENTS

_NUM = r"(?<![\d.])(?:\d+(?:\.\d+)?|\.\d+)(?!\.?\d)"  # 4, 4.5, .5 (never part of 4.5.1)
# A number-like word: sign, digits and whatever sticks to them ("4.5", "4.5.", "1e1", "4,5", "4.5.1");
# it is read only when it is a whole number or decimal (a trailing "." or "," ends a sentence).
_WORD = r"[+-]?\.?\d[\w.,]*"
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)")
_RATING = re.compile(r"\brating\s*[:=]?\s*(" + _WORD + ")", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.,+-])" + _WORD)
_ADJUSTMENT = re.compile(r"\badjustment\s*[:=]?\s*(" + _WORD + ")", re.IGNORECASE)
_DECIMAL_COMMA = re.compile(r"\d,\d")  # "4,5": 4.5 or a list of 4 and 5? ambiguous
_MINUS = str.maketrans({"\u2212": "-", "\ufe63": "-", "\uff0d": "-"})  # Unicode minus signs read as "-"
# Mentions of the scale itself, removed before looking for the rating: "out of 5", "/5", "1 to 5", "0.5-5.0".
_SCALE = re.compile(r"(?:out of|/)\s*(?:5\.0|10|5)\b|" + _NUM + r"\s*(?:to|-|–)\s*" + _NUM, re.IGNORECASE)


def _read_number(word: str) -> float | None:
    """The value of a number-like word, or None unless it is a plain number ("1e1", "4.5.2" and "4,5" are not)."""
    word = word.rstrip(".,")
    return float(word) if _DECIMAL.fullmatch(word) else None


def _snap(value: float | None, lo: float, hi: float) -> float | None:
    """``value`` rounded to the nearest 0.5 (halves up), or None when absent or outside [lo, hi]."""
    if value is None or not lo <= value <= hi:
        return None
    return math.floor(value * 2 + 0.5) / 2


def parse_rating(text: str | None) -> float | None:
    """Read a rating from generated text, snapped to the nearest 0.5; None when unsure.

    "Rating: 3.5" -> 3.5, "rating 4" -> 4.0, "Rating: .5" -> 0.5, "I'd say 4.5/5" -> 4.5,
    "on a scale of 1 to 5 I'd say 3" -> 3.0. The number after "rating" wins; otherwise the one
    number left once mentions of the scale ("1 to 5", "out of 5", "/5") are removed. A Unicode
    minus is a minus sign ("Rating: −1" is -1, off the scale). Ambiguous text ("4,5", several
    candidate numbers), numbers that do not read whole ("1e1", "4.5.2") and values outside
    [0.5, 5] give None, never a guess.
    """
    text = (text or "").translate(_MINUS)
    if _DECIMAL_COMMA.search(text):
        return None
    match = _RATING.search(text)
    if match is not None:
        return _snap(_read_number(match.group(1)), MIN_RATING, MAX_RATING)
    values = [_read_number(word) for word in _NUMBER.findall(_SCALE.sub(" ", text))]
    if None in values or len(set(values)) != 1:
        return None
    return _snap(values[0], MIN_RATING, MAX_RATING)


def parse_adjustment(text: str | None) -> float | None:
    """Read "Adjustment: +0.5" from generated text, snapped to 0.5; None when absent or outside [-2, +2].

    A Unicode minus is a minus sign ("Adjustment: −0.5" is -0.5); numbers that do not read whole
    ("1e1", "0.5.1", "0,5") give None.
    """
    text = (text or "").translate(_MINUS)
    match = _ADJUSTMENT.search(text)
    if match is None or _DECIMAL_COMMA.search(text):
        return None
    return _snap(_read_number(match.group(1)), ADJUSTMENTS[0], ADJUSTMENTS[-1])


def results_table(y_true, preds: dict[str, np.ndarray], seeds: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """One row of metrics per model on the same pairs.

    ``seeds``: model name -> (seeds, pairs) predictions of the same model fitted with other seeds; its row then
    also has the mean and standard deviation of RMSE over the seeds (``rmse_seeds_mean``, ``rmse_seeds_sd``).
    """
    rows = []
    for name, p in preds.items():
        row = {"model": name, **rating_metrics(y_true, p)}
        if seeds and name in seeds:
            by_seed = [rating_metrics(y_true, s)["rmse"] for s in seeds[name]]
            row.update(rmse_seeds_mean=float(np.mean(by_seed)), rmse_seeds_sd=float(np.std(by_seed, ddof=1))
                       if len(by_seed) > 1 else float("nan"), n_seeds=len(by_seed))
        rows.append(row)
    return pd.DataFrame(rows)


COLD, WARM, LAST = "cold movies", "warm movies", "each user's last rating"


def slices(examples: list[dict], cold_max: int = 5) -> dict[str, np.ndarray]:
    """Boolean masks over ``examples`` (in time order within each user): all pairs, movies with at most
    ``cold_max`` training ratings (a factor model knows little of them), the other movies, and each user's
    last pair."""
    count = np.array([e["item_count"] for e in examples])
    users = [e["user_id"] for e in examples]
    last = np.zeros(len(examples), dtype=bool)
    last[list({u: i for i, u in enumerate(users)}.values())] = True  # the last position seen per user
    return {"all": np.ones(len(examples), dtype=bool), f"{COLD} (<= {cold_max} training ratings)": count <= cold_max,
            f"{WARM} (> {cold_max} training ratings)": count > cold_max, LAST: last}


def paired_bootstrap(y_true, pred_a, pred_b, *, groups=None, n_boot: int = 2000, seed: int = 0) -> dict:
    """RMSE(a) - RMSE(b) on the same pairs, with a paired bootstrap 95% interval.

    Args:
        y_true, pred_a, pred_b: equal-length 1-D arrays.
        groups: optional group of each pair (e.g. its user): then whole groups are resampled, since a
            user's several test ratings are not independent of each other. None: pairs are resampled.
        n_boot: bootstrap samples.
        seed: the resampling seed.

    Returns:
        ``{"diff", "lo", "hi", "n", "n_groups"}``; a beats b only when ``hi < 0``.
    """
    y, a, b = (np.asarray(v, dtype=float) for v in (y_true, pred_a, pred_b))
    if not (y.shape == a.shape == b.shape) or y.ndim != 1 or len(y) < 2:
        raise ValueError(f"need three 1-D arrays of equal length >= 2, got {y.shape}, {a.shape}, {b.shape}")
    ea, eb = (a - y) ** 2, (b - y) ** 2
    if groups is None:
        codes = np.arange(len(y))
    else:
        groups = np.asarray(groups)
        if groups.shape != y.shape:
            raise ValueError(f"groups must give one group per pair: {groups.shape} for {y.shape} pairs")
        codes = np.unique(groups, return_inverse=True)[1]
    n_groups = int(codes.max()) + 1
    if n_groups < 2:
        raise ValueError("all pairs are in one group; a bootstrap over groups needs at least 2")
    # Per-group sums, then each bootstrap sample is a draw of groups with replacement.
    sa, sb, n = (np.bincount(codes, weights=w, minlength=n_groups) for w in (ea, eb, np.ones(len(y))))
    idx = np.random.default_rng(seed).integers(0, n_groups, (n_boot, n_groups))  # (n_boot, groups) drawn
    count = n[idx].sum(1)
    diffs = np.sqrt(sa[idx].sum(1) / count) - np.sqrt(sb[idx].sum(1) / count)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"diff": float(np.sqrt(ea.mean()) - np.sqrt(eb.mean())), "lo": float(lo), "hi": float(hi), "n": len(y),
            "n_groups": n_groups}


def interval_table(y_true, preds: dict[str, np.ndarray], model: str, against: list[str], **kwargs) -> pd.DataFrame:
    """``paired_bootstrap`` of ``model`` against each baseline in ``against``, one row each ("beats" when hi < 0)."""
    rows = []
    for other in against:
        res = paired_bootstrap(y_true, preds[model], preds[other], **kwargs)
        rows.append({"model": model, "against": other, "rmse_diff": res["diff"], "ci95_lo": res["lo"],
                     "ci95_hi": res["hi"], "n": res["n"], "n_users": res["n_groups"], "beats": res["hi"] < 0})
    return pd.DataFrame(rows)


def _records(table: pd.DataFrame) -> list[dict]:
    def clean(value):
        return None if isinstance(value, float) and np.isnan(value) else value
    return [{k: clean(v) for k, v in row.items()} for row in table.to_dict("records")]


def results_record(table: pd.DataFrame, intervals: pd.DataFrame, slices: dict | None = None, **extra) -> dict:
    """The plain-JSON record of a ratings run (``results/ratings.json``): models, intervals, the same per slice
    (``{name: (table, intervals)}``) and ``extra``."""
    out = {"models": _records(table), "intervals": _records(intervals)}
    if slices is not None:
        out["slices"] = {name: {"n": int(t["n"].max()), "models": _records(t), "intervals": _records(i)}
                         for name, (t, i) in slices.items()}
    return {**out, **extra}


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
        save_figure(fig, path)
    return fig
