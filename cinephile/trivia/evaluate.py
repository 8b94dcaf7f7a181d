"""Answer-level metrics for open-domain trivia (exact match, token F1) and the evaluation table.

``evaluate_qa`` generates answers for each evaluation row (closed-book, base + retrieved,
tuned + retrieved, tuned + gold) and scores them; ``paired_difference`` compares two rows on the
same questions and ``error_analysis`` sorts the failures.

The normalisation reproduces the official TriviaQA evaluation script
(mandarjoshi90/triviaqa, evaluation/triviaqa_evaluation.py), itself extended from
the SQuAD v1.1 script: underscores become spaces, text is lower-cased, punctuation
(ASCII plus the quotes ‘ ’ ´ `) is replaced by a space, the articles a/an/the are
removed and whitespace is collapsed. A prediction is scored against every accepted
alias and the best score is kept (``metric_max_over_ground_truths``).

References:
    Joshi et al. 2017, "TriviaQA: A Large Scale Distantly Supervised Challenge
    Dataset for Reading Comprehension".
    Rajpurkar et al. 2016, "SQuAD: 100,000+ Questions for Machine Comprehension of Text".
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lora import disable_lora

from cinephile.generate import generate_answers
from cinephile.io import require_keys, save_figure, write_jsonl
from cinephile.trivia.matching import accepted_answers, covers, normalize_answer
from cinephile.trivia.reader import ANSWER_MARK, REPLY_TOKENS, reply_answer, trivia_examples

logger = logging.getLogger(__name__)


def _as_aliases(aliases: str | Sequence[str]) -> list[str]:
    """Accept one answer string or a sequence of aliases; refuse an empty sequence."""
    if isinstance(aliases, str):
        return [aliases]
    aliases = list(aliases)
    if not aliases:
        raise ValueError("no answer aliases given; pass at least one accepted answer")
    return aliases


def _em_one(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def _f1_one(prediction: str, truth: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    truth_tokens = normalize_answer(truth).split()
    common = Counter(pred_tokens) & Counter(truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, aliases: str | Sequence[str]) -> float:
    """Exact match after normalisation, maximised over the accepted aliases.

    Args:
        prediction: model answer.
        aliases: one accepted answer or a list of them.

    Returns:
        1.0 if the normalised prediction equals any normalised alias, else 0.0.
    """
    return max(_em_one(prediction, a) for a in _as_aliases(aliases))


def f1_score(prediction: str, aliases: str | Sequence[str]) -> float:
    """Bag-of-tokens F1 after normalisation, maximised over the accepted aliases.

    Args:
        prediction: model answer.
        aliases: one accepted answer or a list of them.

    Returns:
        The best F1 in [0, 1] over the aliases.
    """
    return max(_f1_one(prediction, a) for a in _as_aliases(aliases))


def score_predictions(preds: Sequence[str] | dict[str, str], records: Sequence[dict]) -> dict:
    """Average EM and F1 (in percent) of predictions against QA records.

    Args:
        preds: predictions aligned with ``records``, or a dict mapping record id to prediction.
        records: dicts with ``id`` and ``answer_aliases`` (falls back to ``answer``).

    Returns:
        ``{"em": float, "f1": float, "n": int}`` with em and f1 in percent.
    """
    if not records:
        raise ValueError("no records to score; pass at least one QA record")
    require_keys(records, (*(("id",) if isinstance(preds, dict) else ()), ("answer_aliases", "answer")),
                 what="score_predictions", fix="pass QA records as data.load_qa_csv() returns them")
    if isinstance(preds, dict):
        missing = [r["id"] for r in records if r["id"] not in preds]
        if missing:
            raise ValueError(f"no prediction for record ids {missing[:5]}; predict every record first")
        preds = [preds[r["id"]] for r in records]
    elif len(preds) != len(records):
        raise ValueError(
            f"got {len(preds)} predictions for {len(records)} records; pass one prediction per record"
        )
    em = f1 = 0.0
    for pred, rec in zip(preds, records):
        accepted = accepted_answers(rec)
        em += exact_match(pred, accepted)
        f1 += f1_score(pred, accepted)
    n = len(records)
    return {"em": 100.0 * em / n, "f1": 100.0 * f1 / n, "n": n}


def scores_by_kind(preds: Sequence[str], records: Sequence[dict]) -> dict[str, dict]:
    """``score_predictions`` over all records and per ``kind`` (records without one count as "single").

    Returns:
        ``{"all": {...}, "single": {...}, "comparison": {...}}``; kinds with no record are left out.
    """
    if len(preds) != len(records):
        raise ValueError(f"got {len(preds)} predictions for {len(records)} records; pass one prediction per record")
    out = {"all": score_predictions(list(preds), records)}
    for kind in dict.fromkeys(r.get("kind", "single") for r in records):
        part = [(p, r) for p, r in zip(preds, records) if r.get("kind", "single") == kind]
        out[kind] = score_predictions([p for p, _ in part], [r for _, r in part])
    return out


def em_by_kind(lines: Sequence[dict], records: Sequence[dict]) -> pd.DataFrame:
    """EM (percent) per evaluation row (index) and question kind (columns) from ``evaluate_qa``'s prediction lines."""
    by_id = {r["id"]: r for r in records}
    rows = {}
    for row in dict.fromkeys(x["row"] for x in lines):
        mine = [x for x in lines if x["row"] == row]
        scores = scores_by_kind([x["prediction"] for x in mine], [by_id[x["id"]] for x in mine])
        rows[row] = {kind: s["em"] for kind, s in scores.items() if kind != "all"}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("row")


