"""Greedy replies kept on disk, so a reading already done is not done again.

An untuned model's greedy reply depends only on its weights, its numerics and the prompt. A second
seed or another training recipe over the same contexts has the off-the-shelf reader (and the
keep-read filter) read the same prompts again: on two AVX2 cores that is about 20 minutes of the
1.5B model per evaluation at six chunks. ``ReplyCache`` keeps one model's replies in one JSONL file
per (model, weight dtype, autocast) under a directory, keyed by the SHA-256 of the reply budget and
the prompt; the file is rewritten as one unit after each batch of new replies.

Only models a name pins are cached (the bundled SmolLM2 and Gemma 3 and ``models.PART_MODELS``,
whose joined files are checked by SHA-256): a hub id or a local folder can hold other weights under
the same name. Replies are reused across machines: a CPU with native bf16 and one without may
differ in a rare greedy step, as two batchings of the same prompts may.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from cinephile.io import read_jsonl, write_jsonl
from cinephile.models import GEMMA3_ALIASES, SMOLLM2_ALIASES, part_model, short_name

logger = logging.getLogger(__name__)


def pinned(model_name: str) -> bool:
    """True when ``model_name`` always means the same weights (a bundled or part model)."""
    return model_name in SMOLLM2_ALIASES or model_name in GEMMA3_ALIASES or part_model(model_name) is not None


def prompt_key(prompt: str, max_new_tokens: int) -> str:
    return hashlib.sha256(f"{max_new_tokens}\n{prompt}".encode()).hexdigest()


class ReplyCache:
    """One model's stored replies: ``replies(prompts, generate, max_new_tokens)`` generates only the missing ones.

    Args:
        directory: where the cache files live (created on the first write).
        model_name: a pinned model name (``pinned``); others are refused.
        weights: the dtype of the model's weights while it generates.
        bf16: whether generation ran under bf16 autocast.
    """

    def __init__(self, directory: str | Path, model_name: str, *, weights: torch.dtype, bf16: bool | None):
        if not pinned(model_name):
            raise ValueError(f"{model_name!r} does not pin its weights (a hub id or a local folder), so its replies "
                             "cannot be cached by name; pass no cache directory for it")
        dtype = str(weights).removeprefix("torch.")
        self.path = Path(directory) / f"{short_name(model_name)}-{dtype}{'-bf16-autocast' if bf16 else ''}.jsonl"
        try:
            rows = read_jsonl(self.path, ("key", "reply")) if self.path.is_file() else []
        except ValueError as err:
            raise ValueError(f"{err}; delete {self.path} to generate its replies again") from None
        self.stored = {r["key"]: r["reply"] for r in rows}

    def replies(self, prompts: Sequence[str], generate: Callable[[list[str]], list[str]],
                max_new_tokens: int) -> list[str]:
        """The reply to each prompt: stored ones read back, the others from ``generate(missing prompts)``
        (which must use ``max_new_tokens``) and stored."""
        keys = [prompt_key(p, max_new_tokens) for p in prompts]
        missing = list(dict.fromkeys(k for k in keys if k not in self.stored))
        logger.info("%s: %d of %d replies stored, %d to generate", self.path.name, len(keys) - len(missing),
                    len(keys), len(missing))
        if missing:
            first = {k: p for k, p in zip(keys, prompts)}
            new = generate([first[k] for k in missing])
            if len(new) != len(missing):
                raise ValueError(f"generate returned {len(new)} replies for {len(missing)} prompts")
            self.stored.update(zip(missing, new))
            write_jsonl(self.path, ({"key": k, "reply": r} for k, r in self.stored.items()))
        return [self.stored[k] for k in keys]


def open_cache(directory: str | Path | None, model_name: str, *, weights: torch.dtype,
               bf16: bool | None) -> ReplyCache | None:
    """``ReplyCache`` for a pinned model; None when ``directory`` is None or the model is not pinned (logged)."""
    if directory is None:
        return None
    if not pinned(model_name):
        logger.warning("replies of %r are not cached: the name does not pin its weights", model_name)
        return None
    return ReplyCache(directory, model_name, weights=weights, bf16=bf16)


def cached(cache: ReplyCache | None, prompts: Sequence[str], generate: Callable[[list[str]], list[str]],
           max_new_tokens: int) -> list[str]:
    """``cache.replies`` or, without a cache, ``generate(prompts)``."""
    return list(generate(list(prompts))) if cache is None else cache.replies(prompts, generate, max_new_tokens)
