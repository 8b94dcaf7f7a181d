"""Corpus index: build, search, save/load round trip and its errors (deterministic fake embedder)."""

import numpy as np
import pytest

from cinephile.trivia.index import CorpusIndex
from tests.helpers import CHUNKS, HashEmbedder, records


def test_corpus_index_build_search_save_load(tmp_path, embed):
    index = CorpusIndex.build(records(), embed)
    assert len(index.texts) == 4 and index.embedder == "hash-bow-64"
    assert index.sources[index.texts.index(CHUNKS[0])] == ["a", "b"]
    assert index.sources[index.texts.index(CHUNKS[2])] == ["a"]
    hits = index.search("Who composed the score?", embed, k=2)
    assert hits[0]["text"] == CHUNKS[2] and hits[0]["sources"] == ["a"] and hits[0]["score"] >= hits[1]["score"]
    npy, meta = index.save(tmp_path / "idx")
    assert (npy.name, meta.name) == ("idx.npy", "idx.json")
    loaded = CorpusIndex.load(tmp_path / "idx")
    assert loaded.texts == index.texts and loaded.sources == index.sources and loaded.embedder == index.embedder
    assert loaded.embeddings.dtype == np.float32 and np.array_equal(loaded.embeddings, index.embeddings)
    assert loaded.search("Who composed the score?", embed, k=2) == hits
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx.json", "idx.npy"]


def test_corpus_index_errors(tmp_path, embed):
    index = CorpusIndex.build(records(), embed)
    index.save(tmp_path / "idx")
    np.save(tmp_path / "idx.npy", index.embeddings[:2])
    with pytest.raises(ValueError, match=r"has shape \(2, 64\) but .* lists 4 texts .* rebuild the index"):
        CorpusIndex.load(tmp_path / "idx")
    np.save(tmp_path / "idx.npy", np.zeros((4, 8), dtype=np.float32))
    with pytest.raises(ValueError, match=r"has shape \(4, 8\) but .* lists 4 texts of dim 64"):
        CorpusIndex.load(tmp_path / "idx")
    (tmp_path / "idx.json").write_text("{}")
    with pytest.raises(ValueError, match="not a valid index description"):
        CorpusIndex.load(tmp_path / "idx")
    with pytest.raises(FileNotFoundError, match="other.npy.*not found"):
        CorpusIndex.load(tmp_path / "other")
    with pytest.raises(ValueError, match="query embedding has dim 16 but the index has dim 64"):
        index.search("score", HashEmbedder(dim=16))
    with pytest.raises(ValueError, match="no chunks to index"):
        CorpusIndex.build([{"id": "a", "chunks": []}], embed)


def test_files_from_two_saves_are_not_mixed(tmp_path, embed):
    first = CorpusIndex.build(records(), embed)
    first.save(tmp_path / "one")
    second = CorpusIndex(first.texts, first.sources, first.embeddings[::-1].copy(), first.embedder)
    second.save(tmp_path / "two")  # same sizes, other vectors
    (tmp_path / "two.npy").replace(tmp_path / "one.npy")
    with pytest.raises(ValueError, match="come from different saves"):
        CorpusIndex.load(tmp_path / "one")


