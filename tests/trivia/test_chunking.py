"""Sentence splitting, chunk budget and token-bounded chunking (fake and real tokenizers)."""


import pytest

import cinephile.trivia.chunking as chunking
from cinephile.trivia.chunking import chunk_budget, chunk_records, chunk_text, split_sentences
from cinephile.trivia.data import load_qa_csv
from tests.helpers import ByteTokenizer, WhitespaceTokenizer



@pytest.fixture
def ws():
    return WhitespaceTokenizer()


@pytest.fixture(scope="module")
def smol(smol_tokenizer):
    return smol_tokenizer


# ---------------------------------------------------------------- split_sentences

@pytest.mark.parametrize("text, expected", [
    ("Mr. Smith met Dr. Jones. They talked.", ["Mr. Smith met Dr. Jones.", "They talked."]),
    ("J. R. R. Tolkien wrote it. It sold well.", ["J. R. R. Tolkien wrote it.", "It sold well."]),
    ("It cost $3.5 million. Then 2.5 more.", ["It cost $3.5 million.", "Then 2.5 more."]),
    ("It opened in the U.S. The critics loved it.", ["It opened in the U.S.", "The critics loved it."]),
    ("The U.S. Army helped. Filming ended.", ["The U.S. Army helped.", "Filming ended."]),
    ("Films, e.g. Jaws, were hits. Why? Money!", ["Films, e.g. Jaws, were hits.", "Why?", "Money!"]),
    ('He said "Go." Then he left.', ['He said "Go."', "Then he left."]),
    ("Early life\n\nShe was born in 1934.  Later   she acted.", ["Early life", "She was born in 1934.",
                                                                  "Later she acted."]),
    ("no capital after. the period stays", ["no capital after. the period stays"]),
    ("  \n\n ", []),
])
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


# ---------------------------------------------------------------- chunk_budget

def test_chunk_budget(ws):
    assert chunk_budget(ws) == 128 - 64
    assert chunk_budget(ws, reserve_tokens=28, max_chunk_tokens=50) == 50
    assert chunk_budget(ws, window=100, reserve_tokens=20) == 80


def test_chunk_budget_errors(ws):
    ws.model_max_length = int(1e30)  # HF sentinel for "unknown"
    with pytest.raises(ValueError, match="no usable model_max_length.*pass window="):
        chunk_budget(ws)
    with pytest.raises(ValueError, match=r"chunk budget is -4 tokens \(window 60, reserve_tokens 64"):
        chunk_budget(ws, window=60)
    with pytest.raises(ValueError, match="chunk budget is 0 tokens"):
        chunk_budget(ws, window=100, max_chunk_tokens=0)


# ---------------------------------------------------------------- chunk_text

TEXT = "One two three. Four five. Six seven eight nine. Ten."  # 3, 2, 4, 1 words


@pytest.mark.parametrize("max_tokens, overlap, expected", [
    (6, 1, ["One two three. Four five.", "Four five. Six seven eight nine.", "Six seven eight nine. Ten."]),
    (6, 0, ["One two three. Four five.", "Six seven eight nine. Ten."]),
    # the overlap sentence "Four five." (2) would not fit next to the 4-word sentence in 5 tokens
    (5, 1, ["One two three. Four five.", "Six seven eight nine. Ten."]),
    (100, 1, [TEXT]),
])
def test_chunk_text_exact(ws, max_tokens, overlap, expected):
    assert chunk_text(TEXT, ws, max_tokens, overlap_sentences=overlap) == expected


def test_chunk_text_splits_a_long_sentence_by_tokens(ws):
    words = [f"W{i}" for i in range(12)]
    chunks = chunk_text("Short one. " + " ".join(words) + ".", ws, 5, overlap_sentences=1)
    assert chunks == ["Short one.", "W0 W1 W2 W3 W4", "W5 W6 W7 W8 W9", "W10 W11."]


def test_chunk_text_keeps_line_breaks_and_respects_budget(ws):
    text = "Jaws: Jaws is a film. It was a hit.\n\nAlien: Alien is a film. It is scary. It has a cat."
    chunks = chunk_text(text, ws, 9, overlap_sentences=1)
    assert chunks[0] == "Jaws: Jaws is a film. It was a hit."
    assert any("\nAlien: Alien is a film." in c for c in chunks)
    assert all(len(c.split()) <= 9 for c in chunks)
    covered = " ".join(chunks)
    assert all(s in covered for s in split_sentences(text))


@pytest.mark.parametrize("text, max_tokens, overlap, message", [
    ("", 10, 1, "cannot chunk empty text"),
    (" \n\t ", 10, 1, "cannot chunk empty text"),
    ("Some text.", 0, 1, "max_tokens must be positive, got 0"),
    ("Some text.", 10, -1, "overlap_sentences must be >= 0"),
])
def test_chunk_text_errors(ws, text, max_tokens, overlap, message):
    with pytest.raises(ValueError, match=message):
        chunk_text(text, ws, max_tokens, overlap_sentences=overlap)


# ---------------------------------------------------------------- chunk_records

def test_chunk_records_caches_shared_contexts(ws, monkeypatch):
    calls = []
    real = chunking.chunk_text
    monkeypatch.setattr(chunking, "chunk_text", lambda text, *a, **kw: calls.append(text) or real(text, *a, **kw))
    records = [{"id": "a", "question": "q1", "context": TEXT}, {"id": "b", "question": "q2", "context": TEXT},
               {"id": "c", "question": "q3", "context": "Other text here."}]
    out = chunk_records(records, ws, 6)
    assert calls == [TEXT, "Other text here."]
    assert [r["id"] for r in out] == ["a", "b", "c"]
    assert "context" not in out[0] and "context" in records[0]  # input untouched
    assert out[0]["chunks"] == out[1]["chunks"] == chunk_text(TEXT, ws, 6)
    assert out[0]["chunks"] is not out[1]["chunks"]
    assert [r["n_context_tokens"] for r in out] == [10, 10, 3]


