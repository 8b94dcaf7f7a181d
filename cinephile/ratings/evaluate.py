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


def results_table(y_true, preds: dict[str, np.ndarray], baselines: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row of metrics per model on the same pairs, with ``rmse_all_test`` from ``baselines`` where known."""
    table = pd.DataFrame([{"model": name, **rating_metrics(y_true, p)} for name, p in preds.items()])
    if baselines is not None:
        table = table.merge(baselines[["model", "rmse_all_test"]], on="model", how="left")
    return table


def paired_bootstrap(y_true, pred_a, pred_b, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """RMSE(a) - RMSE(b) on the same pairs, with a paired bootstrap 95% interval.

    Returns:
        ``{"diff", "lo", "hi", "n"}``; a beats b only when ``hi < 0``.
    """
    y, a, b = (np.asarray(v, dtype=float) for v in (y_true, pred_a, pred_b))
    if not (y.shape == a.shape == b.shape) or y.ndim != 1 or len(y) < 2:
        raise ValueError(f"need three 1-D arrays of equal length >= 2, got {y.shape}, {a.shape}, {b.shape}")
    ea, eb = (a - y) ** 2, (b - y) ** 2
    idx = np.random.default_rng(seed).integers(0, len(y), (n_boot, len(y)))  # (n_boot, n) resampled pairs
    diffs = np.sqrt(ea[idx].mean(1)) - np.sqrt(eb[idx].mean(1))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"diff": float(np.sqrt(ea.mean()) - np.sqrt(eb.mean())), "lo": float(lo), "hi": float(hi), "n": len(y)}


def interval_table(y_true, preds: dict[str, np.ndarray], model: str, against: list[str], **kwargs) -> pd.DataFrame:
    """``paired_bootstrap`` of ``model`` against each baseline in ``against``, one row each ("beats" when hi < 0)."""
    rows = []
    for other in against:
        res = paired_bootstrap(y_true, preds[model], preds[other], **kwargs)
        rows.append({"model": model, "against": other, "rmse_diff": res["diff"], "ci95_lo": res["lo"],
                     "ci95_hi": res["hi"], "n": res["n"], "beats": res["hi"] < 0})
    return pd.DataFrame(rows)


def results_record(table: pd.DataFrame, intervals: pd.DataFrame, **extra) -> dict:
    """The plain-JSON record of a ratings run (``results/ratings.json``): models, intervals and ``extra``."""
    def clean(value):
        return None if isinstance(value, float) and np.isnan(value) else value
    models = [{k: clean(v) for k, v in row.items()} for row in table.to_dict("records")]
    return {"models": models, "intervals": intervals.to_dict("records"), **extra}


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
