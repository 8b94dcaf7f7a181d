"""Reading a rating out of a causal LM: scored answers, and greedy decoding plus parsing.

A language model's rating is scored, not sampled: each of the 10 candidate answers
"Rating: 0.5" ... "Rating: 5.0" gets its total log-probability after the prompt, a softmax
over the 10 gives a distribution, and its expected value is the prediction. Greedy decoding
plus parsing is kept for comparison; its parse failures are counted, never filled in.

References:
    Kang et al. 2023, "Do LLMs understand user preferences? Evaluating LLMs on user rating prediction".
"""

from __future__ import annotations

import contextlib
import logging
import math
import re

import numpy as np
import torch
from scipy.special import softmax
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

CANDIDATES = [k / 2 for k in range(1, 11)]  # 0.5, 1.0, ..., 5.0
MIN_RATING, MAX_RATING = 0.5, 5.0
_RATING = re.compile(r"rating\s*[:=]?\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


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