def test_load_accepts_a_suffix_and_names_missing_or_corrupt_files(tmp_path, embed):
    index = CorpusIndex.build(records(), embed)
    index.save(tmp_path / "idx")
    assert CorpusIndex.load(tmp_path / "idx.npy").texts == index.texts
    (tmp_path / "idx.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"idx.json'\] not found; build the index and save it"):
        CorpusIndex.load(tmp_path / "idx")
    index.save(tmp_path / "idx")
    (tmp_path / "idx.npy").write_bytes(b"not a numpy file")
    with pytest.raises(ValueError, match="is not a readable .npy matrix"):
        CorpusIndex.load(tmp_path / "idx")


# ---------------------------------------------------------------- FAISS backend

def clustered(n: int, dim: int = 32, clusters: int = 20, seed: int = 0) -> np.ndarray:
    """L2-normalised points around random centres (uniform random vectors make recall meaningless)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def plain_index(emb: np.ndarray) -> CorpusIndex:
    return CorpusIndex([f"chunk {i}" for i in range(len(emb))], [[str(i)] for i in range(len(emb))], emb, "test")


def test_faiss_flat_returns_the_numpy_top_k():
    pytest.importorskip("faiss")
    emb, queries = clustered(2000), clustered(50, seed=1)
    exact_scores, exact_ids = plain_index(emb).search_vectors(queries, k=10)
    scores, ids = plain_index(emb).with_faiss("flat").search_vectors(queries, k=10)
    np.testing.assert_array_equal(ids, exact_ids)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)


def test_faiss_ivf_is_exact_when_it_probes_every_cell_and_close_otherwise():
    pytest.importorskip("faiss")
    emb, queries = clustered(3000), clustered(100, seed=1)
    _, exact = plain_index(emb).search_vectors(queries, k=10)
    _, full = plain_index(emb).with_faiss("ivf", nlist=16, nprobe=16).search_vectors(queries, k=10)
    np.testing.assert_array_equal(full, exact)
    _, approx = plain_index(emb).with_faiss("ivf", nlist=64, nprobe=4).search_vectors(queries, k=10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert 0.5 < recall <= 1.0


def test_faiss_index_is_saved_beside_its_metadata_and_checked_on_load(tmp_path, embed):
    pytest.importorskip("faiss")
    index = CorpusIndex.build(records(), embed).with_faiss("flat")
    hits = index.search("Who composed the score?", embed, k=2)
    index.save(tmp_path / "idx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx.faiss", "idx.json", "idx.npy"]
    loaded = CorpusIndex.load(tmp_path / "idx")
    assert loaded.faiss_kind == "flat" and loaded.faiss_index is not None
    assert loaded.search("Who composed the score?", embed, k=2) == hits
    other = plain_index(clustered(4, dim=64)).with_faiss("flat")
    other.save(tmp_path / "other")
    (tmp_path / "other.faiss").replace(tmp_path / "idx.faiss")
    with pytest.raises(ValueError, match="idx.faiss does not match its index description"):
        CorpusIndex.load(tmp_path / "idx")
    (tmp_path / "idx.faiss").unlink()
    with pytest.raises(FileNotFoundError, match="idx.faiss not found"):
        CorpusIndex.load(tmp_path / "idx")


def test_faiss_errors_name_the_fix():
    pytest.importorskip("faiss")
    with pytest.raises(ValueError, match="unknown FAISS index kind 'hnsw'"):
        plain_index(clustered(10)).with_faiss("hnsw")
    with pytest.raises(ValueError, match="nlist=50 cells for 10 vectors"):
        plain_index(clustered(10)).with_faiss("ivf", nlist=50)


# ---------------------------------------------------------------- hybrid (BM25 + dense)

def test_hybrid_weight_zero_and_one_equal_each_retriever(embed):
    from cinephile.trivia.retrieval import lexical_scores

    index = CorpusIndex.build(records(), embed)
    question = "Which island do the swimmers visit?"
    dense = [h["text"] for h in index.search(question, embed, k=4)]
    index.lexical_weight = 1e-9  # the hybrid path with (almost) no lexical part keeps the dense order
    assert [h["text"] for h in index.search(question, embed, k=4)] == dense
    index.lexical_weight = 1.0
    bm25 = lexical_scores(question, index.texts)
    expected = [index.texts[i] for i in np.argsort(-bm25, kind="stable")]
    assert [h["text"] for h in index.search(question, embed, k=4)] == expected


def test_hybrid_index_saves_its_weight_and_checks_its_bm25_part(tmp_path, embed):
    import json

    index = CorpusIndex.build(records(), embed)
    index.lexical_weight = 0.7
    hits = index.search("Who composed the score?", embed, k=2)
    index.save(tmp_path / "idx")
    loaded = CorpusIndex.load(tmp_path / "idx")
    assert loaded.lexical_weight == 0.7 and loaded.search("Who composed the score?", embed, k=2) == hits
    meta = json.loads((tmp_path / "idx.json").read_text())
    meta["bm25_sha256"] = "0" * 64
    (tmp_path / "idx.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="BM25 part rebuilt from its texts differs"):
        CorpusIndex.load(tmp_path / "idx")


@pytest.mark.parametrize("lexical_weight", [0.0, 0.6])
def test_distinct_search_skips_chunks_whose_sentences_are_already_in_the_hits(embed, lexical_weight):
    """The same passage chunked with different neighbours must not fill all k slots (dense and hybrid)."""
    shared = "The score of Jaws was composed by John Williams. It won the Academy Award for Best Score."
    recs = [{"id": "a", "chunks": [shared]},
            {"id": "b", "chunks": ["Jaws opened in June 1975. " + shared]},  # 2 of 3 sentences already taken
            {"id": "c", "chunks": [shared + " The shark was called Bruce. It broke down often. Spielberg hid it."]},
            {"id": "d", "chunks": ["Alien is set in space. Ridley Scott directed it."]}]
    index = CorpusIndex.build(recs, embed)
    index.lexical_weight = lexical_weight
    question = "Who composed the score of Jaws?"
    plain = [h["text"] for h in index.search(question, embed, k=4, distinct=False)]
    assert len(plain) == 4
    hits = index.search(question, embed, k=4)
    texts = [h["text"] for h in hits]
    # a and b share two sentences: whichever ranks first is kept, the other skipped (all or 2 of 3 seen);
    # c keeps three new sentences of five; the k slots are not refilled with the skipped chunk
    first = min(plain.index(shared), plain.index(recs[1]["chunks"][0]))
    assert texts == [t for i, t in enumerate(plain) if t not in (shared, recs[1]["chunks"][0]) or i == first]
    assert len(texts) == 3 and all(h["score"] >= g["score"] for h, g in zip(hits, hits[1:]))


# ---------------------------------------------------------------- bad arguments and bad files

@pytest.mark.parametrize("k", [0, -1, 1.5])
def test_search_refuses_k_below_one(embed, k):
    index = CorpusIndex.build(records(), embed)
    with pytest.raises(ValueError, match=f"k must be a positive number of chunks, got {k}"):
        index.search("Who composed the score?", embed, k=k)
    with pytest.raises(ValueError, match=f"k must be a positive number of chunks, got {k}"):
        index.search_vectors(embed(["Who composed the score?"]), k=k)


def test_non_finite_embeddings_are_refused_naming_the_chunk(embed):
    def broken(texts):  # NaN for the chunk about the shark
        return np.stack([np.full(8, np.nan) if "shark" in t else np.ones(8) / np.sqrt(8) for t in texts])
    with pytest.raises(ValueError, match=r"NaN or infinite values for 1 of 4 texts, first text 1 \('The shark"):
        CorpusIndex.build(records(), broken)
    good = CorpusIndex.build(records(), embed)
    emb = good.embeddings.copy()
    emb[2, 5] = np.inf
    with pytest.raises(ValueError, match=r"1 embedding rows hold NaN or infinite values, first row 2 \(chunk "
                                         r"'The score was"):
        CorpusIndex(good.texts, good.sources, emb, good.embedder)
    with pytest.raises(ValueError, match="NaN or infinite values for 1 of 1 texts"):
        good.search("Who composed the score?", lambda texts: np.full((len(texts), 64), np.nan))


@pytest.mark.parametrize("weight", [-0.5, 1.5, float("nan"), "0.5", True])
def test_lexical_weight_outside_0_1_is_refused_when_built_and_when_set(embed, weight):
    message = r"lexical_weight must be a number in \[0, 1\]"
    with pytest.raises(ValueError, match=message):
        CorpusIndex.build(records(), embed, lexical_weight=weight)
    index = CorpusIndex.build(records(), embed, lexical_weight=0.25)
    with pytest.raises(ValueError, match=message):
        CorpusIndex(index.texts, index.sources, index.embeddings, lexical_weight=weight)
    with pytest.raises(ValueError, match=message):
        index.lexical_weight = weight
    assert index.lexical_weight == 0.25  # the refused value was not stored


def test_build_names_a_record_without_chunks_or_id(embed):
    with pytest.raises(ValueError, match=r"CorpusIndex.build: record 1 \(id 'b'\) is missing 'chunks'; chunk the "
                                         r"records first"):
        CorpusIndex.build([records()[0], {"id": "b", "question": "q"}], embed)
    with pytest.raises(ValueError, match="record 0 is missing 'id'"):
        CorpusIndex.build([{"chunks": CHUNKS}], embed)


@pytest.mark.parametrize("field, value, message", [
    ("texts", [1, 2, 3, 4], r"field 'texts' must be a list of strings, got \[1, 2, 3, 4\] \(list\)"),
    ("sources", "a", "field 'sources' must be a list of lists of record ids"),
    ("sources", [["a"], ["b"]], "field 'sources' has 2 entries for 4 texts"),
    ("lexical_weight", "0.5", r"field 'lexical_weight' must be a number in \[0, 1\], got \"0.5\" \(str\)"),
    ("lexical_weight", 3, r"field 'lexical_weight' must be a number in \[0, 1\], got 3 \(int\)"),
    ("dim", "64", r"field 'dim' must be a positive integer, got \"64\" \(str\)"),
    ("dim", 32, r"has shape \(4, 64\) but .* lists 4 texts of dim 32 \(fields 'texts' and 'dim'\)"),
    ("embedder", 5, "field 'embedder' must be a string"),
    ("faiss", "flat", "field 'faiss' must be an object with kind 'flat' or 'ivf'"),
])
def test_load_names_a_wrongly_typed_field_and_the_fix(tmp_path, embed, field, value, message):
    import json

    CorpusIndex.build(records(), embed).save(tmp_path / "idx")
    meta = json.loads((tmp_path / "idx.json").read_text())
    (tmp_path / "idx.json").write_text(json.dumps({**meta, field: value}))
    with pytest.raises(ValueError, match=f"{message}.*rebuild the index"):
        CorpusIndex.load(tmp_path / "idx")


def test_load_refuses_a_description_that_is_not_an_object(tmp_path, embed):
    CorpusIndex.build(records(), embed).save(tmp_path / "idx")
    (tmp_path / "idx.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"idx.json is not a valid index description \(a JSON list"):
        CorpusIndex.load(tmp_path / "idx")
