"""Prompt formats, the gold-context choice and the deployment helpers."""

import pytest

from cinephile.deploy import agreement
from cinephile.prompts import CHAT, PLAIN, format_prompt, format_response, trivia_example
from cinephile.trivia import with_gold_context


class ChatTok:
    chat_template = "x"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert not tokenize and add_generation_prompt
        return "".join(f"<{m['role']}>{m['content']}</>" for m in messages) + "<assistant>"


def test_plain_and_chat_prompts():
    rec = {"id": "1", "question": "Who directed Jaws? ", "answer": " Steven Spielberg", "retrieved_context": "Jaws (1975)."}
    plain = trivia_example(rec, None, style=PLAIN)
    assert plain["prompt"].endswith("Context: Jaws (1975).\n\nQuestion: Who directed Jaws?\nAnswer:")
    assert plain["response"] == " Steven Spielberg"
    chat = trivia_example(rec, ChatTok(), style=CHAT)
    assert chat["prompt"].startswith("<system>") and chat["prompt"].endswith("</><assistant>")
    assert chat["response"] == "Steven Spielberg"
    closed = trivia_example(rec, None, style=PLAIN, context_key=None)
    assert "Context" not in closed["prompt"]
    assert format_response("x", style=CHAT) == "x"


def test_prompt_errors():
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template; use style='plain'"):
        format_prompt("q", None, style=CHAT)
    with pytest.raises(ValueError, match="unknown prompt style 'fancy'"):
        format_prompt("q", None, style="fancy")


def test_gold_context_prefers_best_scoring_chunk_with_answer():
    rec = {"answer_aliases": ["Spielberg"], "chunks": ["no", "Spielberg directed", "by Spielberg"],
           "chunk_scores": [0.9, 0.2, 0.5]}
    assert with_gold_context([rec])[0]["gold_context"] == "by Spielberg"
    miss = {**rec, "answer_aliases": ["Hitchcock"]}
    out = with_gold_context([miss])[0]
    assert out["gold_context"] == "no" and out["has_gold"] is False


def test_agreement():
    assert agreement([1, 2, None, 4], [1, 3, None, 4]) == 0.75
    with pytest.raises(ValueError, match="equal length"):
        agreement([1], [1, 2])
