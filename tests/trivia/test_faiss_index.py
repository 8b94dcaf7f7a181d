"""The FAISS backend: exact and IVF indexes, saved bytes checked against their description on load."""

import hashlib

import numpy as np
import pytest

pytest.importorskip("faiss")

from cinephile.trivia.faiss_index import build_faiss, load_faiss, serialize_faiss  # noqa: E402


def _unit(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_flat_index_gives_the_exact_inner_product_top_k():
    emb, queries = _unit(300), _unit(5, seed=1)
    scores, ids = build_faiss(emb, "flat").search(queries, 3)
    exact = np.argsort(-(queries @ emb.T), axis=1)[:, :3]
    assert (ids == exact).all() and np.allclose(scores, np.take_along_axis(queries @ emb.T, exact, axis=1), atol=1e-5)


def test_saved_bytes_load_back_and_a_mismatch_is_named(tmp_path):
    index = build_faiss(_unit(200), "ivf", nlist=4, nprobe=2)
    blob = serialize_faiss(index)
    path = tmp_path / "c.faiss"
    path.write_bytes(blob)
    info = {"kind": "ivf", "sha256": hashlib.sha256(blob).hexdigest(), "nprobe": 3}
    loaded, kind = load_faiss(path, info, 200)
    assert kind == "ivf" and loaded.ntotal == 200 and loaded.nprobe == 3
    with pytest.raises(ValueError, match=r"holds 200 vectors but the index lists 201 texts"):
        load_faiss(path, info, 201)
    with pytest.raises(ValueError, match=r"checksum mismatch"):
        load_faiss(path, {**info, "sha256": "0" * 64}, 200)
    with pytest.raises(FileNotFoundError, match=r"names a FAISS index; save the index again"):
        load_faiss(tmp_path / "missing.faiss", info, 200)


def test_bad_kinds_and_cell_counts_are_refused():
    with pytest.raises(ValueError, match=r"unknown FAISS index kind 'hnsw'"):
        build_faiss(_unit(10), "hnsw")
    with pytest.raises(ValueError, match=r"nlist=50 cells for 10 vectors"):
        build_faiss(_unit(10), "ivf", nlist=50)
