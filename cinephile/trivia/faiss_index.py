"""The FAISS backend of ``CorpusIndex``: exact ("flat") or inverted-file ("ivf") inner-product search.

"flat" is exact inner-product search (the same top-k as numpy), "ivf" an inverted-file index that probes
``nprobe`` of ``nlist`` k-means cells, for corpora of millions of chunks. An index is saved as
``<prefix>.faiss`` beside the corpus index files, its checksum in their ``.json``.

Reference:
    Johnson et al. 2019, "Billion-scale similarity search with GPUs" (FAISS).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def faiss_module():
    try:
        import faiss
    except ModuleNotFoundError:
        raise ModuleNotFoundError("the FAISS backend needs faiss-cpu: pip install faiss-cpu==1.15.1") from None
    return faiss


def build_faiss(embeddings: np.ndarray, kind: str = "flat", *, nlist: int | None = None, nprobe: int = 16,
                seed: int = 0):
    """A FAISS inner-product index over ``embeddings`` (N, D).

    Args:
        kind: "flat" (exact, ``IndexFlatIP``) or "ivf" (``IndexIVFFlat``: k-means into ``nlist``
            cells, trained on at most 64 points per cell; a query scans its ``nprobe`` nearest cells).
        nlist: cells for "ivf"; default about 4 * sqrt(N).
        nprobe: cells scanned per query ("ivf"); more is slower and closer to exact.
        seed: k-means seed.
    """
    faiss = faiss_module()
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, dim = emb.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        nlist = nlist or max(1, int(4 * np.sqrt(n)))
        if nlist > n:
            raise ValueError(f"nlist={nlist} cells for {n} vectors; use at most one cell per vector "
                             "(or the exact 'flat' index for small corpora)")
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        sample = emb[np.random.default_rng(seed).permutation(n)[:64 * nlist]]
        index.train(sample)
        index.nprobe = min(nprobe, nlist)
    else:
        raise ValueError(f"unknown FAISS index kind {kind!r}; choose 'flat' (exact) or 'ivf' (approximate)")
    index.add(emb)
    return index


def load_faiss(path: Path, info: dict, n: int):
    """Read ``<prefix>.faiss`` and check it is the one the ``.json`` describes."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found but the index description names a FAISS index; "
                                "save the index again (CorpusIndex.save)")
    blob = path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != info.get("sha256"):
        raise ValueError(f"{path} does not match its index description (checksum mismatch); "
                         "save the index again")
    faiss = faiss_module()
    index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
    if index.ntotal != n:
        raise ValueError(f"{path} holds {index.ntotal} vectors but the index lists {n} texts; save it again")
    if info.get("nprobe"):
        index.nprobe = int(info["nprobe"])
    return index, info.get("kind")


def serialize_faiss(index) -> bytes:
    """The bytes ``load_faiss`` reads back."""
    return faiss_module().serialize_index(index).tobytes()
