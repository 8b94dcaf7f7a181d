"""A dense index over every chunk of a corpus, searched with free-form questions in the demo.

The embedding function is passed in (``EmbedFn``: list of texts -> L2-normalised rows),
so cosine similarity is a dot product; the index is saved as a ``.npy`` matrix beside a
``.json`` description (texts, sources, embedder name, dimension and the SHA-256 of the matrix,
which ties the two files together). ``answer`` is the demo: retrieve, then generate.

Search is exhaustive numpy by default. ``with_faiss`` moves it to a FAISS index (``faiss-cpu``):
"flat" is exact inner-product search (the same top-k as numpy), "ivf" an inverted-file index
that probes ``nprobe`` of ``nlist`` k-means cells, for corpora of millions of chunks. A FAISS
index is saved as ``<prefix>.faiss`` beside the other two, its checksum in the ``.json``.

References:
    Karpukhin et al. 2020, "Dense Passage Retrieval for Open-Domain Question Answering".
    Johnson et al. 2019, "Billion-scale similarity search with GPUs" (FAISS).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rank_bm25 import BM25Okapi

from cinephile.embedding import EmbedFn, embed_texts, non_finite_rows
from cinephile.io import atomic_write, require_keys
from cinephile.trivia.chunking import split_sentences
from cinephile.trivia.faiss_index import build_faiss, load_faiss, serialize_faiss
from cinephile.trivia.retrieval import bm25_words, fuse_scores

logger = logging.getLogger(__name__)


def _check_weight(lexical_weight: object) -> float:
    """``lexical_weight`` as a float in [0, 1], or a ValueError."""
    if isinstance(lexical_weight, bool) or not isinstance(lexical_weight, (int, float, np.number)) \
            or not 0.0 <= float(lexical_weight) <= 1.0:
        raise ValueError(f"lexical_weight must be a number in [0, 1] (0: dense only, 1: BM25 only), "
                         f"got {lexical_weight!r}")
    return float(lexical_weight)


def _check_k(k: object) -> int:
    """``k`` as a positive int, or a ValueError (k=0 or a negative k would slice the whole ranking)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive number of chunks, got {k!r}")
    return int(k)


