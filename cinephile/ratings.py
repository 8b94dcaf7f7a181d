"""Rating prediction: baselines, metrics and reading a rating out of a causal LM.

A language model's rating is scored, not sampled: each of the 10 candidate answers
"Rating: 0.5" ... "Rating: 5.0" gets its total log-probability after the prompt, a softmax
over the 10 gives a distribution, and its expected value is the prediction. Greedy decoding
plus parsing is kept for comparison; its parse failures are counted, never filled in.

References:
    Koren, Bell, Volinsky 2009, "Matrix factorization techniques for recommender systems"
    (the mu + b_u + b_i baseline, fitted by alternating least squares as in Surprise's BaselineOnly).
    Kang et al. 2023, "Do LLMs understand user preferences? Evaluating LLMs on user rating prediction".
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from scipy import stats
from scipy.special import softmax
from tqdm.auto import tqdm

from cinephile.data import atomic_write

logger = logging.getLogger(__name__)

CANDIDATES = [k / 2 for k in range(1, 11)]  # 0.5, 1.0, ..., 5.0
MIN_RATING, MAX_RATING = 0.5, 5.0
_RATING = re.compile(r"rating\s*[:=]?\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


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


@contextlib.contextmanager
def _inference(model):
    """eval() + inference_mode, restoring the model's train/eval mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _encode(tokenizer, prompts: list[str]) -> tuple[list[list[int]], int]:
    """Token ids of each prompt (no special tokens, as in training) and the pad id."""
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of strings")
    ids = tokenizer(list(prompts), add_special_tokens=False).input_ids
    empty = [k for k, seq in enumerate(ids) if not seq]
    if empty:
        raise ValueError(f"prompt {empty[0]} is empty; every prompt needs at least one token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return ids, pad or 0


def _left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, T), padded on the left."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


def _batches(seqs: list[list[int]], batch_size: int) -> list[np.ndarray]:
    """Index batches of similar length (less padding)."""
    order = np.argsort([len(s) for s in seqs], kind="stable")
    return [order[k:k + batch_size] for k in range(0, len(order), batch_size)]


def _score_batch(model, ids, mask, common: list[int], suffixes: list[list[int]]) -> torch.Tensor:
    """Total log-prob of `common + suffix` after each row, for every suffix: (B, n_suffixes).

    Two forward passes: the prompts plus the shared answer prefix once, then the distinct
    suffix inputs (e.g. "4", "." serves both "4.0" and "4.5") in one batch on the KV cache,
    repeated once per distinct input (6 for "x.y" answers).
    """
    c, batch = len(common), len(ids)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T) true positions despite left padding
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=c + 1)
    logp = out.logits[:, -(c + 1):].float().log_softmax(-1)  # (B, c+1, V)
    base = logp[:, torch.arange(c), torch.tensor(common, dtype=torch.long)].sum(-1)  # (B,)
    groups: dict[tuple, list[int]] = {}  # tokens fed after the prefix -> answers continuing them
    for j, suffix in enumerate(suffixes):
        groups.setdefault(tuple(suffix[:-1]), []).append(j)
    fed = [g for g in groups if g]
    if fed:
        n, width = len(fed), max(len(g) for g in fed)
        out.past_key_values.batch_repeat_interleave(n)  # row b * n + g continues prompt b with fed[g]
        step_ids = torch.tensor([list(g) + [0] * (width - len(g)) for g in fed], device=ids.device).repeat(batch, 1)
        step_mask = torch.tensor([[1] * len(g) + [0] * (width - len(g)) for g in fed], device=ids.device)
        step = model(input_ids=step_ids, attention_mask=torch.cat([mask.repeat_interleave(n, 0),
                                                                  step_mask.repeat(batch, 1)], 1),
                     position_ids=positions[:, -1:].repeat_interleave(n, 0) + 1 + torch.arange(width, device=ids.device),
                     past_key_values=out.past_key_values, use_cache=True)
        step_logp = step.logits.float().log_softmax(-1).view(batch, n, width, -1)  # (B, n, width, V)
    scores = torch.zeros(batch, len(suffixes), device=ids.device)
    for inputs, members in groups.items():
        dist = logp[:, -1:]  # (B, 1, V) predicts the first suffix token
        if inputs:
            dist = torch.cat([dist, step_logp[:, fed.index(inputs), :len(inputs)]], 1)  # (B, len+1, V)
        for j in members:
            scores[:, j] = base + dist[:, torch.arange(dist.shape[1]), torch.tensor(suffixes[j])].sum(-1)
    return scores


