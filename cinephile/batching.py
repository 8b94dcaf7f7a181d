"""Tokenised examples and their batches: prompt/response tokenisation, index batches of similar length,
right padding for training and left padding for generation.

Labels are -100 on the prompt and on padding; the response ends with exactly one EOS that is a
target, so the model learns to stop even when the pad token is the EOS token (GPT-2, SmolLM2).
Training, loss evaluation, answer generation and rating scoring all group items of similar
length (less padding, the torchtune advice) through ``length_batches``; training pads on the
right (``collate``), generation on the left (``left_pad``), because a decoder continues from the
last position.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

POOL_BATCHES = 16  # when shuffling, sort by length only inside pools of this many batches
IGNORE = -100  # label of positions without a target (prompt, padding)
NUMERIC = ("rating", "anchor")  # example fields collated as float tensors (scoring.RatingLoss)


def pad_id_of(tokenizer) -> int:
    """The tokenizer's pad id, or a ValueError that says how to define one."""
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        raise ValueError("tokenizer has no pad token id; call cinephile.models.ensure_pad_token(tokenizer) "
                         "(it uses the EOS token, as GPT-2 needs)")
    return int(pad)


def length_batches(lengths: Sequence[int], batch_size: int, *, shuffle: bool = False,
                   seed: int = 0, groups: Sequence | None = None) -> list[list[int]]:
    """Group item indices into batches of similar length.

    Args:
        lengths: length of each item.
        batch_size: items per batch (the last batch may be smaller).
        shuffle: random order; items are then sorted by length only inside pools of
            ``POOL_BATCHES`` batches and the batches are shuffled, so every epoch differs.
        seed: seed of the shuffle.
        groups: a key per item: a key's items stay together in one batch (in their order; more than
            ``batch_size`` of them are cut into chunks of ``batch_size``), and whole keys fill the batches,
            e.g. users whose prompts share their history (``scoring.RatingLoss`` runs each history once).
            Keys fill the batches in order of length, so every epoch has the same batches (``shuffle``
            shuffles their order).

    Returns:
        Lists of indices; every index appears exactly once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = random.Random(seed)
    if groups is not None:
        if len(groups) != len(lengths):
            raise ValueError(f"groups has {len(groups)} keys for {len(lengths)} items; give one key per item")
        members: dict = {}
        for i, key in enumerate(groups):
            members.setdefault(key, []).append(i)
        chunks = [m[s:s + batch_size] for m in members.values() for s in range(0, len(m), batch_size)]
        chunks.sort(key=lambda c: max(lengths[i] for i in c))
        out = []
        for chunk in chunks:  # whole chunks fill the batches in turn, by length: the same batches every epoch
            if not out or len(out[-1]) + len(chunk) > batch_size:
                out.append([])
            out[-1] += chunk
        if shuffle:
            rng.shuffle(out)
        return out
    order = list(range(len(lengths)))
    if shuffle:
        rng.shuffle(order)
        pool = batch_size * POOL_BATCHES
        order = [i for s in range(0, len(order), pool) for i in sorted(order[s:s + pool], key=lambda j: lengths[j])]
    else:
        order.sort(key=lambda j: lengths[j])
    groups = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    if shuffle:
        rng.shuffle(groups)
    return groups


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both (B, T), padded on the left to the longest sequence."""
    if not seqs or any(len(s) == 0 for s in seqs):
        raise ValueError("left_pad needs a non-empty list of non-empty token sequences")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


def tokenize_example(tokenizer, prompt: str, response: str, max_len: int) -> dict:
    """``{"input_ids", "labels"}`` lists: prompt ids (label -100) + response ids + one EOS.

    Prompts longer than the budget keep their end (where the question is); the response is never cut.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no EOS token; set tokenizer.eos_token before training")
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(r) >= max_len:
        raise ValueError(f"response of {len(r)} tokens does not fit max_len={max_len}; raise max_len")
    p = p[-(max_len - len(r)):]
    return {"input_ids": p + r, "labels": [IGNORE] * len(p) + r}


def tokenize_examples(tokenizer, examples: list[dict], max_len: int, name: str = "training",
                      group_by: str | None = None) -> list[dict]:
    """``tokenize_example`` for each ``{"prompt", "response"}`` example, numeric fields (``NUMERIC``) kept, and
    with ``group_by`` that field's value as ``group`` (``length_batches(groups=...)``).

    Raises:
        ValueError: naming the ``name`` example (by index) that is not a dict with "prompt" and
            "response" strings, whose response does not fit, or that leaves no token to predict.
    """
    out = []
    for i, e in enumerate(examples):
        if not isinstance(e, dict):
            raise ValueError(f"{name} example {i} is a {type(e).__name__}, not a dict with 'prompt' and 'response'")
        for key in ("prompt", "response"):
            if key not in e:
                raise ValueError(f"{name} example {i} has no {key!r}; every example needs 'prompt' and 'response'")
            if not isinstance(e[key], str):
                raise ValueError(f"{name} example {i}: {key!r} must be a string, got {type(e[key]).__name__}")
        try:
            item = tokenize_example(tokenizer, e["prompt"], e["response"], max_len)
        except ValueError as err:
            raise ValueError(f"{name} example {i}: {err}") from None
        if all(label == IGNORE for label in item["labels"][1:]):  # position t predicts token t + 1
            raise ValueError(f"{name} example {i} has no target token: its prompt and response give no tokens, "
                             "so nothing predicts the EOS; drop the example or give it a prompt")
        if group_by is not None and group_by not in e:
            raise ValueError(f"{name} example {i} has no {group_by!r} to batch by; give every example one, or "
                             "train with group_by=None")
        out.append({**item, **{k: e[k] for k in NUMERIC if k in e},
                    **({"group": e[group_by]} if group_by is not None else {})})
    return out


def collate(batch: list[dict], pad_id: int | None) -> dict[str, torch.Tensor]:
    """Right-pad to the longest item of the batch: (B, T) input_ids, attention_mask, labels."""
    if pad_id is None:
        raise ValueError("no pad id: the tokenizer has no pad token; call "
                         "cinephile.models.ensure_pad_token(tokenizer) before training")
    if not batch:
        raise ValueError("collate needs at least one item")
    width = max(len(item["input_ids"]) for item in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, item in enumerate(batch):
        n = len(item["input_ids"])
        ids[i, :n] = torch.tensor(item["input_ids"])
        labels[i, :n] = torch.tensor(item["labels"])
        mask[i, :n] = 1
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    for key in NUMERIC:  # numeric targets travel with their examples (rating loss)
        if all(key in item for item in batch):
            out[key] = torch.tensor([float(item[key]) for item in batch])
    return out


def batches(items: list[dict], batch_size: int, pad_id: int | None, *, shuffle: bool, seed: int = 0):
    """Collated batches of similar length (``batching.length_batches``); order shuffled when ``shuffle``."""
    for group in length_batches([len(it["input_ids"]) for it in items], batch_size, shuffle=shuffle, seed=seed):
        yield collate([items[i] for i in group], pad_id)
