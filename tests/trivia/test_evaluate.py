"""EM / F1 with the official TriviaQA normalisation, on cases worked out by hand."""

import pytest

from cinephile.trivia import evaluate
from cinephile.trivia.evaluate import exact_match, f1_score, score_predictions
from cinephile.trivia.matching import normalize_answer


@pytest.mark.parametrize("raw, expected", [
    ("The Godfather", "godfather"),
    ("  A   Clockwork  Orange ", "clockwork orange"),
    ("Schindler's List", "schindler s list"),         # punctuation becomes a space (official script)
    ("Star_Wars", "star wars"),                        # underscores become spaces
    ("‘Casablanca’", "casablanca"),                    # curly quotes count as punctuation
    ("Theatre an Anthem", "theatre anthem"),           # articles only as whole words
    ("E.T. the Extra-Terrestrial", "e t extra terrestrial"),
])
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_exact_match_ignores_case_articles_and_punctuation():
    assert exact_match("The Godfather", ["godfather"]) == 1.0
    assert exact_match("godfather!", "The Godfather") == 1.0
    assert exact_match("Godfather II", ["The Godfather"]) == 0.0


def test_exact_match_takes_best_alias():
    assert exact_match("Sunset Blvd.", ["Sunset Boulevard", "Sunset Blvd"]) == 1.0


def test_f1_partial_overlap():
    # prediction tokens {steven, spielberg}, truth {spielberg}: P = 1/2, R = 1, F1 = 2/3
    assert f1_score("Steven Spielberg", ["Spielberg"]) == pytest.approx(2 / 3)


def test_f1_max_over_aliases_and_counts_repeated_tokens_once_each():
    # "new york new" vs "new york": common = {new:1, york:1} -> P = 2/3, R = 1 -> F1 = 0.8
    assert f1_score("new york new", ["Boston", "New York"]) == pytest.approx(0.8)


def test_empty_prediction_scores_zero():
    assert exact_match("", ["Jaws"]) == 0.0
    assert f1_score("", ["Jaws"]) == 0.0
    assert f1_score("the", ["Jaws"]) == 0.0  # normalises to nothing


def test_no_aliases_is_an_error():
    with pytest.raises(ValueError, match="no answer aliases"):
        exact_match("Jaws", [])


def test_score_predictions_in_percent():
    records = [
        {"id": "a", "answer": "Jaws", "answer_aliases": ["Jaws"]},
        {"id": "b", "answer": "Spielberg", "answer_aliases": ["Spielberg", "Steven Spielberg"]},
        {"id": "c", "answer": "Alien"},  # no aliases: falls back to the answer
    ]
    # a: EM 1, F1 1; b: "spielberg steven" vs "steven spielberg" -> EM 0, F1 1; c: EM 0, F1 0
    out = score_predictions(["jaws", "Spielberg, Steven", "Aliens"], records)
    assert out == {"em": pytest.approx(100 / 3), "f1": pytest.approx(200 / 3), "n": 3}
    assert score_predictions({"c": "alien", "b": "x", "a": "y"}, records)["em"] == pytest.approx(100 / 3)


def test_score_predictions_errors():
    records = [{"id": "a", "answer": "Jaws"}, {"id": "b", "answer": "Up"}]
    with pytest.raises(ValueError, match="got 1 predictions for 2 records"):
        score_predictions(["Jaws"], records)
    with pytest.raises(ValueError, match=r"no prediction for record ids \['b'\]"):
        score_predictions({"a": "Jaws"}, records)
    with pytest.raises(ValueError, match="no records to score"):
        score_predictions([], [])


def test_paired_difference_by_hand():
    from cinephile.trivia.evaluate import paired_difference

    lines = ([{"row": "tuned", "id": i, "em": 1.0} for i in range(10)]
             + [{"row": "base", "id": i, "em": float(i < 5)} for i in range(10)])
    got = paired_difference(lines, "tuned", "base")
    assert got["diff"] == pytest.approx(50.0) and got["n"] == 10
    assert got["lo"] > 0 and got["beats"] and got["lo"] <= 50 <= got["hi"]
    even = paired_difference(lines, "base", "base")
    assert even["diff"] == 0 and not even["beats"]
    with pytest.raises(ValueError, match="no question scored in both rows"):
        paired_difference(lines, "tuned", "missing")


def test_error_analysis_sorts_failures_into_three_kinds():
    from cinephile.trivia.evaluate import error_analysis

    recs = [{"id": "a", "question": "Who?", "answer": "Bonnie Bedelia", "answer_aliases": ["Bonnie Bedelia"],
             "retrieved_context": "Holly is played by Bonnie Bedelia."},
            {"id": "b", "question": "Who?", "answer": "Ken Watanabe", "answer_aliases": ["Ken Watanabe"],
             "retrieved_context": "Saito is a businessman."},
            {"id": "c", "question": "Who?", "answer": "Jordan Nagai", "answer_aliases": ["Jordan Nagai"],
             "retrieved_context": "Russell is voiced by Jordan Nagai."},
            {"id": "d", "question": "Who?", "answer": "Ryan Gosling", "answer_aliases": ["Ryan Gosling"],
             "retrieved_context": "Ryan Gosling plays Sebastian."}]
    preds = {"a": "Bruce Willis", "b": "Tom Hardy", "c": "actor Jordan Nagai", "d": "Ryan Gosling"}
    lines = [{"row": "tuned + retrieved context", "id": i, "prediction": p,
              "em": float(p == next(r["answer"] for r in recs if r["id"] == i))} for i, p in preds.items()]
    counts, examples = error_analysis(lines, recs)
    assert counts.set_index("kind")["n"].to_dict() == {"retrieval miss": 1, "reading miss": 1, "normalisation": 1}
    assert [e["id"] for e in examples["reading miss"]] == ["a"]
    assert [e["id"] for e in examples["retrieval miss"]] == ["b"]
    assert [e["id"] for e in examples["normalisation"]] == ["c"]
    with pytest.raises(ValueError, match="have no record"):
        error_analysis(lines, recs[:1])


