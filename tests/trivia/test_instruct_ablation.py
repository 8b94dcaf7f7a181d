"""The instruct reader's ablation: per-question scores kept in the results file, and steps read row against row."""

import pytest

from cinephile.trivia.instruct_ablation import TUNED, ablation, compact_scores, score_lines

SHELF = "Q, zero-shot + retrieved context"


def lines(row, ems, ids=None):
    ids = ids or [f"q{i}" for i in range(len(ems))]
    return [{"row": row, "id": i, "em": e, "f1": 0.5 + e / 2, "question": "?", "prediction": "x"}
            for i, e in zip(ids, ems)]


def result_row(name, tuned_ems, shelf_ems, *, seed=0, scores=True):
    def score(ems):
        return {"em": 100 * sum(ems) / len(ems), "f1": 100 * sum(0.5 + e / 2 for e in ems) / len(ems), "n": len(ems)}
    row = {"name": name, "seed": seed, "best_off_the_shelf": SHELF,
           "results": {s: [{"row": TUNED, **score(tuned_ems)}, {"row": SHELF, **score(shelf_ems)}]
                       for s in ("validation", "external")},
           "validation_em_by_kind": [{"row": TUNED, "single": 80.0, "comparison": 50.0},
                                     {"row": SHELF, "single": 75.0, "comparison": 40.0}],
           "paired_tuned_vs_best": {"validation": {"em": {"diff": 1.0, "lo": -2.0, "hi": 4.0, "n": 4, "beats": False}}}}
    if scores:
        row["scores"] = {s: compact_scores(lines(TUNED, tuned_ems) + lines(SHELF, shelf_ems))
                         for s in ("validation", "external")}
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
    steps = (("tuning", "A", None), ("a change", "B", "A"), ("missing row", "C", "A"), ("old rows", "D", "A"))
    rows = [result_row("A", [1, 0, 0, 1], [0, 0, 0, 1]), result_row("B", [1, 1, 1, 1], [0, 0, 0, 1]),
            result_row("D", [1, 1, 0, 1], [0, 0, 0, 1], scores=False)]
    out = ablation(rows, steps)
    assert [s["change"] for s in out] == ["tuning", "a change", "old rows"]  # C is not measured: no step
    first, second, old = out
    assert first["against"] is None and first["against_row"] == SHELF
    assert first["validation"]["before"]["em"] == 25.0 and first["validation"]["after"]["em"] == 50.0
    assert first["validation"]["kinds"] == {"single": [75.0, 80.0], "comparison": [40.0, 50.0]}
    assert first["paired"] == rows[0]["paired_tuned_vs_best"]["validation"]
    assert second["validation"]["before"]["em"] == 50.0 and second["validation"]["after"]["em"] == 100.0
    assert second["paired"]["em"]["diff"] == pytest.approx(50.0) and second["paired"]["em"]["n"] == 4
    assert second["paired"]["f1"]["diff"] == pytest.approx(25.0)
    assert old["paired"] is None  # one side has no per-question scores: no interval, never "beats"


def test_ablation_table_shows_intervals_only_for_paired_steps():
    from cinephile.trivia.tables import instruct_ablation_table, instruct_reader_table
    rows = [result_row("A", [1, 0, 0, 1], [0, 0, 0, 1]), result_row("B", [1, 1, 1, 1], [0, 0, 0, 1]),
            result_row("D", [1, 1, 0, 1], [0, 0, 0, 1], scores=False),
            result_row("E", [1, 1, 0, 1, 1, 1], [0, 0, 0, 1, 0, 0], scores=False)]
    steps = (("tuning", "A", None), ("a change", "B", "A"), ("unpaired", "D", "A"), ("more questions", "E", "A"))
    text = instruct_ablation_table(ablation(rows, steps))
    lines_ = text.splitlines()
    assert lines_[2] == ("| tuning | the model off the shelf | 0 | 25.0 → 50.0 | 75.0 → 80.0 | 40.0 → 50.0 | "
                         "+1.0 [-2.0, +4.0] | 25.0 → 50.0 |")
    assert lines_[3].startswith("| a change | A | 0 | 50.0 → 100.0 |") and "| +50.0 [" in lines_[3]
    assert lines_[4].endswith("| 50.0 → 75.0 | 80.0 → 80.0 | 50.0 → 50.0 | +25.0 (not paired) | 50.0 → 75.0 |")
    assert "| 50.0 → 83.3 (4 → 6 questions) |" in lines_[5] and "| – |" in lines_[5]
    record = {"rows": [], "ablation": ablation(rows, steps)}
    assert instruct_reader_table(record).endswith(text)
    assert "against (row)" not in instruct_reader_table({"rows": []})
