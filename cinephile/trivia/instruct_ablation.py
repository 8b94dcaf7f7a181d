"""What each change to the tuned instruct reader added, row against row of ``results/trivia_instruct.json``.

``benchmarks/instruct_reader.py`` measures one configuration per row. ``STEPS`` says which row changes what
against which earlier row (same seed); ``ablation`` reads the rows present and returns, per step, validation EM
before and after (overall and per question kind) and HotpotQA EM for reference. Where both rows kept their
per-question scores (``compact_scores``), the step also gets the paired difference on the same validation questions
with a bootstrap 95% interval; rows measured before the scores were kept get none, since two separate runs compared
without pairing cannot say "beats". A step against ``OFF_THE_SHELF`` compares a tuned row with the same model off
the shelf, which every row pairs question by question.
"""

from __future__ import annotations

from collections.abc import Sequence

from cinephile.trivia.evaluate import paired_difference

TUNED = "tuned + retrieved context"
OFF_THE_SHELF = None  # ``against`` of a step that compares a row with its own best off-the-shelf row

_KEEP_READ = "1.5B + LoRA: single-hop and comparison, only what it already reads"
_FIRST = "1.5B + LoRA: single-hop and comparison questions"
_SMALL = "Qwen2.5-Coder-0.5B-Instruct + LoRA: single-hop and comparison, only what it already reads"
_SIMILAR_TOP = ("1.5B + LoRA on the top 14 of 28 blocks: single-hop and comparison among similar films, "
                "only what it already reads")
_BRIDGE_TOP = "1.5B + LoRA on the top 14 of 28 blocks: + bridge questions, only what it already reads"

# (change, row, against): ``row`` is ``against`` with the change named; a step appears in the ablation once both
# its rows are in the results file. Each entry also lists every recorded setting in which the two rows differ.
STEPS: tuple[tuple[str, str, str | None], ...] = (
    ("LoRA on Qwen2.5-Coder-1.5B-Instruct: template single-hop and comparison questions", _FIRST, OFF_THE_SHELF),
    ("+ bridge questions (film → person → fact)", "1.5B + LoRA: + bridge questions", _FIRST),
    ("questions the model wrote from training passages instead of template single-hop ones",
     "1.5B + LoRA: written and comparison questions", _FIRST),
    ("evidence quoted before the answer", "1.5B + LoRA: single-hop and comparison, evidence quoted before the answer",
     _FIRST),
    ("240 sampled prompts, only those the untuned model already reads, instead of 160", _KEEP_READ, _FIRST),
    ("learning rate 5e-5 instead of 2e-4", f"{_KEEP_READ}, lr 5e-5", _KEEP_READ),
    ("learning rate 5e-5 instead of 2e-4", f"{_KEEP_READ}, lr 5e-5, seed 1", f"{_KEEP_READ}, seed 1"),
    ("10 chunks instead of 6", f"{_KEEP_READ}, 10 chunks", _KEEP_READ),
    ("10 chunks instead of 6", f"{_KEEP_READ}, 10 chunks, seed 1", f"{_KEEP_READ}, seed 1"),
    ("Qwen2.5-Coder-0.5B-Instruct instead of 1.5B (same recipe; the filter keeps what the 0.5B model reads)",
     _SMALL, _KEEP_READ),
    ("LoRA on Qwen2.5-Coder-0.5B-Instruct (against that model off the shelf)", _SMALL, OFF_THE_SHELF),
    ("adapters on the top 12 of 24 blocks instead of every block",
     _SMALL.replace("+ LoRA:", "+ LoRA on the top 12 of 24 blocks:"), _SMALL),
    ("adapters on the top 6 of 24 blocks instead of every block",
     _SMALL.replace("+ LoRA:", "+ LoRA on the top 6 of 24 blocks:"), _SMALL),
    ("training and validation contexts among the 3 films most like the question (validation is harder too), "
     "adapters on the top 14 of 28 blocks", _SIMILAR_TOP, _KEEP_READ),
    ("+ bridge questions in the sample the filter reads, adapters on the top 14 of 28 blocks", _BRIDGE_TOP,
     _KEEP_READ),
    ("two epochs instead of one (the adapter of the epoch with the lower validation loss is kept)",
     f"{_BRIDGE_TOP}, 2 epochs", _BRIDGE_TOP),
)


SETTINGS = ("model", "bf16", "lora_layers", "n_train", "lr", "epochs", "top_k", "chunk_tokens", "batch",
            "similar_distractors", "answer_format", "bridges", "generated",
            "train_kinds_kept")  # the row fields ``ablation`` compares
# What a row that does not record a field ran with: the benchmark's default before the field was recorded.
UNRECORDED = {"epochs": 1, "lora_layers": None, "batch": [8, 1], "answer_format": "answer",
              "similar_distractors": None, "bridges": [0, 0], "generated": [0, 0], "train_kinds_kept": "all"}