@dataclass
class CorpusIndex:
    """Dense index over every distinct chunk of a corpus, for free-form questions in the demo.

    The embeddings are one in-memory (N, D) float32 matrix searched by a dot product, or a
    FAISS index built from them (``with_faiss``) behind the same ``search``.

    Attributes:
        texts: distinct chunk texts.
        sources: ids of the records each chunk comes from.
        embeddings: (N, D) float32, L2-normalised rows.
        embedder: name of the embedding model, to refuse searching with another one.
        faiss_index: the FAISS index searched instead of the matrix, or None (numpy search).
        faiss_kind: "flat" or "ivf" when ``faiss_index`` is set.
        lexical_weight: weight of BM25 in the hybrid score (``retrieval.fuse_scores``); 0 is dense
            only. The BM25 part is rebuilt from ``texts`` on load and checked against the checksum
            of its tokenised corpus saved in the ``.json``.
    """

    texts: list[str]
    sources: list[list[str]]
    embeddings: np.ndarray
    embedder: str = "unknown"
    faiss_index: object = field(default=None, repr=False, compare=False)
    faiss_kind: str | None = None
    lexical_weight: float = 0.0
    _bm25: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Refuse embeddings that do not match the texts or hold NaN / infinity (they would score NaN)."""
        n, shape = len(self.texts), np.shape(self.embeddings)
        if len(shape) != 2 or shape[0] != n or len(self.sources) != n:
            raise ValueError(f"embeddings of shape {shape} and {len(self.sources)} sources for {n} texts; "
                             "need one embedding row and one source list per text")
        bad = non_finite_rows(np.asarray(self.embeddings))
        if bad:
            raise ValueError(f"{len(bad)} embedding rows hold NaN or infinite values, first row {bad[0]} (chunk "
                             f"{self.texts[bad[0]][:60]!r}); re-embed the chunks (CorpusIndex.build)")

    def __setattr__(self, name: str, value: object) -> None:
        if name == "lexical_weight":  # checked when built and whenever it is set later
            value = _check_weight(value)
        super().__setattr__(name, value)

    @classmethod
    def build(cls, records: Sequence[dict], embed_fn: EmbedFn, *, name: str | None = None,
              lexical_weight: float = 0.0) -> CorpusIndex:
        """Embed the distinct chunks of ``records`` (each with ``id`` and ``chunks``).

        Args:
            records: chunked records (``chunking.chunk_records``).
            embed_fn: the ``EmbedFn`` searches will use.
            name: embedder name stored with the index (default: ``embed_fn.name``).
            lexical_weight: see the class attributes; checked before anything is embedded.
        """
        lexical_weight = _check_weight(lexical_weight)
        require_keys(records, ("id", "chunks"), what="CorpusIndex.build", fix="chunk the records first "
                     "(chunking.chunk_records)")
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
        return cls(texts, [sources[t] for t in texts], embed_texts(embed_fn, texts), str(name),
                   lexical_weight=lexical_weight)

    def with_faiss(self, kind: str = "flat", *, nlist: int | None = None, nprobe: int = 16,
                   seed: int = 0) -> CorpusIndex:
        """Search through a FAISS index from now on (``build_faiss``); returns ``self``."""
        self.faiss_index, self.faiss_kind = build_faiss(self.embeddings, kind, nlist=nlist, nprobe=nprobe,
                                                        seed=seed), kind
        return self

    def _queries(self, queries: np.ndarray) -> np.ndarray:
        """``queries`` as contiguous float32 rows, or a ValueError when their dimension is not the index's."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.embeddings.shape[1]:
            raise ValueError(f"query embedding has dim {queries.shape[1]} but the index has dim "
                             f"{self.embeddings.shape[1]}; search with the embedder it was built with "
                             f"({self.embedder})")
        return queries

    def search_vectors(self, queries: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product for each row of ``queries`` (M, D): (scores, ids), each (M, k), best first.

        Rows of ids are -1 where an approximate index found fewer than k chunks.
        """
        queries = self._queries(queries)
        k = min(_check_k(k), len(self.texts))
        if self.faiss_index is not None:
            return self.faiss_index.search(queries, k)
        best_scores, best_ids = [], []
        for start in range(0, len(queries), 64):  # (64, N) score blocks: bounded memory for large corpora
            scores = queries[start:start + 64] @ self.embeddings.T
            if scores.shape[1] > 50_000:  # partial selection first; a full sort of millions is the slow part
                part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
                top = np.take_along_axis(part, np.argsort(-np.take_along_axis(scores, part, 1), axis=1,
                                                          kind="stable"), 1)
            else:  # stable: equal scores keep corpus order
                top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            best_scores.append(np.take_along_axis(scores, top, 1))
            best_ids.append(top)
        return np.concatenate(best_scores), np.concatenate(best_ids)

    def lexical(self):
        """The BM25 (Okapi, rank-bm25) index over ``texts``, built on first use."""
        if self._bm25 is None:
            self._bm25 = BM25Okapi([bm25_words(t) for t in self.texts])
        return self._bm25

    def search(self, query: str, embed_fn: EmbedFn, k: int = 3, *, distinct: bool = True) -> list[dict]:
        """Top-k chunks for ``query``: [{"text", "score", "sources"}], best first.

        With ``lexical_weight > 0`` the score is the hybrid of the cosine similarity and BM25 over
        every chunk (exact, in memory: the hybrid is meant for corpora the demo holds). A passage
        shared by many records is chunked with different neighbours each time, so the best hits
        are often the same sentences; with ``distinct`` a chunk whose sentences are half or more
        in the hits already taken is skipped, and the k hits carry k times the text.
        """
        k = _check_k(k)
        q = self._queries(embed_texts(embed_fn, [query]))
        if self.lexical_weight == 0:
            scores, ids = self.search_vectors(q, max(10 * k, 50) if distinct else k)  # a pool to skip from
            ranked = [(float(s), int(i)) for s, i in zip(scores[0], ids[0]) if i >= 0]
        else:
            fused = fuse_scores(self.embeddings @ q[0], self.lexical().get_scores(bm25_words(query)),
                                self.lexical_weight)
            order = np.argsort(-fused, kind="stable")
            ranked = ((float(fused[i]), int(i)) for i in (order if distinct else order[:k]))  # read until k are taken
        hits, seen = [], set()
        for score, i in ranked:
            sentences = set(split_sentences(self.texts[i])) if distinct else set()
            if sentences and len(sentences & seen) * 2 >= len(sentences):
                continue
            seen |= sentences
            hits.append({"text": self.texts[i], "score": score, "sources": self.sources[i]})
            if len(hits) == k:
                break
        return hits

    def save(self, path_prefix: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``<prefix>.npy`` (embeddings) and ``<prefix>.json`` (texts, sources, embedder, dim, sha256).

        The ``.npy`` is written first and the ``.json`` names its checksum, so a reader can tell
        when the two files come from different saves (or an interrupted one).
        """
        npy, meta = _paths(path_prefix)
        emb = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        with atomic_write(npy, "wb") as f:
            np.save(f, emb)
        info = {"texts": self.texts, "sources": self.sources, "embedder": self.embedder,
                "dim": int(emb.shape[1]), "sha256": _digest(emb), "lexical_weight": float(self.lexical_weight),
                "bm25_sha256": _bm25_digest(self.texts)}
        if self.faiss_index is not None:
            blob = serialize_faiss(self.faiss_index)
            with atomic_write(npy.with_suffix(".faiss"), "wb") as f:
                f.write(blob)
            info["faiss"] = {"kind": self.faiss_kind, "sha256": hashlib.sha256(blob).hexdigest(),
                             "nprobe": int(getattr(self.faiss_index, "nprobe", 0))}
        with atomic_write(meta) as f:
            json.dump(info, f, ensure_ascii=False)
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
        info = _read_description(meta)
        texts, sources, dim = info["texts"], info["sources"], info["dim"]
        if emb.ndim != 2 or emb.shape[0] != len(texts) or emb.shape[1] != dim:
            raise ValueError(f"{npy} has shape {emb.shape} but {meta} lists {len(texts)} texts of dim {dim} "
                             "(fields 'texts' and 'dim'); the files do not match, rebuild the index")
        if len(sources) != len(texts):
            raise ValueError(f"{meta}: field 'sources' has {len(sources)} entries for {len(texts)} texts; "
                             "rebuild the index")
        if _digest(emb) != info["sha256"]:
            raise ValueError(f"{npy} and {meta} come from different saves (checksum mismatch); "
                             "rebuild the index and save both files again")
        if "bm25_sha256" in info and info["bm25_sha256"] != _bm25_digest(texts):
            raise ValueError(f"{meta}: the BM25 part rebuilt from its texts differs from the saved one (the "
                             "tokenizer changed?); rebuild the index")
        try:
            index = cls(texts, sources, emb.astype(np.float32), info["embedder"],
                        lexical_weight=info.get("lexical_weight", 0.0))
        except ValueError as e:
            raise ValueError(f"{npy}: {e}") from None
        if info.get("faiss"):
            index.faiss_index, index.faiss_kind = load_faiss(npy.with_suffix(".faiss"), info["faiss"], len(texts))
        return index


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


# field of the index description -> (is it valid?, what it must be); the optional ones may be absent
_FIELDS = {
    "texts": (_is_str_list, "a list of strings"),
    "sources": (lambda v: isinstance(v, list) and all(map(_is_str_list, v)), "a list of lists of record ids"),
    "embedder": (lambda v: isinstance(v, str), "a string"),
    "dim": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive integer"),
    "sha256": (lambda v: isinstance(v, str), "a string"),
}
_OPTIONAL_FIELDS = {
    "lexical_weight": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1,
                       "a number in [0, 1]"),
    "bm25_sha256": (lambda v: isinstance(v, str), "a string"),
    "faiss": (lambda v: v is None or isinstance(v, dict) and v.get("kind") in ("flat", "ivf"),
              "an object with kind 'flat' or 'ivf'"),
}


