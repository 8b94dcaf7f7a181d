"""The one batching helper: index batches of similar length, and left padding for generation.

Training, loss evaluation, answer generation and rating scoring all group items of similar
length (less padding, the torchtune advice) through ``length_batches``; training pads on the
right (``cinephile.train.collate``), generation on the left (``left_pad``), because a decoder
continues from the last position.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

POOL_BATCHES = 16  # when shuffling, sort by length only inside pools of this many batches


def pad_id_of(tokenizer) -> int:
    """The tokenizer's pad id, or a ValueError that says how to define one."""
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        raise ValueError("tokenizer has no pad token id; call cinephile.models.ensure_pad_token(tokenizer) "
                         "(it uses the EOS token, as GPT-2 needs)")
    return int(pad)


def length_batches(lengths: Sequence[int], batch_size: int, *, shuffle: bool = False,
                   seed: int = 0) -> list[list[int]]:
    """Group item indices into batches of similar length.

    Args:
        lengths: length of each item.
        batch_size: items per batch (the last batch may be smaller).
        shuffle: random order; items are then sorted by length only inside pools of
            ``POOL_BATCHES`` batches and the batches are shuffled, so every epoch differs.
        seed: seed of the shuffle.

    Returns:
        Lists of indices; every index appears exactly once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = list(range(len(lengths)))
    rng = random.Random(seed)
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
