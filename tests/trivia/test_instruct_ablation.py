"""The instruct reader's ablation: per-question scores kept in the results file, and steps read row against row."""

import importlib.util
import json

import pytest

from cinephile.trivia.instruct_ablation import STEPS, TUNED, ablation, compact_scores, score_lines
from tests.conftest import ROOT

SHELF = "Q, zero-shot + retrieved context"


def lines(row, ems, ids=None):
    ids = ids or [f"q{i}" for i in range(len(ems))]
    return [{"row": row, "id": i, "em": e, "f1": 0.5 + e / 2, "question": "?", "prediction": "x"}
            for i, e in zip(ids, ems)]


def score(ems):
    return {"em": 100 * sum(ems) / len(ems), "f1": 100 * sum(0.5 + e / 2 for e in ems) / len(ems), "n": len(ems)}


def result_row(name, tuned_ems, shelf_ems, *, external_ems=None, kinds=(80.0, 50.0), seed=0, scores=True, **fields):
    """A row as instruct_reader.py writes it; HotpotQA ("external") scores differ from validation's on purpose."""
    external_ems = external_ems or [1 - e for e in tuned_ems]
    ext_shelf = [0] * len(external_ems)
    row = {"name": name, "seed": seed, "best_off_the_shelf": SHELF, "n_train": 160, "lr": 2e-4, **fields,
           "results": {"validation": [{"row": TUNED, **score(tuned_ems)}, {"row": SHELF, **score(shelf_ems)}],
                       "external": [{"row": TUNED, **score(external_ems)}, {"row": SHELF, **score(ext_shelf)}]},
           "validation_em_by_kind": [{"row": TUNED, "single": kinds[0], "comparison": kinds[1]},
                                     {"row": SHELF, "single": 75.0, "comparison": 40.0}],
           "paired_tuned_vs_best": {"validation": {"em": {"diff": 1.0, "lo": -2.0, "hi": 4.0, "n": 4, "beats": False}}}}
    if scores:
        row["scores"] = {"validation": compact_scores(lines(TUNED, tuned_ems) + lines(SHELF, shelf_ems)),
                         "external": compact_scores(lines(TUNED, external_ems) + lines(SHELF, ext_shelf))}
    return row


def test_compact_scores_round_trip_to_lines_paired_difference_reads():
    original = lines("a", [1, 0, 1], ids=["z", "b", "m"]) + lines("b", [0, 0, 1], ids=["m", "z", "b"])
    compact = compact_scores(original)
    assert compact["ids"] == ["b", "m", "z"]
    assert compact["rows"]["a"] == {"em": [0.0, 1.0, 1.0], "f1": [0.5, 1.0, 1.0]}
    back = score_lines(compact, "b", as_row="before")
    assert {(x["id"], x["em"]) for x in back} == {("m", 0.0), ("z", 0.0), ("b", 1.0)}
    assert {x["row"] for x in back} == {"before"}


def test_compact_scores_refuses_rows_scored_on_different_questions():
    with pytest.raises(ValueError, match=r"rows \['b'\] do not score every question"):
        compact_scores(lines("a", [1, 0]) + lines("b", [1]))


def test_ablation_pairs_rows_that_kept_scores_and_compares_the_first_with_the_model_off_the_shelf():
    steps = (("tuning", "A", None), ("a change", "B", "A"), ("missing row", "C", "A"), ("old rows", "D", "A"),
             ("missing against", "B", "X"), ("seed 1", "B1", "A1"))
    rows = [result_row("A", [1, 0, 0, 1], [0, 0, 0, 1]),
            result_row("B", [1, 1, 1, 1], [0, 0, 0, 1], external_ems=[1, 1, 0, 0], kinds=(90.0, 70.0), lr=5e-5),
            result_row("D", [1, 1, 0, 1], [0, 0, 0, 1], scores=False),
            result_row("A1", [0, 0, 0, 1], [0, 0, 0, 1], seed=1), result_row("B1", [0, 1, 1, 1], [0, 0, 0, 1], seed=1)]
    out = ablation(rows, steps)
    # C is not measured, X neither: those steps do not appear (never compared with something else instead)
    assert [s["change"] for s in out] == ["tuning", "a change", "old rows", "seed 1"]
    first, second, old, seed1 = out
    assert first["against"] is None and first["against_row"] == SHELF and first["differs"] == {}
    assert first["validation"]["before"]["em"] == 25.0 and first["validation"]["after"]["em"] == 50.0
    assert first["validation"]["kinds"] == {"single": [75.0, 80.0], "comparison": [40.0, 50.0]}
    assert first["external"]["before"]["em"] == 0.0 and first["external"]["after"]["em"] == 50.0
    assert first["paired"] == rows[0]["paired_tuned_vs_best"]["validation"]
    assert second["validation"]["before"]["em"] == 50.0 and second["validation"]["after"]["em"] == 100.0
    assert second["validation"]["kinds"] == {"single": [80.0, 90.0], "comparison": [50.0, 70.0]}
    assert second["external"]["before"]["em"] == 50.0 and second["external"]["after"]["em"] == 50.0
    assert second["differs"] == {"lr": [2e-4, 5e-5]}
    assert second["paired"]["em"]["diff"] == pytest.approx(50.0) and second["paired"]["em"]["n"] == 4
    assert second["paired"]["f1"]["diff"] == pytest.approx(25.0)
    assert old["paired"] is None  # one side has no per-question scores: no interval, never "beats"
    assert seed1["seed"] == 1 and seed1["paired"]["em"]["diff"] == pytest.approx(50.0)


