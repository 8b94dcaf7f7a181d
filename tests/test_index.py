"""Corpus index: build, search, save/load round trip and its errors (deterministic fake embedder)."""

import numpy as np
import pytest

from cinephile.index import CorpusIndex
from tests.helpers import CHUNKS, HashEmbedder, records


@pytest.fixture
def embed():
    return HashEmbedder()


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
