"""The reader's training data and context choice (the ablation itself is exercised by the notebook test)."""

import pandas as pd
import pytest

from cinephile.reader import ablation_steps, choose_context, reader_examples


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


def test_ablation_steps_change_one_setting_at_a_time():
    steps = ablation_steps(chunk_tokens=128, k=3, lexical_weight=0.5, model="gemma3-270m")
    keys = ["model", "chunk_tokens", "k", "lexical_weight", "comparisons", "p_gold"]
    assert steps[0] == {"name": steps[0]["name"], "model": "smollm2-135m", "chunk_tokens": 192, "k": 1,
                        "lexical_weight": 0.0, "comparisons": False, "p_gold": None}
    changed = [{k for k in keys if a[k] != b[k]} for a, b in zip(steps, steps[1:])]
    assert changed == [{"chunk_tokens", "k", "lexical_weight"}, {"comparisons"}, {"p_gold"}, {"model"}]
    assert len(ablation_steps(chunk_tokens=128, k=3, lexical_weight=0.5, model="smollm2-135m")) == 4
