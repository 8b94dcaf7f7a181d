"""The one generation path: batched greedy decoding with left padding, cut at a stop string or EOS.

Trivia answers and generated ratings both come from ``generate_answers``; prompts are tokenised
without special tokens, exactly as in training.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from cinephile.batching import left_pad, length_batches, pad_id_of


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt (no special tokens, as in training); refuses empty input."""
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of strings")
    ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    empty = [k for k, seq in enumerate(ids) if not seq]
    if empty:
        raise ValueError(f"prompt {empty[0]} is empty; every prompt needs at least one token")
    return ids


@torch.inference_mode()
def generate_answers(model, tokenizer, prompts: list[str], *, max_new_tokens: int = 16,
                     batch_size: int = 8, stop: str = "\n", progress: bool = True) -> list[str]:
    """Greedy continuation of each prompt, cut at the first ``stop`` string or EOS.

    Args:
        model: a causal LM (with or without LoRA); left in the train/eval mode it had.
        tokenizer: its tokenizer (needs a pad token: ``models.ensure_pad_token``).
        prompts: fully formatted prompts (see ``cinephile.prompts``).
        max_new_tokens: generation budget per prompt.
        batch_size: prompts per ``generate`` call (similar lengths batched together).
        stop: generation stops at this string; it is not part of the answer.
        progress: show a tqdm bar.

    Returns:
        One stripped answer per prompt, in order.
    """
    pad_id = pad_id_of(tokenizer)
    ids = encode_prompts(tokenizer, prompts)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    results: dict[int, str] = {}
    try:
        for idx in tqdm(length_batches([len(s) for s in ids], batch_size), desc="generate", disable=not progress):
            input_ids, mask = left_pad([ids[i] for i in idx], pad_id, device)
            out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=pad_id, stop_strings=[stop], tokenizer=tokenizer)
            texts = tokenizer.batch_decode(out[:, input_ids.shape[1]:], skip_special_tokens=True)
            for i, text in zip(idx, texts):
                results[i] = text.split(stop)[0].strip()
    finally:
        model.train(was_training)
    return [results[i] for i in range(len(prompts))]
