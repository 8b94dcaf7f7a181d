"""A dense index over every chunk of a corpus, searched with free-form questions in the demo.

The embedding function is passed in (``EmbedFn``: list of texts -> L2-normalised rows),
so cosine similarity is a dot product; the index is saved as a ``.npy`` matrix beside a
``.json`` description (texts, sources, embedder name, dimension).

References:
    Karpukhin et al. 2020, "Dense Passage Retrieval for Open-Domain Question Answering".
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cinephile.data import atomic_write

logger = logging.getLogger(__name__)

EmbedFn = Callable[[list[str]], np.ndarray]


def _embed(embed_fn: EmbedFn, texts: list[str]) -> np.ndarray:
    emb = np.asarray(embed_fn(texts), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise ValueError(f"embed_fn returned shape {emb.shape} for {len(texts)} texts; expected ({len(texts)}, dim)")
    return emb


@dataclass
class CorpusIndex:
    """Dense index over every distinct chunk of a corpus, for free-form questions in the demo.

    The embeddings are one in-memory (N, D) float32 matrix searched by a dot product; for
    corpora larger than memory one swaps it for a FAISS index (e.g. ``IndexFlatIP`` or IVF)
    behind the same ``search``.

    Attributes:
        texts: distinct chunk texts.
        sources: ids of the records each chunk comes from.
        embeddings: (N, D) float32, L2-normalised rows.
        embedder: name of the embedding model, to refuse searching with another one.
    """

    texts: list[str]
    sources: list[list[str]]
    embeddings: np.ndarray
    embedder: str = "unknown"

    @classmethod
    def build(cls, records: Sequence[dict], embed_fn: EmbedFn, *, name: str | None = None) -> CorpusIndex:
        """Embed the distinct chunks of ``records`` (each with ``id`` and ``chunks``)."""
        sources: dict[str, list[str]] = {}
        for r in records:
            for c in r["chunks"]:
                ids = sources.setdefault(c, [])
                if str(r["id"]) not in ids:
                    ids.append(str(r["id"]))
        if not sources:
            raise ValueError("no chunks to index; run chunk_records() first")
        texts = list(sources)
        name = name or getattr(embed_fn, "name", None) or getattr(embed_fn, "__name__", "unknown")
        return cls(texts, [sources[t] for t in texts], _embed(embed_fn, texts), str(name))

    def search(self, query: str, embed_fn: EmbedFn, k: int = 3) -> list[dict]:
        """Top-k chunks for ``query``: [{"text", "score", "sources"}], best first."""
        q = _embed(embed_fn, [query])[0]
        if q.shape[0] != self.embeddings.shape[1]:
            raise ValueError(f"query embedding has dim {q.shape[0]} but the index has dim "
                             f"{self.embeddings.shape[1]}; search with the embedder it was built with "
                             f"({self.embedder})")
        scores = self.embeddings @ q  # (N,)
        top = np.argsort(-scores, kind="stable")[:k]
        return [{"text": self.texts[i], "score": float(scores[i]), "sources": self.sources[i]} for i in top]

    def save(self, path_prefix: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``<prefix>.npy`` (embeddings) and ``<prefix>.json`` (texts, sources, embedder, dim)."""
        npy, meta = Path(f"{path_prefix}.npy"), Path(f"{path_prefix}.json")
        with atomic_write(npy, "wb") as f:
            np.save(f, self.embeddings.astype(np.float32))
        with atomic_write(meta) as f:
            json.dump({"texts": self.texts, "sources": self.sources, "embedder": self.embedder,
                       "dim": int(self.embeddings.shape[1])}, f, ensure_ascii=False)
        return npy, meta

    @classmethod
    def load(cls, path_prefix: str | os.PathLike) -> CorpusIndex:
        """Read an index written by ``save`` and check that its two files agree."""
        npy, meta = Path(f"{path_prefix}.npy"), Path(f"{path_prefix}.json")
        for p in (npy, meta):
            if not p.is_file():
                raise FileNotFoundError(f"index file {p} not found; build and save the index first")
        emb = np.load(npy, allow_pickle=False)
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
            texts, sources, embedder, dim = info["texts"], info["sources"], info["embedder"], info["dim"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{meta} is not a valid index description ({e!r}); rebuild the index") from e
        if emb.ndim != 2 or emb.shape[0] != len(texts) or len(sources) != len(texts):
            raise ValueError(f"{npy} has {emb.shape[0]} rows but {meta} lists {len(texts)} texts and "
                             f"{len(sources)} sources; the files do not match, rebuild the index")
        if emb.shape[1] != dim:
            raise ValueError(f"{npy} has dim {emb.shape[1]} but {meta} says {dim}; rebuild the index")
        return cls(texts, sources, emb.astype(np.float32), embedder)
