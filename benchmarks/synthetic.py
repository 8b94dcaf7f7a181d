"""The synthetic batch and LoRA training step that the speed benchmarks time.

The trivia reader's step shape: ``BATCH`` rows of ``SEQ`` random token ids, the loss on the last ``LABELS``
tokens of each row (``response_loss`` computes logits only there), bf16 autocast where the CPU has native bf16.
Random ids cost what real ones do; the scripts that time a step (attention_speed, roofline, lora_layers_speed)
build it here so they time the same thing.
"""

from __future__ import annotations

import torch
from torch import nn

from cinephile import models
from cinephile.batching import collate
from cinephile.train import response_loss

BATCH, SEQ, LABELS = 8, 300, 8


def random_batch(pad_id: int, high: int, gen: torch.Generator, *, low: int = 0, batch: int = BATCH,
                 seq: int = SEQ, labels: int = LABELS) -> dict[str, torch.Tensor]:
    """A collated batch of ``batch`` rows of ``seq`` ids drawn from [low, high), labels on the last ``labels``.

    Draws each row's ids, then its labels, from ``gen``, so a script that draws more from the same generator
    afterwards (roofline's generation prompts) gets the same numbers as before.
    """
    if not 0 < labels <= seq or not 0 <= low < high:
        raise ValueError(f"need 0 < labels <= seq and 0 <= low < high; got labels={labels}, seq={seq}, "
                         f"low={low}, high={high}")
    items = [{"input_ids": torch.randint(low, high, (seq,), generator=gen).tolist(),
              "labels": [-100] * (seq - labels) + torch.randint(low, high, (labels,), generator=gen).tolist()}
             for _ in range(batch)]
    return collate(items, pad_id)


def train_step(model: nn.Module, batch: dict[str, torch.Tensor], bf16: bool,
               opt: torch.optim.Optimizer | None = None) -> float:
    """One training step in train mode: the response-only loss, backward, ``opt.step()`` (none without
    ``opt``), gradients cleared. Returns the loss."""
    model.train()
    with models.autocast(torch.device("cpu"), bf16):
        loss = response_loss(model, batch)
    loss.backward()
    if opt is not None:
        opt.step()
    model.zero_grad(set_to_none=True)
    return loss.item()
