"""Prompt formats: plain and chat prompts, responses, trivia and chat examples."""

import pytest

from cinephile.prompts import CHAT, format_prompt, format_response, PLAIN
from cinephile.trivia.reader import trivia_example


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
