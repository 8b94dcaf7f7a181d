"""The one generation path: batched greedy decoding with left padding, cut at a stop string or EOS.

Trivia answers and generated ratings both come from ``generate_answers``; prompts are tokenised
without special tokens, exactly as in training.
"""

from __future__ import annotations

import contextlib
import functools
import logging

import torch
from tqdm.auto import tqdm

from cinephile.batching import left_pad, length_batches, pad_id_of
from cinephile.models import autocast, inference, position_window

logger = logging.getLogger(__name__)


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt (no special tokens, as in training); refuses empty input."""
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of strings")
    ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    empty = [k for k, seq in enumerate(ids) if not seq]
    if empty:
        raise ValueError(f"prompt {empty[0]} is empty; every prompt needs at least one token")
    return ids


def fit_window(ids: list[list[int]], window: int | None, max_new_tokens: int) -> list[list[int]]:
    """Cut each prompt to its last ``window - max_new_tokens`` tokens, so prompt and answer fit the model.

    A prompt ends with the question and the answer cue, so its start (the far end of a long context)
    is what goes; a warning counts the prompts cut. ``window`` None (no declared limit) cuts nothing.
    """
    if window is None:
        return ids
    room = window - max_new_tokens
    if room < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's {window} "
                         "positions; lower max_new_tokens")
    cut = sum(len(seq) > room for seq in ids)
    if cut:
        logger.warning("%d of %d prompts are longer than %d tokens (the model's %d positions minus "
                       "max_new_tokens=%d); their start is cut, keeping the question and answer cue at the end",
                       cut, len(ids), room, window, max_new_tokens)
    return [seq[-room:] for seq in ids]


def span_sources(tokenizer, context: str, extra: tuple[str, ...] = ("yes", "no")) -> list[list[int]]:
    """Token sequences an answer may be copied from: the context (as written, and with every line break
    read as a space, so a line's first word also has its mid-sentence form) and each ``extra`` answer."""
    texts = [" " + context.strip(), " " + " ".join(context.split())] + [" " + e for e in extra] + list(extra)
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


@functools.lru_cache(maxsize=4)
def _digit_tokens(tokenizer) -> frozenset[int]:
    """Ids of tokens made of digits only (with an optional leading space): numbers need not be copied."""
    return frozenset(i for t, i in tokenizer.get_vocab().items()
                     if tokenizer.convert_tokens_to_string([t]).strip().isdigit())


def span_constraint(tokenizer, sources: list[list[list[int]]], prompt_len: int, stop: str = "\n"):
    """``prefix_allowed_tokens_fn`` for ``generate``: each answer is a contiguous span of its sources or a number.

    After the generated tokens ``g`` the allowed next tokens are those that follow an occurrence of
    ``g`` in one of the prompt's sources; a number (digit tokens only) may be any digits; once an
    answer has a token the stop string and EOS end it.

    Args:
        sources: per prompt of the batch, the token sequences of ``span_sources``.
        prompt_len: length of the (left-padded) prompt block; generated tokens follow it.
    """
    digits = _digit_tokens(tokenizer)
    enders = set(tokenizer(stop, add_special_tokens=False)["input_ids"]) | {tokenizer.eos_token_id}
    # a chat-style answer starts without the space its first word has mid-sentence: " Bonnie" -> "Bonnie"
    bare: dict[int, int] = {}
    for t in {t for seqs in sources for seq in seqs for t in seq}:
        word = tokenizer.decode([t])
        if word.startswith(" ") and len(ids := tokenizer(word[1:], add_special_tokens=False)["input_ids"]) == 1:
            bare[ids[0]] = t

    def allowed(batch_id: int, input_ids: torch.Tensor) -> list[int]:
        gen = input_ids[prompt_len:].tolist()
        if gen:
            gen[0] = bare.get(gen[0], gen[0])
        else:  # first token: any source token, in either form
            firsts = {t for seq in sources[batch_id] for t in seq}
            return sorted(firsts | {b for b, t in bare.items() if t in firsts} | digits)
        nxt = set()
        for seq in sources[batch_id]:
            for i in range(len(seq) - len(gen)):
                if seq[i:i + len(gen)] == gen:
                    nxt.add(seq[i + len(gen)])
        if all(t in digits for t in gen):
            nxt |= digits
        return sorted(nxt | enders)
    return allowed


@contextlib.contextmanager
def contiguous_head_input(model):
    """Hand the LM head a contiguous input while ``generate`` runs (the hook is removed afterwards).

    At the prompt step ``generate`` keeps only the last position, a strided view of the hidden states;
    ``F.linear`` then falls back to ``matmul``, which expands the (vocab x hidden) head weight over the
    batch and, in bf16, copies it: 8 x 151,936 x 896 values for Qwen2.5-0.5B at every call, most of the
    generation time on a bf16 base. Copying the (batch x 1 x hidden) input instead costs nothing.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        yield
        return
    handle = head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]))
    try:
        yield
    finally:
        handle.remove()


def generate_answers(model, tokenizer, prompts: list[str], *, max_new_tokens: int = 16,
                     batch_size: int = 8, stop: str = "\n", progress: bool = True,
                     contexts: list[str] | None = None, bf16: bool | None = False) -> list[str]:
    """Greedy continuation of each prompt, cut at the first ``stop`` string or EOS.

    Args:
        model: a causal LM (with or without LoRA); left in the train/eval mode it had.
        tokenizer: its tokenizer (needs a pad token: ``models.ensure_pad_token``).
        prompts: fully formatted prompts (see ``cinephile.prompts``); a prompt longer than the model's
            positions minus ``max_new_tokens`` keeps its end (``fit_window``, with a warning).
        max_new_tokens: generation budget per prompt.
        batch_size: prompts per ``generate`` call (similar lengths batched together).
        stop: generation stops at this string; it is not part of the answer.
        progress: show a tqdm bar.
        contexts: one context per prompt to constrain decoding to its spans (``span_constraint``;
            plus "yes", "no" and numbers); None decodes freely.
        bf16: autocast as ``models.autocast`` (False: fp32; True: bf16, fast on CPUs with native bf16).

    Returns:
        One stripped answer per prompt, in order.
    """
    pad_id = pad_id_of(tokenizer)
    ids = fit_window(encode_prompts(tokenizer, prompts), position_window(model), max_new_tokens)
    if contexts is not None and len(contexts) != len(prompts):
        raise ValueError(f"got {len(contexts)} contexts for {len(prompts)} prompts; pass one context per prompt")
    device = next(model.parameters()).device
    results: dict[int, str] = {}
    with inference(model), contiguous_head_input(model):
        for idx in tqdm(length_batches([len(s) for s in ids], batch_size), desc="generate", disable=not progress):
            input_ids, mask = left_pad([ids[i] for i in idx], pad_id, device)
            constraint = None if contexts is None else span_constraint(
                tokenizer, [span_sources(tokenizer, contexts[i]) for i in idx], input_ids.shape[1], stop)
            with autocast(device, bf16):
                out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                     do_sample=False, pad_token_id=pad_id, stop_strings=[stop], tokenizer=tokenizer,
                                     prefix_allowed_tokens_fn=constraint)
            texts = tokenizer.batch_decode(out[:, input_ids.shape[1]:], skip_special_tokens=True)
            for i, text in zip(idx, texts):
                results[i] = text.split(stop)[0].strip()
    return [results[i] for i in range(len(prompts))]
