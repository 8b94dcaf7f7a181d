"""Trivia data: QA CSV loading and validation, and the TriviaQA film-question builder."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from cinephile.trivia.data import build_triviaqa_csv, is_movie_question, load_qa_csv, QA_COLUMNS


@pytest.fixture(scope="module")
def TRIVIA(shared_data):
    return shared_data / "triviaqa_rc_sample"
SAMPLE_QUESTIONS = {
    "tc_3": "Where in England was Dame Judi Dench born?",
    "tc_8": "From which country did Angola achieve independence in 1975?",
    "tc_9": "Which city does David Soul come from?",
    "tc_10": "Who won Super Bowl XX?",
    "tc_33": "Which Lloyd Webber musical premiered in the US on 10th December 1993?",
    "tc_40": "Who was the next British Prime Minister after Arthur Balfour?",
}


def write_csv(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def row(i, **kw):
    base = {"id": str(i), "question": f"Who directed film {i}?", "answer": f"Director {i}",
            "answer_aliases": json.dumps([f"Director {i}", f"D. {i}"]),
            "context": f"Film {i} was made by Director {i}."}
    return {**base, **kw}


# ---------------------------------------------------------------- load_qa_csv

def test_load_real_hotpotqa_csv(shared_data):
    records, report = load_qa_csv(shared_data / "movie_qa" / "hotpotqa_movie_dev.csv")
    assert report == {"rows": 53, "kept": 53, "skipped": {}}
    assert len({r["id"] for r in records}) == 53
    for r in records:
        assert set(QA_COLUMNS) | {"supporting_titles"} <= r.keys()
        assert r["answer_aliases"][0] == r["answer"] and isinstance(r["answer_aliases"], list)
        assert r["question"] == r["question"].strip() and r["context"]


def test_records_keep_extras_and_dedupe_aliases(tmp_path):
    path = write_csv(tmp_path / "qa.csv", [
        row(1, answer_aliases=json.dumps(["D. 1", "Director 1", "D. 1", "Dir 1"]), supporting_titles="A|B"),
        row(2, answer_aliases=""),
    ])
    records, _ = load_qa_csv(path)
    assert records[0]["answer_aliases"] == ["Director 1", "D. 1", "Dir 1"]
    assert records[0]["supporting_titles"] == "A|B"
    assert records[1]["answer_aliases"] == ["Director 2"]
    assert all(isinstance(r["id"], str) for r in records)


def test_answers_that_look_like_missing_values_are_kept(tmp_path):
    path = write_csv(tmp_path / "qa.csv", [row(1, answer="None", answer_aliases=json.dumps(["None"])), row(2)])
    records, report = load_qa_csv(path)
    assert report["kept"] == 2 and records[0]["answer"] == "None"


def test_bad_rows_are_skipped_and_counted(tmp_path, caplog):
    path = write_csv(tmp_path / "qa.csv", [
        row(1), row(2, answer=np.nan), row(3, context="   "), row(4, question=""),
        row(5, answer_aliases="not json"), row(6, answer_aliases=json.dumps({"a": 1})),
        row(7, answer_aliases=json.dumps(["ok", 3])), row(8),
    ])
    records, report = load_qa_csv(path)
    assert [r["id"] for r in records] == ["1", "8"]
    assert report == {"rows": 8, "kept": 2, "skipped": {
        "empty answer": 1, "empty context": 1, "empty question": 1,
        "bad answer_aliases (not a JSON list of strings)": 3}}
    assert "skipped 6 of 8 rows" in caplog.text


@pytest.mark.parametrize("bad, reason", [
    ({"answer": np.nan}, "empty answer"),
    ({"context": ""}, "empty context"),
    ({"answer_aliases": "[oops"}, "bad answer_aliases"),
])
def test_strict_raises_with_row_id_and_reason(tmp_path, bad, reason):
    path = write_csv(tmp_path / "qa.csv", [row(1), row(2, **bad)])
    with pytest.raises(ValueError, match=f"row id '2' has {reason}"):
        load_qa_csv(path, strict=True)


def test_missing_columns(tmp_path):
    path = write_csv(tmp_path / "qa.csv", [{k: v for k, v in row(1).items() if k not in ("answer", "context")}])
    with pytest.raises(ValueError, match=r"missing columns \['answer', 'context'\]; expected columns: \['id'"):
        load_qa_csv(path)


def test_duplicate_ids(tmp_path):
    path = write_csv(tmp_path / "qa.csv", [row(1), row(2), row(1), row(2), row(3)])
    with pytest.raises(ValueError, match=r"2 duplicate ids, e.g. \['1', '2'\]"):
        load_qa_csv(path)


def test_duplicate_ids_are_found_after_stripping_whitespace(tmp_path):
    path = write_csv(tmp_path / "qa.csv", [row(1, id="q1"), row(2, id="q1 "), row(3, id="q3")])
    with pytest.raises(ValueError, match=r"1 duplicate ids, e.g. \['q1'\]"):
        load_qa_csv(path)


def test_missing_file_and_unparsable_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_qa_csv(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"id,question\n\xff\xfe,\x00\"unterminated\n")
    with pytest.raises(ValueError, match="cannot parse .*bad.csv"):
        load_qa_csv(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="cannot parse .*empty.csv"):
        load_qa_csv(empty)


def test_no_rows_left(tmp_path):
    path = write_csv(tmp_path / "qa.csv", [row(1, answer=""), row(2, context="")])
    with pytest.raises(ValueError, match="no usable rows"):
        load_qa_csv(path)


# ---------------------------------------------------------------- JSONL

@pytest.mark.parametrize("question", [
    "Who directed the 1975 film Jaws?",
    "Which 1939 movie featured a girl called Dorothy?",
    "Which actress won an Oscar for Annie Hall?",
    "Who won the Academy Award for Best Actor in 1994?",
    "Who played James Bond in Dr. No?",
    "Which director made Raiders of the Lost Ark?",
    "Who starred as Rocky Balboa?",
    "Who wrote the screenplay for Chinatown?",
    "Which Hollywood studio released Casablanca?",
    "Who portrayed Gandhi in 1982?",
])
def test_is_movie_question_positive(question):
    assert is_movie_question(question)


@pytest.mark.parametrize("question", [
    *SAMPLE_QUESTIONS.values(),
    "Which team played Chelsea in the 1970 FA Cup final?",
    "Who played in goal for England in 1966?",
    "Who wrote The Importance of Being Earnest, Oscar Wilde or Shaw?",
    "Who was the first Director-General of the BBC?",
    "In which constellation is the star Betelgeuse?",
    "Which instrument does a cellist play?",
])
def test_is_movie_question_negative(question):
    assert not is_movie_question(question)


def test_is_movie_question_uses_answer_entity_name():
    assert is_movie_question("Which 1997 picture won eleven awards?", "Titanic (1997 film)")
    assert is_movie_question("Who was born in Concord, California?", "Tom Hanks (actor)")
    assert not is_movie_question("Which ship sank in 1912?", "RMS Titanic")


# ---------------------------------------------------------------- TriviaQA builder

def test_build_triviaqa_all_questions(tmp_path, TRIVIA):
    out = tmp_path / "trivia.csv"
    report = build_triviaqa_csv(TRIVIA, out, select=lambda q, a: True)
    assert report["questions_seen"] == 6 and report["kept"] == 6 and report["skipped"] == {}
    records, _ = load_qa_csv(out)
    assert {r["id"]: r["question"] for r in records} == SAMPLE_QUESTIONS
    dench = next(r for r in records if r["id"] == "tc_3")
    assert dench["answer"] == "York" and dench["split"] == "train"
    assert dench["answer_aliases"][0] == "York" and "City of York" in dench["answer_aliases"]
    assert len(dench["answer_aliases"]) == len(set(dench["answer_aliases"]))
    assert dench["supporting_titles"] == "England|Judi Dench"
    pages = [(TRIVIA / "evidence" / "wikipedia" / f).read_text(encoding="utf-8").strip()
             for f in ("England.txt", "Judi_Dench.txt")]
    assert dench["context"] == pages[0] + "\n\n" + pages[1]
    assert next(r for r in records if r["id"] == "tc_40")["split"] == "dev"


def test_build_triviaqa_default_selector_finds_no_film_question(tmp_path, TRIVIA):
    # None of the six sample questions asks about films (the Lloyd Webber one is about a musical).
    with pytest.raises(ValueError, match=r"no questions kept .*'not selected': 6"):
        build_triviaqa_csv(TRIVIA, tmp_path / "t.csv")
    assert not (tmp_path / "t.csv").exists()


def test_build_triviaqa_max_questions_and_splits(tmp_path, TRIVIA):
    report = build_triviaqa_csv(TRIVIA, tmp_path / "t.csv", splits=("dev",), max_questions=1,
                                select=lambda q, a: True)
    assert report["kept"] == 1
    records, _ = load_qa_csv(tmp_path / "t.csv")
    assert [r["id"] for r in records] == ["tc_33"]
    with pytest.raises(ValueError, match="max_questions must be a positive integer"):
        build_triviaqa_csv(TRIVIA, tmp_path / "t.csv", max_questions=0)


def fake_layout(root, questions, pages):
    (root / "qa").mkdir(parents=True)
    (root / "evidence" / "wikipedia").mkdir(parents=True)
    data = [{"Question": q, "QuestionId": qid, "Answer": {"Value": a, "Aliases": [a.upper(), a]},
             "EntityPages": [{"Filename": f, "Title": f[:-4]} for f in files]} for qid, q, a, files in questions]
    (root / "qa" / "wikipedia-train.json").write_text(json.dumps({"Data": data}))
    for name, text in pages.items():
        (root / "evidence" / "wikipedia" / name).write_text(text)


def test_build_triviaqa_selects_by_question_and_counts_missing_evidence(tmp_path):
    fake_layout(tmp_path / "tqa", [
        ("q1", "Who directed the film Jaws?", "Steven Spielberg", ["Jaws.txt"]),
        ("q2", "Which river flows through Paris?", "Seine", ["Paris.txt"]),  # film words only in the page
        ("q3", "Which actor played Rocky?", "Sylvester Stallone", ["Rocky.txt"]),  # evidence missing
    ], {"Jaws.txt": "Jaws is a 1975 film.", "Paris.txt": "Paris appears in many films and movies."})
    report = build_triviaqa_csv(tmp_path / "tqa", tmp_path / "out.csv", splits=("train",))
    assert report == {"questions_seen": 3, "selected": 2, "kept": 1, "out_csv": str(tmp_path / "out.csv"),
                      "skipped": {"not selected": 1, "missing evidence file": 1}}
    records, _ = load_qa_csv(tmp_path / "out.csv")
    assert [r["id"] for r in records] == ["q1"]
    assert records[0]["answer_aliases"] == ["Steven Spielberg", "STEVEN SPIELBERG"]


def test_build_triviaqa_bad_source(tmp_path, TRIVIA):
    with pytest.raises(FileNotFoundError, match="TriviaQA directory not found"):
        build_triviaqa_csv(tmp_path / "nowhere", tmp_path / "o.csv")
    with pytest.raises(FileNotFoundError, match="wikipedia-test.json not found"):
        build_triviaqa_csv(TRIVIA, tmp_path / "o.csv", splits=("test",))
    (tmp_path / "bad" / "qa").mkdir(parents=True)
    (tmp_path / "bad" / "qa" / "wikipedia-train.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not a TriviaQA file"):
        build_triviaqa_csv(tmp_path / "bad", tmp_path / "o.csv", splits=("train",))


def raw_layout(root, entries, pages):
    """A TriviaQA rc folder whose QA file holds ``entries`` as given; ``pages`` maps file name -> bytes."""
    (root / "qa").mkdir(parents=True)
    (root / "evidence" / "wikipedia").mkdir(parents=True)
    (root / "qa" / "wikipedia-train.json").write_text(json.dumps({"Data": entries}))
    for name, data in pages.items():
        (root / "evidence" / "wikipedia" / name).write_bytes(data)
    return root


def entry(filename="Jaws.txt", **changes):
    q = {"Question": "Who directed the film Jaws?", "QuestionId": "q1",
         "Answer": {"Value": "Steven Spielberg", "Aliases": []},
         "EntityPages": [{"Filename": filename, "Title": "Jaws"}]}
    return {k: v for k, v in {**q, **changes}.items() if v is not None}


@pytest.mark.parametrize("kind", ["absolute", "parent", "symlink"])
def test_build_triviaqa_refuses_evidence_outside_the_evidence_folder(tmp_path, kind):
    secret = tmp_path / "secret.txt"
    secret.write_text("Jaws is a private note.")
    name = {"absolute": str(secret), "parent": "../../../secret.txt", "symlink": "link.txt"}[kind]
    root = raw_layout(tmp_path / "tqa", [entry(name)], {})
    if kind == "symlink":
        (root / "evidence" / "wikipedia" / "link.txt").symlink_to(secret)
    with pytest.raises(ValueError, match=rf"question 'q1' names evidence file '{re.escape(name)}', which resolves "
                                         rf"to {re.escape(str(secret.resolve()))}, outside the evidence folder"):
        build_triviaqa_csv(root, tmp_path / "out.csv", splits=("train",))
    assert not (tmp_path / "out.csv").exists()


def test_build_triviaqa_reads_a_symlink_that_stays_inside_the_evidence_folder(tmp_path):
    root = raw_layout(tmp_path / "tqa", [entry("link.txt")], {"Jaws.txt": b"Jaws is a 1975 film."})
    (root / "evidence" / "wikipedia" / "link.txt").symlink_to(root / "evidence" / "wikipedia" / "Jaws.txt")
    assert build_triviaqa_csv(root, tmp_path / "out.csv", splits=("train",))["kept"] == 1
    assert load_qa_csv(tmp_path / "out.csv")[0][0]["context"] == "Jaws is a 1975 film."


@pytest.mark.parametrize("changes, message", [
    ({"Answer": None}, r"entry 0 \(QuestionId 'q1'\) has no Answer;"),
    ({"Answer": {"Aliases": ["x"]}}, r"entry 0 \(QuestionId 'q1'\) has no Answer.Value;"),
    ({"QuestionId": None}, r"entry 0 has no QuestionId;"),
    ({"Question": None}, r"entry 0 \(QuestionId 'q1'\) has no Question;"),
    ({"EntityPages": [{"Title": "Jaws"}]}, r"entry 0 \(QuestionId 'q1'\) has no EntityPages\[0\].Filename;"),
    ({"EntityPages": [{"Filename": "Jaws.txt"}]}, r"entry 0 \(QuestionId 'q1'\) has no EntityPages\[0\].Title;"),
])
def test_build_triviaqa_names_the_entry_and_the_missing_field(tmp_path, changes, message):
    root = raw_layout(tmp_path / "tqa", [entry(**changes)], {"Jaws.txt": b"Jaws is a 1975 film."})
    with pytest.raises(ValueError, match=r"wikipedia-train.json: " + message + ".*use the unmodified TriviaQA"):
        build_triviaqa_csv(root, tmp_path / "out.csv", splits=("train",), select=lambda q, a: True)


def test_build_triviaqa_names_a_non_utf8_evidence_file_and_its_question(tmp_path):
    latin = "Jaws is a 1975 film by Spielberg – café.".encode("cp1252")
    root = raw_layout(tmp_path / "tqa", [entry()], {"Jaws.txt": latin})
    with pytest.raises(ValueError, match=r"evidence file .*Jaws.txt of question 'q1' is not UTF-8 .*re-encode it as "
                                         "UTF-8"):
        build_triviaqa_csv(root, tmp_path / "out.csv", splits=("train",))
    assert not (tmp_path / "out.csv").exists()
