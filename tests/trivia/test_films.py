"""Film blocks of the embedded sample and the film-disjoint split (no validation film leaks into training)."""

import pytest

from cinephile.trivia.films import BLOCK_START, film_blocks, film_of, paragraphs
from cinephile.trivia.splits import film_disjoint_split, split_films
from cinephile.trivia.data import load_qa_csv
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def sample():
    return load_qa_csv(ROOT / "Data" / "movie_trivia_qa.csv")[0]


def test_sample_contexts_are_film_blocks_and_every_question_has_one_film(sample):
    blocks = film_blocks(sample)
    assert len(blocks) == 64 and all(len(ps) == 4 for ps in blocks.values())
    assert "Dr. Strangelove" in blocks  # "Dr. Strangelove, whose full title is ..., is a 1964 ..."
    films = {r["id"]: film_of(r, blocks) for r in sample}
    groups = {}
    for rid, film in films.items():
        groups.setdefault(rid.split("-")[0], set()).add(film)
    assert all(len(f) == 1 for f in groups.values())  # the five questions of a group share their film
    assert films["mt003-1"] == "The Wizard of Oz"  # the second block of a context that opens with another film
    for r in sample:
        assert blocks[films[r["id"]]][0] in r["context"]  # the question's film is in its own context


def test_film_disjoint_split_leaks_no_validation_passage(sample):
    train, val = film_disjoint_split(sample, val_fraction=0.2, seed=0)
    assert len(train) + len(val) == len(sample)
    train_films, val_films = {r["film"] for r in train}, {r["film"] for r in val}
    assert not train_films & val_films and 10 <= len(val_films) <= 16
    blocks = film_blocks(sample)
    val_paragraphs = {p for f in val_films for p in blocks[f]}
    train_paragraphs = {p for f in train_films for p in blocks[f]}
    for r in train:
        assert not set(paragraphs(r["context"])) & val_paragraphs
    for r in val:
        assert not set(paragraphs(r["context"])) & train_paragraphs
    originals = {r["id"]: r for r in sample}
    for r in train + val:
        assert blocks[r["film"]][0] in r["context"]
        starts = lambda ctx: sum(1 for p in paragraphs(ctx) if BLOCK_START.match(p))  # noqa: E731
        assert starts(r["context"]) == starts(originals[r["id"]]["context"])  # as many distractors as before
    assert film_disjoint_split(sample, seed=0) == (train, val)
    assert film_disjoint_split(sample, seed=1)[1] != val


def test_split_and_block_errors():
    with pytest.raises(ValueError, match="at least 2 films"):
        split_films(["Jaws"])
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\)"):
        split_films(["Jaws", "Alien"], val_fraction=1.0)
    with pytest.raises(ValueError, match="does not open with a film block"):
        film_blocks([{"id": "x", "context": "Some text without a title sentence."}])


def test_film_facts_are_stated_by_the_passages(sample):
    from cinephile.trivia.films import read_facts

    blocks = film_blocks(sample)
    facts = read_facts(ROOT / "Data" / "film_facts.csv")
    assert set(facts) == set(blocks)
    for film, fact in facts.items():
        text = " ".join(blocks[film])
        assert BLOCK_START.match(blocks[film][0])["year"] == str(fact["year"])
        assert fact["director"].lower() in text.lower(), film


def test_comparison_questions_stay_on_one_side_and_are_right(sample):
    from cinephile.trivia.films import comparison_records, read_facts

    blocks, facts = film_blocks(sample), read_facts(ROOT / "Data" / "film_facts.csv")
    train, val = film_disjoint_split(sample, seed=0)
    train_films = sorted({r["film"] for r in train})
    recs = comparison_records(train_films, blocks, facts, n_pairs=30, prefix="cmp-t", seed=0)
    pairs = {tuple(sorted(r["films"])) for r in recs}
    assert len(pairs) == 30 and len(recs) >= 4 * 30 - 10
    assert {r["answer"] for r in recs if "same person" in r["question"]} == {"yes", "no"}
    val_paragraphs = {p for f in {r["film"] for r in val} for p in blocks[f]}
    for r in recs:
        a, b = r["films"]
        assert set(r["films"]) <= set(train_films)
        assert blocks[a][0] in r["context"] and blocks[b][0] in r["context"]
        assert not set(paragraphs(r["context"])) & val_paragraphs
        if r["question"].startswith("Which film came out first"):
            assert r["answer"] == min(r["films"], key=lambda f: facts[f]["year"])
        if r["question"].startswith("How many years apart"):
            assert r["answer"] == str(abs(facts[a]["year"] - facts[b]["year"]))
    assert len({r["id"] for r in recs}) == len(recs)


def test_comparison_contexts_state_their_evidence_and_the_split_keeps_pairs_on_one_side(sample):
    from cinephile.trivia.films import read_facts
    from cinephile.trivia.splits import film_split_with_comparisons
    from cinephile.trivia.matching import covers

    facts = read_facts(ROOT / "Data" / "film_facts.csv")
    train, val = film_split_with_comparisons(sample, facts, train_pairs=36, val_pairs=8, seed=0)
    comp = {side: [r for r in recs if r["kind"] == "comparison"] for side, recs in (("train", train), ("val", val))}
    assert len(comp["train"]) + len(comp["val"]) >= 150
    assert len({tuple(r["films"]) for r in comp["train"] + comp["val"]}) >= 40
    assert len(train) + len(val) == len(sample) + len(comp["train"]) + len(comp["val"])
    val_films = {r["film"] for r in val if r["kind"] == "single"}
    blocks = film_blocks(sample)
    val_paragraphs = {p for f in val_films for p in blocks[f]}
    for r in comp["train"]:
        assert not set(r["films"]) & val_films and not set(paragraphs(r["context"])) & val_paragraphs
    for r in comp["val"]:
        assert set(r["films"]) <= val_films
    for r in comp["train"] + comp["val"]:
        assert covers(r, r["context"]), r["id"]  # the context states every evidence string
        assert r["answer"] in r["answer_aliases"]


def test_title_of_names_the_film_a_chunk_comes_from(sample):
    from cinephile.trivia.films import title_of

    blocks = film_blocks(sample)
    assert title_of(blocks["Die Hard"][2][:150], blocks) == "Die Hard"
    assert title_of("A sentence from no film at all.", blocks) is None


def test_read_facts_refuses_a_film_listed_twice(tmp_path):
    from cinephile.trivia.films import read_facts

    path = tmp_path / "facts.csv"
    path.write_text("film,year,director\nJaws,1975,Steven Spielberg\nAlien,1979,Ridley Scott\n"
                    "Jaws,1957,Someone Else\n")
    with pytest.raises(ValueError, match=r"facts.csv: film 'Jaws' is listed on lines 2 and 4 \(1 film\(s\) listed "
                                         r"more than once\); keep one row per film"):
        read_facts(path)


@pytest.mark.parametrize("key, message", [
    ("context", r"film_disjoint_split: record 1 \(id 'mt001-2'\) is missing 'context'; load the records with "
                r"data.load_qa_csv\(\)"),
    ("question", r"film_disjoint_split: record 1 \(id 'mt001-2'\) is missing 'question'"),
    ("id", r"film_disjoint_split: record 1 is missing 'id'"),
])
def test_film_split_names_a_record_without_a_required_key(sample, key, message):
    from cinephile.trivia.splits import film_split_with_comparisons

    recs = [dict(r) for r in sample[:10]]
    del recs[1][key]
    with pytest.raises(ValueError, match=message):
        film_disjoint_split(recs)
    with pytest.raises(ValueError, match=message):
        film_split_with_comparisons(recs, {})
