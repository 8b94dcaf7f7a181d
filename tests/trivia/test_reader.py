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




def test_quote_evidence_takes_one_sentence_per_evidence_group_in_context_order():
    from cinephile.trivia.reader import quote_evidence

    context = ("Alien is a 1979 horror film. It was directed by Ridley Scott.\n\n"
               "Jaws is a 1975 thriller directed by Steven Spielberg. Its score is by John Williams.")
    single = {"answer": "Steven Spielberg", "answer_aliases": ["Steven Spielberg", "Spielberg"]}
    assert quote_evidence(single, context) == ["Jaws is a 1975 thriller directed by Steven Spielberg."]
    comparison = {"answer": "Alien", "evidence": ["1979", "1975"]}  # each year its own group, quoted in order
    assert quote_evidence(comparison, context) == ["Alien is a 1979 horror film.",
                                                   "Jaws is a 1975 thriller directed by Steven Spielberg."]
    assert quote_evidence({"answer": "Hans Zimmer"}, context) == []


def test_a_long_sentence_is_clipped_to_a_window_that_still_holds_the_evidence():
    from cinephile.trivia.reader import quote_evidence

    words = [f"w{i}" for i in range(40)]
    sentence = " ".join(words[:30] + ["Spielberg"] + words[30:]) + "."
    quoted = quote_evidence({"answer": "Spielberg"}, sentence, max_words=8)[0]
    assert len(quoted.split()) == 8 and "Spielberg" in quoted


def test_quote_examples_ask_for_the_evidence_and_answer_after_it():
    from cinephile.trivia.reader import QUOTE_SYSTEM, answer_of, trivia_example

    class ChatTok:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "|".join(f"{m['role']}:{m['content']}" for m in messages) + "|assistant:"

    rec = {"id": "r1", "question": "Who directed Jaws?", "answer": "Steven Spielberg",
           "retrieved_context": "Rocky boxes. Jaws is by Steven Spielberg."}
    ex = trivia_example(rec, ChatTok(), style="chat", answer_format="quote")
    assert QUOTE_SYSTEM in ex["prompt"]
    assert ex["response"] == 'Evidence: "Jaws is by Steven Spielberg." Answer: Steven Spielberg'
    assert answer_of(ex["response"]) == "Steven Spielberg"
    none = trivia_example({**rec, "retrieved_context": "Rocky boxes."}, Tok(), style="plain", answer_format="quote")
    assert none["response"] == " Evidence: none. Answer: Steven Spielberg"
    assert trivia_example(rec, ChatTok(), style="chat")["response"] == "Steven Spielberg"
    with pytest.raises(ValueError, match="answer_format must be one of"):
        trivia_example(rec, Tok(), style="plain", answer_format="cot")


@pytest.mark.parametrize("reply, answer", [('Evidence: "a. b" Answer: 1979.', "1979"), ("Spielberg.\nmore", "Spielberg"),
                                           ('Evidence: none. Answer:  no', "no"), ('Evidence: "cut off', 'Evidence: "cut off')])
def test_answer_of_reads_after_the_last_answer_mark(reply, answer):
    from cinephile.trivia.reader import answer_of

    assert answer_of(reply) == answer


def test_reply_answer_parses_quote_replies_and_keeps_answer_replies_as_generated():
    from cinephile.trivia.reader import reply_answer

    assert reply_answer('Evidence: "Jaws (1975)" Answer: 1975.', "quote") == "1975"
    assert reply_answer("Steven Spielberg.", "answer") == "Steven Spielberg."
