import dataclasses
import json

import pytest

from cinephile.trivia import films, pipeline, questions
from cinephile.trivia.config import TriviaConfig
from cinephile.trivia.questions import attach, check_pair, parse_pairs, write_questions

PARAGRAPH = ("Casablanca is a 1942 romantic drama directed by Michael Curtiz. Humphrey Bogart plays Rick Blaine, "
             "an American nightclub owner in Morocco.")


def test_parse_pairs_reads_numbered_and_plain_layouts_and_drops_a_final_period():
    reply = ("Q1: Who directed Casablanca?\nA1: Michael Curtiz.\n\nQ: Which actor plays Rick Blaine?\n"
             "A: \"Humphrey Bogart\"\nQ: a question without an answer line?\n")
    assert parse_pairs(reply) == [("Who directed Casablanca?", "Michael Curtiz"),
                                  ("Which actor plays Rick Blaine?", "Humphrey Bogart")]
    assert parse_pairs("no pairs here") == []


@pytest.mark.parametrize("question, answer, reason", [
    ("Who directed Casablanca?", "Michael Curtiz", None),
    ("Who directed Casablanca?", "Orson Welles", "not a span"),
    ("What kind of picture is Casablanca?", "1942 romantic drama directed by Michael Curtiz", "too long"),
    ("Did Michael Curtiz direct Casablanca?", "Michael Curtiz", "answer in question"),
    ("Who directed this film?", "Michael Curtiz", "vague"),
    ("Name the director of Casablanca", "Michael Curtiz", "vague"),
    ("Who plays Rick Blaine in the film?", "Humphrey Bogart", "vague"),
    ("In which year was Casablanca released?", "", "not a span"),
])
def test_check_pair_keeps_only_short_spans_of_the_paragraph_asked_about_by_name(question, answer, reason):
    assert check_pair(question, answer, PARAGRAPH, "Casablanca") == reason


def test_write_questions_keeps_pairs_that_pass_the_checks_and_are_answered_back(monkeypatch):
    blocks = {"Casablanca": [PARAGRAPH], "Rocky": ["Rocky is a 1976 sports drama directed by John G. Avildsen."]}
    replies = {
        "Casablanca": "Q: Who directed Casablanca?\nA: Michael Curtiz\nQ: Who directed this film?\nA: Michael Curtiz\n"
                      "Q: Which actor plays Rick Blaine in Casablanca?\nA: Humphrey Bogart\n"
                      "Q: Who directed Casablanca?\nA: Michael Curtiz",
        "Rocky": "Q: Who directed Rocky?\nA: John G. Avildsen\nQ: In what year was Rocky released?\nA: 1977",
    }
    calls = []

    def fake_generate(model, tokenizer, prompts, **kw):
        calls.append(kw["max_new_tokens"])
        if len(calls) == 1:  # the writing pass: one prompt per paragraph, in film order
            return [replies["Casablanca" if "Casablanca is" in p else "Rocky"] for p in prompts]
        # answering back: right except for Bogart's question
        return ["Mr. Bogart" if "Rick" in p else "Michael Curtiz." if "Casablanca" in p else "John G. Avildsen"
                for p in prompts]

    monkeypatch.setattr(questions, "generate_answers", fake_generate)
    monkeypatch.setattr(questions, "write_prompt", lambda tok, p, n, title: p)
    monkeypatch.setattr("cinephile.trivia.zero_shot.prompt", lambda tok, q, c: q)
    out = write_questions(None, None, blocks, ["Casablanca", "Rocky"])
    assert [(r["film"], r["question"], r["answer"]) for r in out.records] == [
        ("Casablanca", "Who directed Casablanca?", "Michael Curtiz"), ("Rocky", "Who directed Rocky?", "John G. Avildsen")]
    report = out.report()
    assert report["written"] == 6 and report["kept"] == 2 and report["paragraphs"] == 2
    assert report["dropped"] == {"not a span": 1, "too long": 0, "answer in question": 0, "vague": 1, "duplicate": 1,
                                 "answered back otherwise": 1}
    assert sum(report["dropped"].values()) + report["kept"] == report["written"]
    assert all(r["kind"] == "generated" and r["answer_aliases"] == [r["answer"]] for r in out.records)
    with pytest.raises(ValueError, match="no paragraphs"):
        write_questions(None, None, blocks, ["Jaws"])


def test_attach_puts_each_question_on_its_films_side_with_that_sides_context(trivia_sample):
    cfg = TriviaConfig()
    train, val = pipeline.load_and_split(cfg).train_raw, pipeline.load_and_split(cfg).val_raw
    train_films, val_films = {r["film"] for r in train}, {r["film"] for r in val}
    written = [{"id": f"gen-{i}", "question": f"Q{i}?", "answer": "x", "answer_aliases": ["x"], "film": f}
               for i, f in enumerate(sorted(train_films)[:3] + sorted(val_films)[:2] + ["Not A Film"])]
    to_train = attach(written, train, limit=None, prefix="train-")
    to_val = attach(written, val, limit=None, prefix="val-")
    assert [r["film"] for r in to_train] == sorted(train_films)[:3]
    assert [r["film"] for r in to_val] == sorted(val_films)[:2]
    blocks = films.film_blocks(trivia_sample)
    for side, films_there in ((to_train, train_films), (to_val, val_films)):
        for r in side:  # the context is the film's block among distractors of the same side only
            titles = {t for t in blocks if blocks[t][0] in r["context"]}
            assert r["film"] in titles and titles <= films_there
    assert len(attach(written, train, limit=2, prefix="t-")) == 2
    assert attach(written, train, limit=2, prefix="t-") == attach(written, train, limit=2, prefix="t-")
    assert attach(written, train, limit=0, prefix="t-") == []


def test_load_and_split_adds_written_questions_or_names_the_missing_file(tmp_path):
    cfg = TriviaConfig()
    split = pipeline.load_and_split(cfg)
    film = split.train_raw[0]["film"]
    path = tmp_path / "written.jsonl"
    path.write_text(json.dumps({"id": "gen-1", "question": "Who?", "answer": "x", "answer_aliases": ["x"],
                                "film": film}) + "\n")
    more = pipeline.load_and_split(dataclasses.replace(cfg, generated_questions=str(path), generated=(5, 5)))
    assert len(more.train_raw) == len(split.train_raw) + 1 and len(more.val_raw) == len(split.val_raw)
    assert more.train_raw[-1]["kind"] == "generated" and more.train_raw[-1]["id"] == "train-gen-1"
    with pytest.raises(FileNotFoundError, match="python -m cinephile.trivia.questions"):
        pipeline.load_and_split(dataclasses.replace(cfg, generated_questions=str(tmp_path / "none.jsonl"),
                                                    generated=(5, 0)))