def _read_description(meta: Path) -> dict:
    """The ``.json`` written by ``CorpusIndex.save``, every field of the expected type, or a ValueError naming it."""
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{meta} is not a valid index description ({e!r}); rebuild the index") from None
    if not isinstance(info, dict):
        raise ValueError(f"{meta} is not a valid index description (a JSON {type(info).__name__}, not an "
                         "object); rebuild the index")
    absent = [key for key in _FIELDS if key not in info]
    if absent:
        raise ValueError(f"{meta} is not a valid index description (no field(s) {absent}); rebuild the index")
    for key, (valid, what) in (_FIELDS | _OPTIONAL_FIELDS).items():
        if key in info and not valid(info[key]):
            raise ValueError(f"{meta}: field {key!r} must be {what}, got {json.dumps(info[key])[:60]} "
                             f"({type(info[key]).__name__}); rebuild the index (CorpusIndex.build(...).save)")
    return info


def _bm25_digest(texts: list[str]) -> str:
    """Checksum of the BM25 index's input: the tokenised corpus."""

    return hashlib.sha256(json.dumps([bm25_words(t) for t in texts]).encode()).hexdigest()


def _paths(path_prefix: str | os.PathLike) -> tuple[Path, Path]:
    """``<prefix>.npy`` and ``<prefix>.json``; a prefix given with either suffix is accepted."""
    prefix = str(path_prefix)
    for suffix in (".npy", ".json"):
        if prefix.endswith(suffix):
            prefix = prefix[: -len(suffix)]
    return Path(prefix + ".npy"), Path(prefix + ".json")


def _digest(emb: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(emb, dtype=np.float32).tobytes()).hexdigest()


