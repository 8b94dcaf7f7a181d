"""Batched greedy generation with left padding, stopping at a newline or EOS."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from tqdm.auto import tqdm


@contextmanager
def left_padding(tokenizer):
    """Decoder-only models continue from the last position, so batched prompts pad on the left."""
    previous = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = previous


@torch.inference_mode()
def generate_answers(model, tokenizer, prompts: list[str], *, max_new_tokens: int = 16,
                     batch_size: int = 8, stop: str = "\n", progress: bool = True) -> list[str]:
    """Greedy continuation of each prompt, cut at the first ``stop`` string or EOS.

    Args:
        model: a causal LM (with or without LoRA).
        tokenizer: its tokenizer (needs a pad token).
        prompts: fully formatted prompts (see ``cinephile.prompts``).
        max_new_tokens: generation budget per prompt.
        batch_size: prompts per ``generate`` call.
        stop: generation stops at this string; it is not part of the answer.
        progress: show a tqdm bar.

    Returns:
        One stripped answer per prompt, in order.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths per batch
    results: dict[int, str] = {}
    with left_padding(tokenizer):
        for s in tqdm(range(0, len(order), batch_size), desc="generate", disable=not progress):
            idx = order[s:s + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, stop_strings=[stop],
                                 tokenizer=tokenizer)
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            for i, text in zip(idx, texts):
                results[i] = text.split(stop)[0].strip()
    model.train(was_training)
    return [results[i] for i in range(len(prompts))]
