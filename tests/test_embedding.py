"""The embedding function type, the sentence-transformers wrapper and the embedding cache."""

import numpy as np
import pytest

from cinephile.embedding import cached_embedder, embed_texts, sentence_transformer_embedder


def test_sentence_transformer_embedder_passes_normalisation_flags():
    class FakeModel:
        def encode(self, texts, **kw):
            self.kw = kw
            return np.ones((len(texts), 3), dtype=np.float64)

    model = FakeModel()
    emb = sentence_transformer_embedder(model, batch_size=7)(["a", "b"])
    assert emb.shape == (2, 3) and emb.dtype == np.float32
    assert model.kw == {"batch_size": 7, "normalize_embeddings": True, "convert_to_numpy": True,
                        "show_progress_bar": False}


def test_cached_embedder_encodes_each_text_once_and_keeps_order():
    seen = []

    def embed(texts):
        seen.append(list(texts))
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)
    embed.name = "fake"
    cached = cached_embedder(embed)
    first = cached(["aa", "b", "aa"])
    again = cached(["b", "ccc", "aa"])
    assert seen == [["aa", "b"], ["ccc"]] and cached.name == "fake"
    assert first[:, 0].tolist() == [2, 1, 2] and again[:, 0].tolist() == [1, 3, 2]
    assert cached.cache_info() == {"texts": 3, "calls": 2}


def test_embed_texts_checks_the_shape_and_refuses_non_finite_rows():
    ok = embed_texts(lambda texts: np.ones((len(texts), 4)), ["a", "b"])
    assert ok.shape == (2, 4) and ok.dtype == np.float32
    with pytest.raises(ValueError, match=r"embed_fn returned shape \(1, 4\) for 2 texts; expected \(2, dim\)"):
        embed_texts(lambda texts: np.ones((1, 4)), ["a", "b"])
    with pytest.raises(ValueError, match=r"NaN or infinite values for 1 of 2 texts, first text 1 \('b'\)"):
        embed_texts(lambda texts: np.array([[1.0, 0.0], [np.nan, 0.0]]), ["a", "b"])