def score_row(name: str, preds: Sequence[str], records: Sequence[dict]) -> tuple[dict, list[dict]]:
    """One evaluation row: ``{"row", "em", "f1", "n"}`` and its per-question lines (row, id, question,
    prediction, answer, em, f1), the layout of ``evaluate_qa``'s table and JSONL."""
    row = {"row": name, **score_predictions(list(preds), records)}
    lines = [{"row": name, "id": r["id"], "question": r["question"], "prediction": p, "answer": r["answer"],
              "em": exact_match(p, r["answer_aliases"]), "f1": round(f1_score(p, r["answer_aliases"]), 4)}
             for r, p in zip(records, preds)]
    logger.info("%s: EM %.1f F1 %.1f", name, row["em"], row["f1"])
    return row, lines


# (row name, use the adapter?, context field or None for closed-book[, answers constrained to context spans?])
SPAN_ROW = ("tuned + retrieved, span-constrained decoding", True, "retrieved_context", True)
EVAL_ROWS = [
    ("closed-book (base)", False, None),
    ("base + retrieved context", False, "retrieved_context"),
    ("tuned + retrieved context", True, "retrieved_context"),
    ("tuned + gold context (upper bound)", True, "gold_context"),
]


def evaluate_qa(model, tokenizer, records: list[dict], style: str, *, rows=EVAL_ROWS, batch_size: int = 8,
                max_new_tokens: int | None = None, predictions_path: str | os.PathLike | None = None,
                progress: bool = True, bf16: bool | None = False,
                answer_format: str = "answer") -> tuple[pd.DataFrame, list[dict]]:
    """EM / F1 per evaluation row, and the per-question predictions (optionally also written to JSONL).

    Args:
        model: the model with LoRA injected (base rows run inside ``disable_lora``).
        tokenizer: its tokenizer.
        records: retrieved records (``retrieved_context``, ``gold_context`` for the rows that need them).
        style: prompt style used in training.
        rows: ``(name, tuned, context_key)`` triples, or with a fourth item ``constrained``: decode
            only spans of the context, "yes", "no" or numbers (``generate.span_constraint``).
        batch_size, max_new_tokens: generation settings (None: ``reader.REPLY_TOKENS`` of the format).
        predictions_path: JSONL with one line per (row, question).
        progress: one progress bar over the rows.
        bf16: generation under bf16 autocast (``generate.generate_answers``); False: fp32.
        answer_format: "answer" (the reply is the answer) or "quote" (evidence, then the answer: the
            prediction is ``reader.answer_of`` the reply, the reply itself is kept as "generation"; replies
            without "Answer:" are counted in the log).

    Returns:
        ``(table, lines)``: a DataFrame with columns row, em, f1, n, and one dict per (row, question)
        with row, id, question, prediction, answer, em, f1 (the JSONL's lines).
    """
    if not records:
        raise ValueError("no records to evaluate; is the evaluation split empty?")
    quote = answer_format == "quote"
    if quote and any(key and flags and flags[0] for _, _, key, *flags in rows):
        raise ValueError("span-constrained rows decode only spans of the context, not a quote reply; "
                         "use answer_format='answer' for them")
    table, lines = [], []
    for name, tuned, key, *flags in tqdm(rows, desc=f"evaluate {len(records)} questions", disable=not progress):
        constrained = bool(key and flags and flags[0])
        prompts = [e["prompt"] for e in trivia_examples(records, tokenizer, style, key, answer_format)]
        contexts = [r[key] for r in records] if constrained else None
        with nullcontext() if tuned else disable_lora(model):
            preds = generate_answers(model, tokenizer, prompts, batch_size=batch_size,
                                     max_new_tokens=max_new_tokens or REPLY_TOKENS[answer_format],
                                     progress=False, contexts=contexts, bf16=bf16)
        row, row_lines = score_row(name, [reply_answer(p, answer_format) for p in preds], records)
        if quote:
            unparsed = sum(ANSWER_MARK not in p for p in preds)
            if unparsed:
                logger.warning("%s: %d of %d replies hold no 'Answer:'; their first line is scored as the answer",
                               name, unparsed, len(preds))
            row_lines = [{**line, "generation": p} for line, p in zip(row_lines, preds)]
        table.append(row)
        lines += row_lines
    if predictions_path:
        write_jsonl(predictions_path, lines)
    return pd.DataFrame(table), lines