def test_scores_and_em_by_kind():
    records = [{"id": "a", "answer": "x", "answer_aliases": ["x"], "kind": "single"},
               {"id": "b", "answer": "y", "answer_aliases": ["y"], "kind": "comparison"},
               {"id": "c", "answer": "z", "answer_aliases": ["z"]}]  # no kind: single-hop
    got = evaluate.scores_by_kind(["x", "no", "no"], records)
    assert got["all"]["em"] == pytest.approx(100 / 3)
    assert got["single"] == {"em": 50.0, "f1": 50.0, "n": 2}
    assert got["comparison"]["em"] == 0.0 and got["comparison"]["n"] == 1
    with pytest.raises(ValueError, match="one prediction per record"):
        evaluate.scores_by_kind(["x"], records)
    lines = [{"row": row, "id": r["id"], "prediction": p} for row, preds in (("tuned", "xyz"), ("base", "x--"))
             for r, p in zip(records, preds)]
    table = evaluate.em_by_kind(lines, records)
    assert table.loc["tuned"].to_dict() == {"single": 100.0, "comparison": 100.0}
    assert table.loc["base"].to_dict() == {"single": 50.0, "comparison": 0.0}


@pytest.mark.parametrize("preds, records, message", [
    (["Jaws", "Up"], [{"id": "a", "answer": "Jaws"}, {"id": "b", "question": "q"}],
     r"score_predictions: record 1 \(id 'b'\) is missing a non-empty 'answer_aliases' or 'answer'; pass QA records"),
    (["Jaws"], [{"id": "a", "answer_aliases": [], "answer": ""}], r"record 0 \(id 'a'\) is missing a non-empty"),
    ({"a": "Jaws"}, [{"answer": "Jaws"}], r"score_predictions: record 0 is missing 'id'"),
])
def test_score_predictions_names_a_record_without_answers_or_id(preds, records, message):
    with pytest.raises(ValueError, match=message):
        score_predictions(preds, records)


def test_evaluate_qa_returns_the_lines_it_writes(monkeypatch, tmp_path):
    from cinephile import io
    from tests.helpers import tiny_llama

    class Tok:
        chat_template = None
    recs = [{"id": "a", "question": "Who directed Jaws?", "answer": "Steven Spielberg",
             "answer_aliases": ["Steven Spielberg", "Spielberg"], "retrieved_context": "Jaws is by Spielberg."},
            {"id": "b", "question": "Who scored Jaws?", "answer": "John Williams", "answer_aliases": ["John Williams"],
             "retrieved_context": "The score is by John Williams."}]
    monkeypatch.setattr(evaluate, "generate_answers", lambda model, tok, prompts, **kw: ["Spielberg", "Hans Zimmer"])
    rows = [("tuned + retrieved context", True, "retrieved_context")]
    table, lines = evaluate.evaluate_qa(tiny_llama(), Tok(), recs, "plain", rows=rows, progress=False,
                                        predictions_path=tmp_path / "p.jsonl")
    assert table.to_dict("records") == [{"row": rows[0][0], "em": 50.0, "f1": 50.0, "n": 2}]
    assert [(x["id"], x["prediction"], x["em"]) for x in lines] == [("a", "Spielberg", 1.0), ("b", "Hans Zimmer", 0.0)]
    assert lines == io.read_jsonl(tmp_path / "p.jsonl")


def test_evaluate_qa_scores_the_answer_after_the_quote_and_keeps_the_reply(monkeypatch, caplog):
    from cinephile.trivia.reader import REPLY_TOKENS
    from tests.helpers import tiny_llama

    class Tok:
        chat_template = None
    recs = [{"id": "a", "question": "Who directed Jaws?", "answer": "Steven Spielberg",
             "answer_aliases": ["Steven Spielberg"], "retrieved_context": "Jaws is by Steven Spielberg."},
            {"id": "b", "question": "Who scored Jaws?", "answer": "John Williams", "answer_aliases": ["John Williams"],
             "retrieved_context": "The score is by John Williams."}]
    seen = {}

    def fake_generate(model, tok, prompts, **kw):
        seen.update(kw, prompts=prompts)
        return ['Evidence: "Jaws is by Steven Spielberg." Answer: Steven Spielberg', 'Evidence: "The score is by']
    monkeypatch.setattr(evaluate, "generate_answers", fake_generate)
    rows = [("tuned + retrieved context", True, "retrieved_context")]
    table, lines = evaluate.evaluate_qa(tiny_llama(), Tok(), recs, "plain", rows=rows, progress=False,
                                        answer_format="quote")
    assert seen["max_new_tokens"] == REPLY_TOKENS["quote"] and "Quote the words" in seen["prompts"][0]
    assert [x["prediction"] for x in lines] == ["Steven Spielberg", 'Evidence: "The score is by']
    assert lines[1]["generation"] == 'Evidence: "The score is by' and table["em"][0] == 50.0
    assert "1 of 2 replies hold no 'Answer:'" in caplog.text
    with pytest.raises(ValueError, match="span-constrained rows"):
        evaluate.evaluate_qa(tiny_llama(), Tok(), recs, "plain", rows=[evaluate.SPAN_ROW], answer_format="quote")