def compact_scores(lines: Sequence[dict]) -> dict:
    """Per-question EM / F1 of one evaluation set's prediction lines, in a small JSON form.

    Args:
        lines: ``evaluate_qa``'s lines (row, id, em, f1, ...), every row scored on the same questions.

    Returns:
        ``{"ids": [...], "rows": {row: {"em": [...], "f1": [...]}}}``, one value per id in ``ids`` order.

    Raises:
        ValueError: a row does not score every question of the lines.
    """
    ids = sorted({x["id"] for x in lines}, key=str)
    rows: dict[str, dict[str, dict]] = {}
    for x in lines:
        scores = rows.setdefault(x["row"], {"em": {}, "f1": {}})
        scores["em"][x["id"]], scores["f1"][x["id"]] = float(x["em"]), float(x["f1"])
    incomplete = [row for row, s in rows.items() if len(s["em"]) != len(ids)]
    if incomplete:
        raise ValueError(f"rows {incomplete} do not score every question of the lines; pass lines of one "
                         "evaluation set, every row scored on the same questions")
    return {"ids": ids, "rows": {row: {k: [round(s[k][i], 4) for i in ids] for k in ("em", "f1")}
                                 for row, s in rows.items()}}


def score_lines(compact: dict, row: str, *, as_row: str | None = None) -> list[dict]:
    """``compact_scores``' scores of ``row`` back as prediction lines (row, id, em, f1) for ``paired_difference``.

    Args:
        compact: ``compact_scores``' output.
        row: the evaluation row read.
        as_row: the row name the lines carry (default ``row``), to pair two runs' rows of the same name.
    """
    scores = compact["rows"][row]
    return [{"row": as_row or row, "id": i, "em": em, "f1": f1}
            for i, em, f1 in zip(compact["ids"], scores["em"], scores["f1"], strict=True)]


def _kinds(row: dict, which: str) -> dict:
    return next((k for k in row.get("validation_em_by_kind", []) if k["row"] == which), {})


def _score(row: dict, set_name: str, which: str) -> dict:
    return next(x for x in row["results"][set_name] if x["row"] == which)


def _paired(row: dict, against: dict | None) -> dict | None:
    """Tuned ``row`` minus tuned ``against`` (or the row's best off-the-shelf row) on the same validation questions."""
    if against is None:
        return row["paired_tuned_vs_best"]["validation"]
    mine, theirs = (r.get("scores", {}).get("validation") for r in (row, against))
    if mine is None or theirs is None:
        return None
    lines = score_lines(mine, TUNED, as_row="after") + score_lines(theirs, TUNED, as_row="before")
    return {key: paired_difference(lines, "after", "before", key=key) for key in ("em", "f1")}


def _differs(row: dict, against: dict) -> dict:
    """The recorded settings (``SETTINGS``) in which two rows differ: ``{field: [against's, row's]}``."""
    def get(r, k):
        return r.get(k, UNRECORDED.get(k))
    return {k: [get(against, k), get(row, k)] for k in SETTINGS if get(against, k) != get(row, k)}


def ablation(rows: Sequence[dict], steps: Sequence[tuple[str, str, str | None]] = STEPS) -> list[dict]:
    """What each step changed on validation, row against row.

    Args:
        rows: the rows of ``results/trivia_instruct.json``.
        steps: ``(change, row, against)`` name triples; ``against`` None compares the row with its own best
            off-the-shelf row.

    Returns:
        One entry per step whose rows are both present, in step order: change, row, against, against_row, seed,
        ``differs`` (settings that differ, before and after), validation and HotpotQA EM / F1 / n before and after,
        validation EM per question kind, and ``paired``: the validation difference with a paired bootstrap 95%
        interval on the questions both rows scored (None when either row lacks per-question scores).
    """
    by_name = {r["name"]: r for r in rows}
    out = []
    for change, name, against_name in steps:
        row = by_name.get(name)
        against = by_name.get(against_name) if against_name is not None else None
        if row is None or (against_name is not None and against is None):
            continue
        # "before" is the other run's tuned row, or this run's own off-the-shelf row
        source, before_row = (against, TUNED) if against else (row, row["best_off_the_shelf"])
        entry = {"change": change, "row": name, "against": against_name,
                 "against_row": against["name"] if against else before_row,
                 "seed": row["seed"], "differs": _differs(row, against) if against else {},
                 "paired": _paired(row, against)}
        for set_name in ("validation", "external"):
            a, b = _score(row, set_name, TUNED), _score(source, set_name, before_row)
            entry[set_name] = {"before": {k: b[k] for k in ("em", "f1", "n")},
                               "after": {k: a[k] for k in ("em", "f1", "n")}}
        entry["validation"]["kinds"] = {kind: [_kinds(source, before_row).get(kind), _kinds(row, TUNED).get(kind)]
                                        for kind in ("single", "comparison")}
        out.append(entry)
    return out
