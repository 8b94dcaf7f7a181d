"""Reading a rating out of a causal LM: scored answers, and greedy decoding plus parsing.

A language model's rating is scored, not sampled: each of the 10 candidate answers
"Rating: 0.5" ... "Rating: 5.0" gets its total log-probability after the prompt, a softmax
over the 10 gives a distribution, and its expected value is the prediction. With the residual
target (``instructions.as_residual``) the answers are "Adjustment: -2.0" ... "Adjustment: +2.0" and the
prediction is the recommender's rating (the example's ``anchor``) plus the expected adjustment.
Greedy decoding plus parsing (``evaluate.parse_rating`` / ``parse_adjustment``) is kept for comparison; its
parse failures are counted, never filled in. ``answer_format(residual_to)`` picks the answers, their system
prompt and their loss (``RatingLoss``) once for a run.

References:
    Kang et al. 2023, "Do LLMs understand user preferences? Evaluating LLMs on user rating prediction".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import softmax
from tqdm.auto import tqdm

from cinephile.batching import length_batches, pad_id_of
from cinephile.generate import encode_prompts, fit_window, generate_answers
from cinephile.models import autocast, inference, position_window
from cinephile.ratings.data import MAX_RATING, MIN_RATING
from cinephile.ratings.branches import score_prompts, shared_prefixes
from cinephile.ratings.evaluate import parse_adjustment, parse_rating
from cinephile.ratings.instructions import ADJUSTMENTS, check_rating_examples, nearest_index

logger = logging.getLogger(__name__)

RATING_SYSTEM = "You predict movie ratings. Reply only with 'Rating: x.x'."
RESIDUAL_SYSTEM = ("You adjust a recommender's movie rating prediction for this user. "
                   "Reply only with 'Adjustment: +x.x'.")

CANDIDATES = [k / 2 for k in range(1, 11)]  # 0.5, 1.0, ..., 5.0


@dataclass(frozen=True)
class Answers:
    """The answer format: answers f"{prefix}{value:.1f}" (signed when ``residual``), parser, system prompt, loss.

    ``residual`` answers are adjustments: the predicted rating is the example's anchor (a
    recommender's prediction) plus the value, clipped to the rating scale. Pick one with ``answer_format``.
    """
    prefix: str = "Rating: "
    values: tuple[float, ...] = tuple(CANDIDATES)
    residual: bool = False
    system: str = RATING_SYSTEM  # the system prompt that asks for this format
    expected: str = "rating in [0.5, 5]"  # what a generated answer must hold, for messages

    def text(self, value: float) -> str:
        return f"{self.prefix}{value:+.1f}" if self.residual else f"{self.prefix}{value:.1f}"

    def parse(self, text: str | None) -> float | None:
        """The answer's value read from a generated text (``parse_adjustment`` or ``parse_rating``), or None."""
        return parse_adjustment(text) if self.residual else parse_rating(text)

    def anchors(self, examples: list[dict]) -> list[float] | None:
        """What the ratings start from: each example's ``anchor`` for adjustments, None for ratings."""
        return [e.get("anchor") for e in examples] if self.residual else None

    def loss(self, tokenizer, lam: float = 0.1) -> RatingLoss:
        """The loss that trains this format: ``RatingLoss`` (squared error of the expected rating + lam x CE)."""
        return RatingLoss(tokenizer, lam=lam, answers=self)

    def check_anchors(self, n: int, anchors) -> None:
        """Adjustment answers need one anchor per prompt; a ValueError that says how to pass them otherwise."""
        if self.residual and (anchors is None or len(anchors) != n):
            raise ValueError("adjustment answers need one anchor (the recommender's prediction) per prompt; pass "
                             "anchors=[e['anchor'] for e in examples] (examples from instructions.as_residual)")

    def ratings(self, values, anchors=None) -> np.ndarray:
        """Ratings from answer values: themselves, or ``anchors`` + values clipped to [0.5, 5]."""
        values = np.asarray(values, dtype=float)
        if not self.residual:
            return values
        self.check_anchors(len(values), anchors)
        return np.clip(np.asarray(anchors, dtype=float) + values, MIN_RATING, MAX_RATING)


RATING_ANSWERS = Answers()
ADJUSTMENT_ANSWERS = Answers("Adjustment: ", ADJUSTMENTS, residual=True, system=RESIDUAL_SYSTEM,
                             expected="adjustment in [-2, +2]")


