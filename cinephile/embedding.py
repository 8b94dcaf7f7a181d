"""Text embedding for retrieval: the ``EmbedFn`` type, the sentence-transformers embedder and a cache.

An ``EmbedFn`` maps a list of texts to L2-normalised float32 rows, so cosine similarity is a dot
product. Tests pass a deterministic fake; the notebooks wrap all-MiniLM-L6-v2.

References:
    Reimers & Gurevych 2019, "Sentence-BERT".
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

logger = logging.getLogger(__name__)


EmbedFn = Callable[[list[str]], np.ndarray]


def embed_texts(embed_fn: EmbedFn, texts: list[str]) -> np.ndarray:
    """``embed_fn(texts)`` as float32 (len(texts), dim), or a ValueError naming the wrong shape."""
    emb = np.asarray(embed_fn(texts), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise ValueError(f"embed_fn returned shape {emb.shape} for {len(texts)} texts; expected ({len(texts)}, dim)")
    bad = non_finite_rows(emb)
    if bad:
        raise ValueError(f"embed_fn returned NaN or infinite values for {len(bad)} of {len(texts)} texts, first "
                         f"text {bad[0]} ({texts[bad[0]][:60]!r}); check the embedder (its dtype, empty inputs)")
    return emb


def non_finite_rows(emb: np.ndarray) -> list[int]:
    """Indices of the rows of ``emb`` holding NaN or infinity."""
    return np.flatnonzero(~np.isfinite(emb).all(axis=1)).tolist() if emb.size else []


def cached_embedder(embed_fn: EmbedFn) -> EmbedFn:
    """``embed_fn`` that encodes each distinct text once per session (settings search re-embeds the same chunks).

    Returns:
        An ``EmbedFn`` with the same ``name``; ``cache_info()`` gives ``{"texts", "calls"}``.
    """
    cache: dict[str, np.ndarray] = {}
    calls = [0]

    def embed(texts: list[str]) -> np.ndarray:
        texts = list(texts)
        new = [t for t in dict.fromkeys(texts) if t not in cache]
        if new:
            calls[0] += 1
            cache.update(zip(new, embed_texts(embed_fn, new)))
        if not texts:
            return embed_texts(embed_fn, texts)
        return np.stack([cache[t] for t in texts])

    embed.name = getattr(embed_fn, "name", getattr(embed_fn, "__name__", "unknown"))
    embed.cache_info = lambda: {"texts": len(cache), "calls": calls[0]}
    return embed


def sentence_transformer_embedder(model, *, batch_size: int = 64, show_progress: bool = False) -> EmbedFn:
    """Wrap a ``SentenceTransformer`` as an ``EmbedFn`` returning normalised float32 rows.

    Args:
        model: a loaded ``sentence_transformers.SentenceTransformer``.
        batch_size: encoding batch size.
        show_progress: show the encoder's progress bar.

    Returns:
        ``embed(texts) -> np.ndarray`` of shape (len(texts), dim); ``embed.name`` names the model.
    """
    def embed(texts: list[str]) -> np.ndarray:
        return model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                            convert_to_numpy=True, show_progress_bar=show_progress).astype(np.float32)

    tok = getattr(model, "tokenizer", None)
    embed.name = str(getattr(tok, "name_or_path", "") or type(model).__name__)
    return embed
