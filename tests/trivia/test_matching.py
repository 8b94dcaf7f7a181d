"""Answer matching: does a text hold an answer alias, or every piece of evidence a question needs."""

from cinephile.trivia.matching import answer_in_text, covers, evidence_groups, normalize_answer


def test_answer_in_text_normalises_and_uses_word_boundaries():
    assert answer_in_text(["Up"], "Pixar's Up (2009) is a film.")
    assert not answer_in_text(["Up"], "The balloons lift the house upward.")
    assert answer_in_text(["Nope", "The Godfather"], "Godfather, Part II was released")
    assert not answer_in_text(["", "the"], "the film")  # aliases that normalise to nothing never match


def test_normalize_answer_drops_case_punctuation_articles_and_extra_space():
    assert normalize_answer("  The  Godfather, Part II! ") == "godfather part ii"
    assert normalize_answer("‘Jaws’") == "jaws" and normalize_answer("An Affair") == "affair"


def test_covers_needs_every_evidence_group_and_any_alias_within_one():
    rec = {"answer": "Alien", "evidence": ["1975", "1979"]}
    assert evidence_groups(rec) == [["1975"], ["1979"]]
    assert covers(rec, "Jaws (1975) and Alien (1979)") and not covers(rec, "Jaws (1975)")
    single = {"answer": "x", "answer_aliases": ["Ridley Scott", "Scott"]}
    assert evidence_groups(single) == [["Ridley Scott", "Scott"]]
    assert covers(single, "directed by Scott.") and not covers(single, "directed by Scotty")
