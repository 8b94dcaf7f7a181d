"""Splits of the trivia questions: by question id, and film-disjoint with comparison questions."""

import pytest

from cinephile.trivia.films import BLOCK_START, film_blocks, paragraphs
from cinephile.trivia.splits import film_disjoint_split, split_train_val
from tests.conftest import ROOT


def test_split_train_val_is_stable():
    recs = [{"id": f"q{i}"} for i in range(2000)]
    train, val = split_train_val(recs, val_fraction=0.2, seed=0)
    assert len(train) + len(val) == 2000 and not {r["id"] for r in train} & {r["id"] for r in val}
    assert 0.17 < len(val) / 2000 < 0.23
    assert val == [r for r in recs if r in val]  # input order kept
    val_ids = {r["id"] for r in val}
    _, val_rev = split_train_val(recs[::-1], val_fraction=0.2, seed=0)
    assert {r["id"] for r in val_rev} == val_ids
    _, val_more = split_train_val(recs + [{"id": f"new{i}"} for i in range(100)], val_fraction=0.2)
    assert {r["id"] for r in val_more} & val_ids == val_ids
    assert {r["id"] for r in val_more} - val_ids <= {f"new{i}" for i in range(100)}
    _, val_seed = split_train_val(recs, val_fraction=0.2, seed=1)
    assert {r["id"] for r in val_seed} != val_ids


def test_split_train_val_errors():
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\), got 1.0"):
        split_train_val([{"id": "a"}], val_fraction=1.0)
    with pytest.raises(ValueError, match="duplicate ids"):
        split_train_val([{"id": "a"}, {"id": "a"}])


def test_film_disjoint_split_leaks_no_validation_passage(trivia_sample):
    train, val = film_disjoint_split(trivia_sample, val_fraction=0.2, seed=0)
    assert len(train) + len(val) == len(trivia_sample)
    train_films, val_films = {r["film"] for r in train}, {r["film"] for r in val}
    assert not train_films & val_films and 10 <= len(val_films) <= 16
    blocks = film_blocks(trivia_sample)
    val_paragraphs = {p for f in val_films for p in blocks[f]}
    train_paragraphs = {p for f in train_films for p in blocks[f]}
    for r in train:
        assert not set(paragraphs(r["context"])) & val_paragraphs
    for r in val:
        assert not set(paragraphs(r["context"])) & train_paragraphs
    originals = {r["id"]: r for r in trivia_sample}
    for r in train + val:
        assert blocks[r["film"]][0] in r["context"]
        starts = lambda ctx: sum(1 for p in paragraphs(ctx) if BLOCK_START.match(p))  # noqa: E731
        assert starts(r["context"]) == starts(originals[r["id"]]["context"])  # as many distractors as before
    assert film_disjoint_split(trivia_sample, seed=0) == (train, val)
    assert film_disjoint_split(trivia_sample, seed=1)[1] != val


def test_comparison_contexts_state_their_evidence_and_the_split_keeps_pairs_on_one_side(trivia_sample):
    from cinephile.trivia.films import read_facts
    from cinephile.trivia.splits import film_split_with_comparisons
    from cinephile.trivia.matching import covers

    facts = read_facts(ROOT / "Data" / "film_facts.csv")
    train, val = film_split_with_comparisons(trivia_sample, facts, train_pairs=36, val_pairs=8, seed=0)
    comp = {side: [r for r in recs if r["kind"] == "comparison"] for side, recs in (("train", train), ("val", val))}
    assert len(comp["train"]) + len(comp["val"]) >= 150
    assert len({tuple(r["films"]) for r in comp["train"] + comp["val"]}) >= 40
    assert len(train) + len(val) == len(trivia_sample) + len(comp["train"]) + len(comp["val"])
    val_films = {r["film"] for r in val if r["kind"] == "single"}
    blocks = film_blocks(trivia_sample)
    val_paragraphs = {p for f in val_films for p in blocks[f]}
    for r in comp["train"]:
        assert not set(r["films"]) & val_films and not set(paragraphs(r["context"])) & val_paragraphs
    for r in comp["val"]:
        assert set(r["films"]) <= val_films
    for r in comp["train"] + comp["val"]:
        assert covers(r, r["context"]), r["id"]  # the context states every evidence string
        assert r["answer"] in r["answer_aliases"]


@pytest.mark.parametrize("key, message", [
    ("context", r"film_disjoint_split: record 1 \(id 'mt001-2'\) is missing 'context'; load the records with "
                r"data.load_qa_csv\(\)"),
    ("question", r"film_disjoint_split: record 1 \(id 'mt001-2'\) is missing 'question'"),
    ("id", r"film_disjoint_split: record 1 is missing 'id'"),
])
def test_film_split_names_a_record_without_a_required_key(trivia_sample, key, message):
    from cinephile.trivia.splits import film_split_with_comparisons

    recs = [dict(r) for r in trivia_sample[:10]]
    del recs[1][key]
    with pytest.raises(ValueError, match=message):
        film_disjoint_split(recs)
    with pytest.raises(ValueError, match=message):
        film_split_with_comparisons(recs, {})