def score_ratings(model, tokenizer, prompts: list[str], *, batch_size: int = 8, prefix: str = "Rating: ",
                  progress: bool = True) -> dict:
    """Score the 10 answers f"{prefix}{c:.1f}" by log-probability after each prompt.

    Args:
        model: HF causal LM (LoRA wrappers included); left in the train/eval mode it had.
        tokenizer: its tokenizer; prompt and answer are tokenised separately, without
            special tokens, and concatenated, exactly as in training.
        prompts: fully formatted prompts (chat template already applied).
        batch_size: prompts per forward pass.
        prefix: answer text before the number.
        progress: show a progress bar.

    Returns:
        dict(expected (N,), argmax (N,), probs (N, 10) softmax over CANDIDATES,
        logprobs (N, 10) total log-probabilities of the answers).
    """
    ids, pad_id = _encode(tokenizer, prompts)
    answers = [tokenizer(f"{prefix}{c:.1f}", add_special_tokens=False).input_ids for c in CANDIDATES]
    n_common = 0  # shared answer prefix, leaving every answer at least one own token
    while all(len(a) > n_common + 1 for a in answers) and len({a[n_common] for a in answers}) == 1:
        n_common += 1
    common, suffixes = answers[0][:n_common], [a[n_common:] for a in answers]
    device = next(model.parameters()).device
    logprobs = np.zeros((len(ids), len(CANDIDATES)))
    with _inference(model):
        for idx in tqdm(_batches(ids, batch_size), desc="scoring ratings", disable=not progress):
            batch, mask = _left_pad([ids[k] + common for k in idx], pad_id, device)
            logprobs[idx] = _score_batch(model, batch, mask, common, suffixes).double().cpu().numpy()
    probs = softmax(logprobs, axis=1)
    values = np.array(CANDIDATES)
    return dict(expected=probs @ values, argmax=values[probs.argmax(1)], probs=probs, logprobs=logprobs)


def parse_rating(text: str | None) -> float | None:
    """Read a rating from generated text, snapped to the nearest 0.5.

    "Rating: 3.5" -> 3.5, "rating 4" -> 4.0, "I'd say 4.5/5" -> 4.5; the number after
    "rating" wins, else the first number. Missing or outside [0.5, 5] -> None.
    """
    match = _RATING.search(text or "") or _NUMBER.search(text or "")
    if match is None:
        return None
    value = float(match.group(1) if match.re is _RATING else match.group(0))
    if not MIN_RATING <= value <= MAX_RATING:
        return None
    return math.floor(value * 2 + 0.5) / 2


def greedy_ratings(model, tokenizer, prompts: list[str], *, max_new_tokens: int = 8, batch_size: int = 8,
                   progress: bool = True) -> tuple[list[float | None], list[str], int]:
    """Generate greedily (left-padded batches) and parse a rating from each answer.

    Args:
        model, tokenizer, prompts: as in score_ratings.
        max_new_tokens: generation budget per prompt.
        batch_size: prompts per generate call.
        progress: show a progress bar.

    Returns:
        (values with None where parsing failed, generated texts, number of failures).
    """
    ids, pad_id = _encode(tokenizer, prompts)
    texts = [""] * len(ids)
    device = next(model.parameters()).device
    with _inference(model):
        for idx in tqdm(_batches(ids, batch_size), desc="generating ratings", disable=not progress):
            batch, mask = _left_pad([ids[k] for k in idx], pad_id, device)
            out = model.generate(input_ids=batch, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=pad_id)
            for row, k in enumerate(idx):
                texts[k] = tokenizer.decode(out[row, batch.shape[1]:], skip_special_tokens=True).strip()
    values = [parse_rating(t) for t in texts]
    n_failed = sum(v is None for v in values)
    if n_failed:
        logger.warning("%d of %d generated answers hold no rating in [0.5, 5]", n_failed, len(values))
    return values, texts, n_failed


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