def answer_format(residual_to: str | None) -> Answers:
    """The answers for a target: adjustments to the ``residual_to`` recommender's prediction, or the rating (None)."""
    return ADJUSTMENT_ANSWERS if residual_to else RATING_ANSWERS


def answer_token_ids(tokenizer, answers: Answers = RATING_ANSWERS) -> tuple[list[int], list[list[int]]]:
    """Token ids of the answers: the shared prefix and each answer's own suffix.

    The shared part stops one token early so that every answer keeps at least one token of its own.
    """
    answers = [tokenizer(answers.text(v), add_special_tokens=False).input_ids for v in answers.values]
    n_common = 0
    while all(len(a) > n_common + 1 for a in answers) and len({a[n_common] for a in answers}) == 1:
        n_common += 1
    return answers[0][:n_common], [a[n_common:] for a in answers]


class RatingLoss:
    """Train the number that is scored: squared error of the expected rating, plus lambda x cross-entropy.

    For each example the answers ("Rating: 0.5" ... "Rating: 5.0", or the adjustments of
    ``ADJUSTMENT_ANSWERS``) get their log-probabilities after the prompt (``branches.score_batch``,
    differentiable); the expected rating of the softmax over them, as ``score_ratings`` computes it
    (for adjustments: anchor + expected adjustment), is compared with the true rating. ``lam`` adds
    the cross-entropy of the true answer (per answer token; for adjustments the one nearest the
    residual), which keeps the model answering in the format greedy decoding and llama.cpp rely on.

    Call: ``loss_fn(model, batch) -> (mean loss, n examples)`` for ``cinephile.train.train``; the
    batch needs "rating" (and "anchor" for adjustments; examples carry them) and its labels mark
    where the answer starts. ``check_examples`` refuses unusable examples before training starts.
    """

    def __init__(self, tokenizer, lam: float = 0.1, answers: Answers = RATING_ANSWERS, min_shared: int | None = 64):
        self.min_shared = min_shared  # rows beginning with this many equal tokens run them once (shared_prefixes)
        self.common, self.suffixes = answer_token_ids(tokenizer, answers)
        self.pad_id, self.lam, self.residual = pad_id_of(tokenizer), lam, answers.residual
        self.values = torch.tensor(answers.values)
        self.lengths = torch.tensor([len(self.common) + len(s) for s in self.suffixes], dtype=torch.float)

    def check_examples(self, examples: list[dict]) -> list[dict]:
        """Refuse examples this loss cannot train on (``instructions.check_rating_examples``), naming index and field."""
        return check_rating_examples(examples, anchor=self.residual)

    def __call__(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        if "rating" not in batch:
            raise ValueError("RatingLoss needs examples with a 'rating' (MovieLens examples from build_examples)")
        if self.residual and "anchor" not in batch:
            raise ValueError("RatingLoss with adjustment answers needs examples with an 'anchor' "
                             "(MovieLens examples from instructions.as_residual)")
        for key in ("rating", "anchor") if self.residual else ("rating",):
            if not (finite := torch.isfinite(batch[key])).all():
                rows = (~finite).nonzero().flatten().tolist()
                raise ValueError(f"batch rows {rows} hold a NaN or infinite {key}; check the examples with "
                                 "RatingLoss.check_examples before training")
        starts = (batch["labels"] != -100).int().argmax(1)  # first answer token of each row
        prompts = [row[:s].tolist() for row, s in zip(batch["input_ids"], starts)]
        groups, rest = shared_prefixes(prompts, len(prompts), self.min_shared)
        logp = score_prompts(model, prompts, groups, rest, self.common, self.suffixes, self.pad_id,
                             batch["input_ids"].device)  # (B, n answers) log P(answer | prompt)
        values = self.values.to(logp)
        rating = batch["rating"].double()
        anchor = batch["anchor"].double() if self.residual else torch.zeros_like(rating)
        expected = anchor.to(logp) + logp.softmax(-1) @ values  # (B,)
        # the answer nearest the truth, in float64 as the response text was chosen
        target = torch.as_tensor(nearest_index(self.values, (rating - anchor).cpu()), device=logp.device)
        ce = -logp.gather(1, target[:, None])[:, 0] / self.lengths.to(logp)[target]
        mse = (expected - rating.to(logp)) ** 2
        return (mse + self.lam * ce).mean(), len(starts)


def score_ratings(model, tokenizer, prompts: list[str], *, batch_size: int = 8, answers: Answers = RATING_ANSWERS,
                  anchors=None, progress: bool = True, bf16: bool | None = False, min_shared: int | None = 64) -> dict:
    """Score the answers (by default "Rating: 0.5" ... "Rating: 5.0") by log-probability after each prompt.

    Args:
        model: HF causal LM (LoRA wrappers included); left in the train/eval mode it had.
        tokenizer: its tokenizer; prompt and answer are tokenised separately, without
            special tokens, and concatenated, exactly as in training.
        prompts: fully formatted prompts (chat template already applied).
        batch_size: prompts per forward pass.
        answers: the candidate answers (``ADJUSTMENT_ANSWERS`` for the residual target).
        anchors: for adjustment answers, the recommender prediction of each prompt.
        progress: show a progress bar.
        bf16: autocast as ``models.autocast`` (False: fp32; True: bf16, fast on CPUs with native bf16).
        min_shared: prompts that begin with at least this many equal tokens (a user's test pairs share their
            whole history) run that prefix once, its KV cache shared by up to ``batch_size`` of them
            (``shared_prefixes``), several groups per forward pass while they hold no more tokens than a batch
            of whole prompts; None: every prompt runs whole. The scores are the same either way.

    Returns:
        dict(expected (N,) and argmax (N,) ratings, probs (N, n answers) softmax over the answers,
        logprobs (N, n answers) total log-probabilities of the answers).
    """
    ids, pad_id = encode_prompts(tokenizer, prompts), pad_id_of(tokenizer)
    answers.check_anchors(len(ids), anchors)  # before any work
    common, suffixes = answer_token_ids(tokenizer, answers)
    ids = fit_window(ids, position_window(model), len(common) + max(len(s) for s in suffixes))
    device = next(model.parameters()).device
    logprobs = np.zeros((len(ids), len(answers.values)))
    groups, rest = shared_prefixes(ids, batch_size, min_shared)
    packs, cost, budget = [], 0, batch_size * max(map(len, ids))  # a pack runs no more tokens than a whole batch
    for shared, idx in groups:
        tokens = shared + sum(len(ids[k]) - shared for k in idx)
        if not packs or cost + tokens > budget:
            packs.append(([], []))
            cost = 0
        packs[-1][0].append((shared, idx))
        cost += tokens
    packs += [([], [rest[k] for k in b]) for b in length_batches([len(ids[k]) for k in rest], batch_size)]
    with inference(model):
        for pack, whole in tqdm(packs, desc="scoring ratings", disable=not progress):
            members = [k for _, idx in pack for k in idx] + whole  # groups sharing their prefixes, or a batch run whole
            local = {k: j for j, k in enumerate(members)}
            with autocast(device, bf16):
                logprobs[members] = score_prompts(
                    model, [ids[k] for k in members], [(shared, [local[k] for k in idx]) for shared, idx in pack],
                    [local[k] for k in whole], common, suffixes, pad_id, device).double().cpu().numpy()
    probs = softmax(logprobs, axis=1)
    values = np.array(answers.values)
    return dict(expected=answers.ratings(probs @ values, anchors), argmax=answers.ratings(values[probs.argmax(1)], anchors),
                probs=probs, logprobs=logprobs)


def greedy_ratings(model, tokenizer, prompts: list[str], *, max_new_tokens: int = 8, batch_size: int = 8,
                   answers: Answers = RATING_ANSWERS, anchors=None, progress: bool = True,
                   bf16: bool | None = False) -> tuple[list[float | None], list[str], int]:
    """Generate greedily (``generate.generate_answers``) and parse a rating from each answer.

    Args:
        model, tokenizer, prompts, answers, anchors: as in score_ratings (adjustment answers are
            parsed with ``parse_adjustment`` and added to their anchor).
        max_new_tokens: generation budget per prompt.
        batch_size: prompts per generate call.
        progress: show a progress bar.
        bf16: autocast of the generation (as in ``score_ratings``).

    Returns:
        (ratings with None where parsing failed, generated texts, number of failures).
    """
    answers.check_anchors(len(prompts), anchors)  # before any work
    texts = generate_answers(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                             progress=progress, bf16=bf16)
    values = [answers.parse(t) for t in texts]
    ratings = answers.ratings([0.0 if v is None else v for v in values], anchors)  # parse failures stay None
    values = [None if v is None else float(r) for v, r in zip(values, ratings)]
    n_failed = sum(v is None for v in values)
    if n_failed:
        logger.warning("%d of %d generated answers hold no %s", n_failed, len(values), answers.expected)
    return values, texts, n_failed
