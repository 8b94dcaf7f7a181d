"""Film blocks of the embedded trivia sample, the film each question is about, facts and comparison questions."""

import pytest

from cinephile.trivia import films
from cinephile.trivia.films import BLOCK_START, film_blocks, film_of, paragraphs
from cinephile.trivia.splits import film_disjoint_split, split_films
from tests.conftest import ROOT


def test_sample_contexts_are_film_blocks_and_every_question_has_one_film(trivia_sample):
    blocks = film_blocks(trivia_sample)
    assert len(blocks) == 64 and all(len(ps) == 4 for ps in blocks.values())
    assert "Dr. Strangelove" in blocks  # "Dr. Strangelove, whose full title is ..., is a 1964 ..."
    films = {r["id"]: film_of(r, blocks) for r in trivia_sample}
    groups = {}
    for rid, film in films.items():
        groups.setdefault(rid.split("-")[0], set()).add(film)
    assert all(len(f) == 1 for f in groups.values())  # the five questions of a group share their film
    assert films["mt003-1"] == "The Wizard of Oz"  # the second block of a context that opens with another film
    for r in trivia_sample:
        assert blocks[films[r["id"]]][0] in r["context"]  # the question's film is in its own context


def test_split_and_block_errors():
    with pytest.raises(ValueError, match="at least 2 films"):
        split_films(["Jaws"])
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\)"):
        split_films(["Jaws", "Alien"], val_fraction=1.0)
    with pytest.raises(ValueError, match="does not open with a film block"):
        film_blocks([{"id": "x", "context": "Some text without a title sentence."}])


def test_film_facts_are_stated_by_the_passages(trivia_sample):
    from cinephile.trivia.films import read_facts

    blocks = film_blocks(trivia_sample)
    facts = read_facts(ROOT / "Data" / "film_facts.csv")
    assert set(facts) == set(blocks)
    for film, fact in facts.items():
        text = " ".join(blocks[film])
        assert BLOCK_START.match(blocks[film][0])["year"] == str(fact["year"])
        assert fact["director"].lower() in text.lower(), film


def test_comparison_questions_stay_on_one_side_and_are_right(trivia_sample):
    from cinephile.trivia.films import comparison_records, read_facts

    blocks, facts = film_blocks(trivia_sample), read_facts(ROOT / "Data" / "film_facts.csv")
    train, val = film_disjoint_split(trivia_sample, seed=0)
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


def test_title_of_names_the_film_a_chunk_comes_from(trivia_sample):
    from cinephile.trivia.films import title_of

    blocks = film_blocks(trivia_sample)
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




def test_bridge_questions_reach_the_film_through_other_facts_and_keep_its_context():
    from cinephile.trivia.matching import covers

    facts = {"Casablanca": {"year": 1942, "director": "Michael Curtiz"},
             "Jaws": {"year": 1975, "director": "Steven Spielberg"},
             "Twin A": {"year": 1980, "director": "Same Person"}, "Twin B": {"year": 1980, "director": "Same Person"}}
    ctx = ("Casablanca is a 1942 film directed by Michael Curtiz. Humphrey Bogart plays Rick Blaine.\\n\\n"
           "The song As Time Goes By is played by Sam.")
    records = [{"id": "c1", "question": "Which actor plays Rick Blaine in Casablanca?", "answer": "Humphrey Bogart",
                "answer_aliases": ["Humphrey Bogart", "Bogart"], "film": "Casablanca", "context": ctx},
               {"id": "c2", "question": "What song is Sam asked to play in Casablanca?", "answer": "As Time Goes By",
                "answer_aliases": ["As Time Goes By"], "film": "Casablanca", "context": ctx},
               {"id": "t1", "question": "Who directed Twin A?", "answer": "Same Person", "answer_aliases": ["Same Person"],
                "film": "Twin A", "context": "Twin A is a 1980 film directed by Same Person."}]
    got = {r["id"]: r for r in films.bridge_records(records, facts, prefix="br-")}
    assert got["br-c1-d"]["question"] == "Which actor plays Rick Blaine in the 1942 film directed by Michael Curtiz?"
    assert got["br-c1-d"]["answer_aliases"] == ["Humphrey Bogart", "Bogart"]
    assert got["br-c1-p"]["question"] == "Who directed the film in which Humphrey Bogart plays Rick Blaine?"
    assert got["br-c1-p"]["answer"] == "Michael Curtiz" and got["br-c1-y"]["answer"] == "1942"
    assert got["br-c2-d"]["question"] == "What song is Sam asked to play in the 1942 film directed by Michael Curtiz?"
    assert "br-t1-d" not in got  # "the 1980 film directed by Same Person" names two films
    assert all(r["kind"] == "bridge" and r["context"] == ctx and covers(r, ctx) for r in got.values())
