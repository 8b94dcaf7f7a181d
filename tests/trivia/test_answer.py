"""The demo's answer(): search the corpus index, read the top chunks, return the answer with its sources."""

import pytest

from cinephile.trivia import answer as answer_mod
from cinephile.trivia.index import CorpusIndex
from tests.helpers import HashEmbedder


class Tok:
    chat_template = None


def _index():
    records = [{"id": "jaws", "chunks": ["Jaws is a film directed by Steven Spielberg.",
                                         "The score was composed by John Williams."]},
               {"id": "rocky", "chunks": ["Rocky is a boxing film starring Sylvester Stallone."]}]
    return CorpusIndex.build(records, HashEmbedder(), lexical_weight=0.5)


def test_answer_reads_the_top_chunks_and_names_their_source(monkeypatch):
    prompts = []
    monkeypatch.setattr(answer_mod, "generate_answers",
                        lambda model, tok, ps, progress, bf16, max_new_tokens: prompts.extend(ps) or ["Steven Spielberg"])
    got = answer_mod.answer("Who directed the film Jaws?", None, Tok(), _index(), HashEmbedder(), style="plain", k=1)
    assert got["answer"] == "Steven Spielberg" and got["source"] == ["jaws"]
    assert got["passages"] == ["Jaws is a film directed by Steven Spielberg."]
    assert "Context: Jaws is a film directed by Steven Spielberg." in prompts[0]
    assert "Who directed the film Jaws?" in prompts[0]


def test_a_quote_reader_answers_with_what_follows_its_evidence(monkeypatch):
    seen = {}

    def fake_generate(model, tok, ps, progress, bf16, max_new_tokens):
        seen.update(prompt=ps[0], budget=max_new_tokens)
        return ['Evidence: "Jaws is a film directed by Steven Spielberg." Answer: Steven Spielberg.']
    monkeypatch.setattr(answer_mod, "generate_answers", fake_generate)
    got = answer_mod.answer("Who directed Jaws?", None, Tok(), _index(), HashEmbedder(), style="plain",
                            answer_format="quote")
    assert got["answer"] == "Steven Spielberg" and "Quote the words" in seen["prompt"] and seen["budget"] > 16


@pytest.mark.parametrize("question", ["", "   "])
def test_answer_refuses_an_empty_question(question):
    with pytest.raises(ValueError, match="the question is empty; ask a question about a film"):
        answer_mod.answer(question, None, Tok(), _index(), HashEmbedder(), style="plain")