def test_bridge_questions_are_sampled_per_side_and_never_cross_the_split(trivia_sample):
    from cinephile.trivia.films import read_facts
    from cinephile.trivia.splits import film_split_with_comparisons

    facts = read_facts(ROOT / "Data" / "film_facts.csv")
    train, val = film_split_with_comparisons(trivia_sample, facts, train_pairs=2, val_pairs=1, bridges=(7, 3))
    bridges = [[r for r in side if r["kind"] == "bridge"] for side in (train, val)]
    assert [len(b) for b in bridges] == [7, 3]
    val_films = {r["film"] for r in val if r["kind"] == "single"}
    assert all(r["film"] not in val_films for r in bridges[0]) and all(r["film"] in val_films for r in bridges[1])
    again = film_split_with_comparisons(trivia_sample, facts, train_pairs=2, val_pairs=1, bridges=(7, 3))[0]
    assert [r["id"] for r in again if r["kind"] == "bridge"] == [r["id"] for r in bridges[0]]  # seeded
    none = film_split_with_comparisons(trivia_sample, facts, train_pairs=2, val_pairs=1)[0]
    assert not any(r["kind"] == "bridge" for r in none)


def test_similar_films_ranks_the_films_whose_passages_share_the_question_words():
    from cinephile.trivia.films import similar_films

    blocks = {"Alpha": ["Alpha is a 1990 film about a lighthouse keeper on a stormy island."],
              "Beta": ["Beta is a 1991 film about a lighthouse and a stormy island rescue."],
              "Gamma": ["Gamma is a 1992 comedy set in a bakery in Paris."],
              "Delta": ["Delta is a 1993 western with horses and a sheriff."]}
    picked = similar_films(["Who keeps the lighthouse on the stormy island in Alpha?", "Which bakery in Paris?"],
                           [{"Alpha"}, set()], list(blocks), blocks, 2)
    assert picked[0][0] == "Beta" and "Alpha" not in picked[0] and len(picked[0]) == 2
    assert picked[1][0] == "Gamma"
    assert similar_films(["q"], [set()], list(blocks), blocks, 0) == [[]]


def test_similar_distractors_fill_every_context_from_its_own_side(trivia_sample):
    from cinephile.trivia.films import read_facts
    from cinephile.trivia.splits import film_split_with_comparisons

    facts = read_facts(ROOT / "Data" / "film_facts.csv")
    train, val = film_split_with_comparisons(trivia_sample, facts, train_pairs=6, val_pairs=3, bridges=(4, 2),
                                             similar_distractors=3)
    random_train, random_val = film_split_with_comparisons(trivia_sample, facts, train_pairs=6, val_pairs=3,
                                                           bridges=(4, 2))
    def questions(recs):
        return [(r["id"], r["question"], r["answer"], r["film"]) for r in recs]
    assert questions(train + val) == questions(random_train + random_val)  # only the contexts differ
    assert sum(r["context"] != q["context"] for r, q in zip(train, random_train)) > len(train) // 2
    blocks = film_blocks(trivia_sample)
    starts = lambda ctx: [p for p in paragraphs(ctx) if BLOCK_START.match(p)]  # noqa: E731
    for r in train + val:
        own = r.get("films") or [r["film"]]
        assert len(starts(r["context"])) == len(own) + 3, r["id"]  # own film(s) and three distractors
        assert all(blocks[f][0] in r["context"] for f in own)
    train_paragraphs = {p for r in train for p in paragraphs(r["context"])}
    assert not train_paragraphs & {p for r in val for p in paragraphs(r["context"])}  # no passage on both sides
    # per distractor block, the chosen films share more of the question's words than the sample's random ones
    def overlap(recs):
        shared, n = 0, 0
        for r in recs:
            for title in {BLOCK_START.match(p)["title"] for p in starts(r["context"])} - {r["film"]}:
                shared += len({w for w in r["question"].lower().split() if len(w) > 3}
                              & set(" ".join(blocks[title]).lower().split()))
                n += 1
        return shared / n
    single = [[r for r in side if r["kind"] == "single"] for side in (train, random_train)]
    assert overlap(single[0]) > 1.5 * overlap(single[1]), (overlap(single[0]), overlap(single[1]))
    assert film_split_with_comparisons(trivia_sample, facts, train_pairs=6, val_pairs=3, bridges=(4, 2),
                                       similar_distractors=3) == (train, val)
    with pytest.raises(ValueError, match="must be 0 or more, got -1"):
        film_split_with_comparisons(trivia_sample, facts, train_pairs=6, val_pairs=3, similar_distractors=-1)
