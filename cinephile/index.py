"""A dense index over every chunk of a corpus, searched with free-form questions in the demo.

The embedding function is passed in (``EmbedFn``: list of texts -> L2-normalised rows),
so cosine similarity is a dot product; the index is saved as a ``.npy`` matrix beside a
``.json`` description (texts, sources, embedder name, dimension and the SHA-256 of the matrix,
which ties the two files together). ``answer`` is the demo: retrieve, then generate.

References:
    Karpukhin et al. 2020, "Dense Passage Retrieval for Open-Domain Question Answering".
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cinephile.io import atomic_write

logger = logging.getLogger(__name__)

EmbedFn = Callable[[list[str]], np.ndarray]


def embed_texts(embed_fn: EmbedFn, texts: list[str]) -> np.ndarray:
    """``embed_fn(texts)`` as float32 (len(texts), dim), or a ValueError naming the wrong shape."""
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
        return cls(texts, [sources[t] for t in texts], embed_texts(embed_fn, texts), str(name))

    def search(self, query: str, embed_fn: EmbedFn, k: int = 3) -> list[dict]:
        """Top-k chunks for ``query``: [{"text", "score", "sources"}], best first."""
        q = embed_texts(embed_fn, [query])[0]
        if q.shape[0] != self.embeddings.shape[1]:
            raise ValueError(f"query embedding has dim {q.shape[0]} but the index has dim "
                             f"{self.embeddings.shape[1]}; search with the embedder it was built with "
                             f"({self.embedder})")
        scores = self.embeddings @ q  # (N,)
        top = np.argsort(-scores, kind="stable")[:k]
        return [{"text": self.texts[i], "score": float(scores[i]), "sources": self.sources[i]} for i in top]

    def save(self, path_prefix: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``<prefix>.npy`` (embeddings) and ``<prefix>.json`` (texts, sources, embedder, dim, sha256).

        The ``.npy`` is written first and the ``.json`` names its checksum, so a reader can tell
        when the two files come from different saves (or an interrupted one).
        """
        npy, meta = _paths(path_prefix)
        emb = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        with atomic_write(npy, "wb") as f:
            np.save(f, emb)
        with atomic_write(meta) as f:
            json.dump({"texts": self.texts, "sources": self.sources, "embedder": self.embedder,
                       "dim": int(emb.shape[1]), "sha256": _digest(emb)}, f, ensure_ascii=False)
        return npy, meta

    @classmethod
    def load(cls, path_prefix: str | os.PathLike) -> CorpusIndex:
        """Read an index written by ``save`` and check that its two files belong together."""
        npy, meta = _paths(path_prefix)
        missing = [str(p) for p in (npy, meta) if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"index file(s) {missing} not found; build the index and save it with "
                                    "CorpusIndex.build(...).save(prefix), then load the same prefix")
        try:
            emb = np.load(npy, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"{npy} is not a readable .npy matrix ({e}); rebuild the index") from None
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
            texts, sources, embedder, dim = info["texts"], info["sources"], info["embedder"], info["dim"]
            digest = info["sha256"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{meta} is not a valid index description ({e!r}); rebuild the index") from None
        if emb.ndim != 2 or emb.shape[0] != len(texts) or len(sources) != len(texts) or emb.shape[1] != dim:
            raise ValueError(f"{npy} has shape {emb.shape} but {meta} lists {len(texts)} texts of dim {dim}; "
                             "the files do not match, rebuild the index")
        if _digest(emb) != digest:
            raise ValueError(f"{npy} and {meta} come from different saves (checksum mismatch); "
                             "rebuild the index and save both files again")
        return cls(texts, sources, emb.astype(np.float32), embedder)


def _paths(path_prefix: str | os.PathLike) -> tuple[Path, Path]:
    """``<prefix>.npy`` and ``<prefix>.json``; a prefix given with either suffix is accepted."""
    prefix = str(path_prefix)
    for suffix in (".npy", ".json"):
        if prefix.endswith(suffix):
            prefix = prefix[: -len(suffix)]
    return Path(prefix + ".npy"), Path(prefix + ".json")


def _digest(emb: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(emb, dtype=np.float32).tobytes()).hexdigest()


def answer(question: str, model, tokenizer, index: CorpusIndex, embed_fn: EmbedFn, *, style: str,
           k: int = 1) -> dict:
    """Answer a free-form question from the chunks of the whole corpus (the demo).

    Returns:
        ``{"question", "answer", "score", "source"}``: the generated answer, the top chunk's
        similarity and the ids of up to three records that chunk comes from.
    """
    from cinephile.generate import generate_answers
    from cinephile.prompts import trivia_example

    if not question or not question.strip():
        raise ValueError("the question is empty; ask a question about a film")
    hits = index.search(question, embed_fn, k=k)
    record = {"id": "demo", "question": question, "answer": "",
              "retrieved_context": "\n".join(h["text"] for h in hits)}
    prompt = trivia_example(record, tokenizer, style=style)["prompt"]
    pred = generate_answers(model, tokenizer, [prompt], progress=False)[0]
    return {"question": question, "answer": pred, "score": hits[0]["score"], "source": hits[0]["sources"][:3]}