def paired_difference(lines: Sequence[dict], row_a: str, row_b: str, *, key: str = "em", n_boot: int = 2000,
                      seed: int = 0) -> dict:
    """Mean of ``key`` for ``row_a`` minus ``row_b`` on the same questions, with a paired bootstrap 95% interval.

    Args:
        lines: per-question prediction lines (``evaluate_qa``'s JSONL: row, id, em, f1).
        row_a, row_b: the two evaluation rows compared.

    Returns:
        ``{"diff", "lo", "hi", "n", "beats"}`` in points; ``beats`` is True when the interval excludes 0 above.
    """
    def per_id(row):
        return {x["id"]: float(x[key]) for x in lines if x["row"] == row}
    a, b = per_id(row_a), per_id(row_b)
    ids = sorted(set(a) & set(b))
    if not ids:
        raise ValueError(f"no question scored in both rows {row_a!r} and {row_b!r}; pass lines of both rows")
    d = 100.0 * (np.array([a[i] for i in ids]) - np.array([b[i] for i in ids]))
    boots = np.random.default_rng(seed).choice(d, size=(n_boot, len(d))).mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"diff": float(d.mean()), "lo": float(lo), "hi": float(hi), "n": len(ids), "beats": bool(lo > 0)}


ERROR_KINDS = ("retrieval miss", "reading miss", "normalisation")


def error_analysis(lines: Sequence[dict], records: Sequence[dict], *, row: str = "tuned + retrieved context",
                   context_key: str = "retrieved_context", n_examples: int = 5) -> tuple[pd.DataFrame, dict]:
    """Why the questions ``row`` got wrong (EM 0) failed.

    - normalisation: the prediction is right but scored wrong (it contains an alias or an alias
      contains it, after normalisation), e.g. an extra word or a missing alias;
    - retrieval miss: the fed context does not hold what the question needs (``matching.covers``);
    - reading miss: the context holds it and the reader answered something else.

    Returns:
        ``(counts, examples)``: a DataFrame kind / n / share of the failures, and per kind up to
        ``n_examples`` dicts (id, question, answer, prediction).
    """

    by_id = {r["id"]: r for r in records}
    failed = [x for x in lines if x["row"] == row and not x["em"]]
    missing = [x["id"] for x in failed if x["id"] not in by_id]
    if missing:
        raise ValueError(f"predictions for ids {missing[:3]} have no record; pass the records that were evaluated")
    examples = {k: [] for k in ERROR_KINDS}
    for x in failed:
        r = by_id[x["id"]]
        pred = normalize_answer(x["prediction"])
        accepted = [normalize_answer(a) for a in accepted_answers(r)]
        if pred and any(f" {a} " in f" {pred} " or f" {pred} " in f" {a} " for a in accepted if a):
            kind = "normalisation"
        elif not covers(r, r.get(context_key) or ""):
            kind = "retrieval miss"
        else:
            kind = "reading miss"
        examples[kind].append({"id": x["id"], "question": r["question"], "answer": r["answer"],
                               "prediction": x["prediction"]})
    counts = pd.DataFrame([{"kind": k, "n": len(v), "share": len(v) / max(len(failed), 1)}
                           for k, v in examples.items()])
    return counts, {k: v[:n_examples] for k, v in examples.items()}


def plot_results(tables: dict[str, pd.DataFrame], path: str | os.PathLike | None = None):
    """Grouped bars of EM and F1 per row, one panel per evaluation set."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 3.8), squeeze=False)
    for ax, (title, df) in zip(axes[0], tables.items()):
        x = range(len(df))
        ax.bar([i - 0.2 for i in x], df["em"], width=0.4, label="EM")
        ax.bar([i + 0.2 for i in x], df["f1"], width=0.4, label="F1")
        ax.set_xticks(list(x), [r.replace(" (", "\n(").replace(" + ", "\n+ ") for r in df["row"]], fontsize=8)
        ax.set_ylabel("%")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    if path:
        save_figure(fig, path)
    return fig
