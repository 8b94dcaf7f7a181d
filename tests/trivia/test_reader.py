"""The reader's training data and the choice of its context."""

import pandas as pd
import pytest

from cinephile.trivia.reader import choose_context, reader_examples


class Tok:
    chat_template = None


def test_choose_context_takes_the_shortest_within_tolerance_of_the_best():
    table = pd.DataFrame([
        {"chunk_tokens": 128, "k": 1, "context_recall": 0.60, "context_tokens": 125},
        {"chunk_tokens": 128, "k": 3, "context_recall": 0.90, "context_tokens": 370},
        {"chunk_tokens": 192, "k": 2, "context_recall": 0.91, "context_tokens": 380},
        {"chunk_tokens": 192, "k": 3, "context_recall": 0.95, "context_tokens": 560},
        {"chunk_tokens": 256, "k": 3, "context_recall": 0.99, "context_tokens": 760},
    ])
    assert choose_context(table, tolerance=0.02, max_tokens=600) == {"chunk_tokens": 192, "k": 3}
    assert choose_context(table, tolerance=0.05, max_tokens=600) == {"chunk_tokens": 128, "k": 3}
    assert choose_context(table, tolerance=0.0, max_tokens=1000) == {"chunk_tokens": 256, "k": 3}
    with pytest.raises(ValueError, match="raise max_tokens"):
        choose_context(table, max_tokens=100)


def test_reader_examples_use_raft_contexts_or_the_retrieved_one():
    rec = {"id": "r1", "question": "Who directed Jaws?", "answer": "Steven Spielberg",
           "answer_aliases": ["Steven Spielberg"], "chunks": ["Jaws is by Steven Spielberg.", "Rocky boxes."],
           "chunk_scores": [0.2, 0.9], "retrieved_context": "Rocky boxes."}
    plain = reader_examples([rec], Tok(), "plain", k=1, p_gold=None)[0]
    assert "Rocky boxes." in plain["prompt"] and "Spielberg" not in plain["prompt"]
    gold = reader_examples([rec], Tok(), "plain", k=1, p_gold=1.0)[0]
    assert "Jaws is by Steven Spielberg." in gold["prompt"] and "Rocky" not in gold["prompt"]
    assert gold["response"] == " Steven Spielberg"
    assert "Spielberg" not in reader_examples([rec], Tok(), "plain", k=1, p_gold=0.0)[0]["prompt"]