def test_chunk_records_parallel_matches_serial(ws):
    records = [{"id": str(i), "question": "q", "context": f"Sentence {i} one. " * (i + 3)} for i in range(6)]
    serial = chunk_records(records, ws, 7, n_jobs=1)
    assert chunk_records(records, ws, 7, n_jobs=2) == serial
    assert chunk_records(records, ws, 7, progress=True) == serial


def test_chunk_records_empty_context(ws):
    with pytest.raises(ValueError, match="record 'b' has no context to chunk"):
        chunk_records([{"id": "a", "context": "x."}, {"id": "b", "context": "  "}], ws, 5)


# ---------------------------------------------------------------- real tokenizer and data

@pytest.mark.slow
def test_real_tokenizer_has_no_window_and_chunks_fit(smol):
    with pytest.raises(ValueError, match="pass window="):
        chunk_budget(smol)
    text = ("Dr. No is a 1962 spy film. It stars Sean Connery as James Bond. " * 20).strip()
    chunks = chunk_text(text, smol, 40, overlap_sentences=1)
    assert len(chunks) > 1
    assert all(len(smol.encode(c, add_special_tokens=False)) <= 40 for c in chunks)


@pytest.mark.slow
def test_real_hotpotqa_chunking(smol, shared_data):
    records, _ = load_qa_csv(shared_data / "movie_qa" / "hotpotqa_movie_dev.csv")
    max_tokens = chunk_budget(smol, window=2048, reserve_tokens=96, max_chunk_tokens=128)
    out = chunk_records(records, smol, max_tokens)
    assert len(out) == 53
    for rec, src in zip(out, records):
        assert rec["chunks"] and rec["n_context_tokens"] == len(smol.encode(src["context"], add_special_tokens=False))
        assert all(len(smol.encode(c, add_special_tokens=False)) <= max_tokens for c in rec["chunks"])
        joined = " ".join(rec["chunks"])
        assert all(" ".join(s.split()[:3]) in joined for s in split_sentences(src["context"])[:5])


# ---------------------------------------------------------------- multi-byte text and linear splitting

@pytest.mark.parametrize("text", [
    "黑泽明导演的七武士于一九五四年上映讲述了七名武士保护村庄的故事" * 8,  # CJK, no spaces, no punctuation
    "🎬🍿🎥 " * 60 + "The end.",  # emoji: four bytes each
    "Amélie Poulain vit à Montmartre, où elle travaille au café des Deux Moulins " * 6,
])
def test_long_sentences_are_never_cut_inside_a_character(text):
    tok = ByteTokenizer()
    chunks = chunk_text(text, tok, max_tokens=13, overlap_sentences=0)
    assert not any("\ufffd" in c for c in chunks)
    assert all(len(tok.encode(c)) <= 13 for c in chunks)
    assert "".join(c.replace(" ", "") for c in chunks) == text.replace(" ", "")  # nothing lost or repeated


def test_cjk_full_stops_end_sentences():
    assert split_sentences("七武士是黑泽明的电影。它于1954年上映！好看吗？") == [
        "七武士是黑泽明的电影。", "它于1954年上映！", "好看吗？"]


def test_split_sentences_is_linear_on_abbreviation_heavy_text():
    import time
    text = "Mr. Smith " * 200_000  # 2 MB: quadratic splitting took ~54 s on only 300 KB
    start = time.perf_counter()
    chunks = chunk_text(text, WhitespaceTokenizer(), max_tokens=500)
    assert time.perf_counter() - start < 10  # a generous guard, not a timing
    assert len(split_sentences("Mr. Smith met Dr. Jones. " * 3)) == 3
    assert sum(len(c.split()) for c in chunks) == 400_000


@pytest.mark.parametrize("run", [".", "!?", "?!.…"])
def test_split_sentences_is_linear_in_runs_of_sentence_marks(run):
    import time
    marks = run * (2_000_000 // len(run))  # 2 MB of marks; quadratic splitting took 17 s on 40 KB of dots
    text = f"It ended{marks} and began again. Then it stopped."  # no boundary after the run: lower case follows
    start = time.perf_counter()
    sentences = split_sentences(text)
    chunks = chunk_text(text, WhitespaceTokenizer(), max_tokens=8, overlap_sentences=0)
    alone = split_sentences(marks)
    assert time.perf_counter() - start < 10  # a generous guard, not a timing
    assert sentences == [f"It ended{marks} and began again.", "Then it stopped."]
    assert chunks == [f"It ended{marks} and began again. Then it stopped."]
    assert alone == [marks]


def test_chunk_text_of_a_long_run_of_marks_splits_it_by_tokens():
    import time
    text = "!?" * 100_000 + " the end. The credits."
    tok = ByteTokenizer()
    start = time.perf_counter()
    chunks = chunk_text(text, tok, max_tokens=64, overlap_sentences=0)
    assert time.perf_counter() - start < 10
    assert len(chunks) > 3000 and all(len(tok.encode(c)) <= 64 for c in chunks)
    assert "".join(chunks).replace(" ", "") == text.replace(" ", "")  # nothing lost or repeated