def test_ablation_counts_fields_a_row_does_not_record_as_the_defaults_it_ran_with():
    rows = [result_row("A", [1, 0], [0, 0]), result_row("B", [1, 1], [0, 0], batch=[8, 1], answer_format="answer"),
            result_row("C", [1, 1], [0, 0], batch=[4, 2], top_k=10), result_row("D", [1, 1], [0, 0], epochs=2),
            result_row("E", [1, 1], [0, 0], epochs=1)]
    out = ablation(rows, (("same", "B", "A"), ("longer", "C", "A"), ("twice", "D", "A"), ("once", "E", "A")))
    assert out[0]["differs"] == {}
    assert out[1]["differs"] == {"top_k": [None, 10], "batch": [[8, 1], [4, 2]]}
    assert out[2]["differs"] == {"epochs": [1, 2]} and out[3]["differs"] == {}


def test_ablation_table_shows_intervals_only_for_paired_steps():
    from cinephile.trivia.tables import instruct_ablation_table, instruct_reader_table
    rows = [result_row("A", [1, 0, 0, 1], [0, 0, 0, 1]), result_row("B", [1, 1, 1, 1], [0, 0, 0, 1], top_k=10),
            result_row("D", [1, 1, 0, 1], [0, 0, 0, 1], scores=False),
            result_row("E", [1, 1, 0, 1, 1, 1], [0, 0, 0, 1, 0, 0], scores=False),
            result_row("F", [1, 1, 0, 1, 1, 1], [0, 0, 0, 1, 0, 0])]
    steps = (("tuning", "A", None), ("a change", "B", "A"), ("unpaired", "D", "A"), ("more questions", "E", "A"),
             ("more, paired", "F", "A"))
    text = instruct_ablation_table(ablation(rows, steps))
    lines_ = text.splitlines()
    assert lines_[2] == ("| tuning | the model off the shelf | 0 | – | 25.0 → 50.0 | 75.0 → 80.0 | 40.0 → 50.0 | "
                         "+1.0 [-2.0, +4.0] | 0.0 → 50.0 |")
    assert lines_[3].startswith("| a change | A | 0 | top_k None → 10 | 50.0 → 100.0 |") and "| +50.0 [" in lines_[3]
    assert lines_[4].endswith("| 50.0 → 75.0 | 80.0 → 80.0 | 50.0 → 50.0 | +25.0 (not paired) | 50.0 → 25.0 |")
    assert "| 50.0 → 83.3 (4 → 6 questions) |" in lines_[5] and "| – |" in lines_[5]
    assert "] on the 4 shared questions |" in lines_[6]
    record = {"rows": [], "ablation": ablation(rows, steps)}
    assert instruct_reader_table(record).endswith(text)
    assert "against (row)" not in instruct_reader_table({"rows": []})


def test_every_step_names_rows_of_the_committed_results():
    """A misspelt or renamed row would silently drop its step from the README's ablation."""
    names = {r["name"] for r in json.loads((ROOT / "results" / "trivia_instruct.json").read_text())["rows"]}
    missing = [name for _, row, against in STEPS for name in (row, against) if name is not None and name not in names]
    assert missing == []


def _benchmark():
    spec = importlib.util.spec_from_file_location("instruct_reader", ROOT / "benchmarks" / "instruct_reader.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_asks_for_a_name_and_refreshes_the_ablation_without_measuring(tmp_path, capsys):
    bench = _benchmark()
    with pytest.raises(SystemExit):
        bench.main([])
    assert "--name is required" in capsys.readouterr().err
    path = tmp_path / "instruct.json"
    rows = [result_row(STEPS[0][1], [1, 0], [0, 0]), result_row("another", [1, 1], [0, 0])]
    path.write_text(json.dumps({"rows": rows}))
    bench.main(["--refresh-ablation", "--out", str(path)])
    saved = json.loads(path.read_text())
    assert [r["name"] for r in saved["rows"]] == [STEPS[0][1], "another"]
    assert [s["change"] for s in saved["ablation"]] == [STEPS[0][0]]
