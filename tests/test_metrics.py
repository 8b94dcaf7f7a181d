"""EM / F1 with the official TriviaQA normalisation, on cases worked out by hand."""

import pytest

from cinephile.metrics import exact_match, f1_score, normalize_answer, score_predictions


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
