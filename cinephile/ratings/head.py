"""A regression head for the rating model: the adjustment read from the last hidden state, not from answer tokens.

The text model scores the answers "Adjustment: -2.0" ... "Adjustment: +2.0" after the prompt and takes the
expected value of the softmax over them (``scoring``): a prediction built from 9 answer classes. Here a linear
layer on the final hidden state at the prompt's last token predicts the adjustment to the anchor (the
recommender's prediction) as one number, trained on its squared error with the adapters
(``train(..., loss_fn=HeadLoss(head))``). It starts at zero, so the untrained model predicts the anchor.
Kang et al. 2023 (arXiv 2305.06474) found a regression-style output better than answer classes.

The head is a measured variant (``sweeps.VARIANTS``): the text-answer model stays the one exported for
llama.cpp / Ollama, which only generate tokens.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cinephile.batching import IGNORE, collate, length_batches, pad_id_of
from cinephile.generate import encode_prompts, fit_window
from cinephile.models import autocast, inference, position_window
from cinephile.ratings.data import MAX_RATING, MIN_RATING
from cinephile.ratings.instructions import check_rating_examples


class RatingHead(nn.Module):
    """``Linear(hidden, 1)`` in fp32 (outside autocast), zero at the start."""

    def __init__(self, hidden: int):
        super().__init__()
        self.linear = nn.Linear(hidden, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, hidden) -> (B,) adjustments."""
        with torch.autocast(hidden.device.type, enabled=False):
            return self.linear(hidden.float()).squeeze(-1)


def last_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """The backbone's final hidden state (after its last norm, before the LM head) at position ``last`` of each row."""
    backbone = getattr(model, model.base_model_prefix)  # model.model (Llama), model.transformer (GPT-2)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask)[0]  # (B, T, C)
    return hidden[torch.arange(len(last), device=hidden.device), last]


class HeadLoss:
    """Squared error of anchor + head(last prompt hidden state) against the rating, for ``cinephile.train.train``.

    The batch's labels mark where the answer starts; the prompt's last token is the one before it (causal
    attention: the answer tokens after it change nothing). Examples need "rating" and "anchor"
    (``instructions.as_residual``); ``check_examples`` refuses others before training starts.
    """

    def __init__(self, head: RatingHead):
        self.head = head

    def trainable_modules(self) -> list[nn.Module]:
        return [self.head]

    def check_examples(self, examples: list[dict]) -> list[dict]:
        return check_rating_examples(examples, anchor=True)

    def __call__(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        if "rating" not in batch or "anchor" not in batch:
            raise ValueError("HeadLoss needs examples with a 'rating' and an 'anchor' (MovieLens examples from "
                             "instructions.as_residual)")
        last = (batch["labels"] != IGNORE).int().argmax(1) - 1  # the prompt's last token
        pred = batch["anchor"].float() + self.head(last_hidden(model, batch["input_ids"], batch["attention_mask"], last))
        return ((pred - batch["rating"].float()) ** 2).mean(), len(last)


def head_ratings(model, head: RatingHead, tokenizer, prompts: list[str], anchors, *, batch_size: int = 8,
                 bf16: bool | None = False, progress: bool = True) -> np.ndarray:
    """anchor + head adjustment after each prompt (chat template applied), clipped to [0.5, 5]: (N,) ratings."""
    if len(anchors) != len(prompts):
        raise ValueError(f"{len(anchors)} anchors for {len(prompts)} prompts; pass one anchor (the recommender's "
                         "prediction) per prompt: [e['anchor'] for e in examples]")
    ids = fit_window(encode_prompts(tokenizer, prompts), position_window(model), 0)
    pad_id, device = pad_id_of(tokenizer), next(model.parameters()).device
    out = np.zeros(len(ids))
    with inference(model):
        for idx in tqdm(length_batches([len(x) for x in ids], batch_size), desc="head ratings", disable=not progress):
            batch = collate([{"input_ids": ids[k], "labels": ids[k]} for k in idx], pad_id)  # right-padded
            mask = batch["attention_mask"].to(device)
            with autocast(device, bf16):
                out[idx] = head(last_hidden(model, batch["input_ids"].to(device), mask, mask.sum(1) - 1)
                                ).double().cpu().numpy()
    return np.clip(np.asarray(anchors, dtype=float) + out, MIN_RATING, MAX_RATING)
