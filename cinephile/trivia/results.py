"""The last stages of the trivia pipeline: the run summary, the corpus index and the demo.

``summary`` gathers the stage results into the dict written to ``metrics.json`` and
``results/trivia.json`` (rendered into the README by ``cinephile.report``); ``build_index`` and
``demo`` answer new questions from every chunk with the saved weights in a freshly loaded model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from lora import load_lora_weights

from cinephile import models
from cinephile.trivia import answer, evaluate, films
from cinephile.trivia.config import TriviaConfig
from cinephile.trivia.index import CorpusIndex
from cinephile.trivia.pipeline import Evaluation, Retrieved, Settings, Trained
from cinephile.trivia.zero_shot import Shelf


def error_analysis(evaluations: dict[str, Evaluation | None]) -> dict[str, tuple[pd.DataFrame, dict]]:
    """``evaluate.error_analysis`` of the tuned + retrieved row for each evaluation set given (None: skipped)."""
    return {name: evaluate.error_analysis(ev.lines, ev.records) for name, ev in evaluations.items() if ev}


def error_tables(analysis: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The failure counts side by side per set, and the example failures as one table."""
    counts = pd.concat({name: c.set_index("kind") for name, (c, _) in analysis.items()}, axis=1)
    examples = pd.DataFrame([{"set": name, "kind": kind, **{k: x[k] for k in ("question", "answer", "prediction")}}
                             for name, (_, ex) in analysis.items() for kind, rows in ex.items() for x in rows],
                            columns=["set", "kind", "question", "answer", "prediction"])
    return counts, examples


def result_tables(validation: Evaluation, external: Evaluation | None,
                  shelf: Shelf | None = None) -> dict[str, pd.DataFrame]:
    """Per evaluation set, the tuned reader's rows followed by the off-the-shelf rows (when read)."""
    tables = {"validation": validation.table, **({"external": external.table} if external is not None else {})}
    if shelf is None:
        return tables
    return {name: pd.concat([t, shelf.tables[name]], ignore_index=True) for name, t in tables.items()}


def plot_results(validation: Evaluation, external: Evaluation | None, path=None, shelf: Shelf | None = None):
    """EM / F1 bars per evaluation row (off-the-shelf rows included), one panel per evaluation set."""
    return evaluate.plot_results(result_tables(validation, external, shelf), path)


def timings(settings: Settings, retrieved: Retrieved, trained: Trained, validation: Evaluation,
            external: Evaluation | None, t_start: float, shelf: Shelf | None = None) -> dict[str, float]:
    """Seconds per stage and in total since ``t_start``."""
    out = {"settings_s": settings.seconds, "retrieval_s": retrieved.seconds, "training_s": trained.seconds,
           "evaluation_s": validation.seconds}
    if external is not None:
        out["external_eval_s"] = external.seconds
    if shelf is not None:
        out["off_the_shelf_s"] = shelf.seconds
    out["total_s"] = time.time() - t_start
    return out


def summary(cfg: TriviaConfig, retrieved: Retrieved, trained: Trained, validation: Evaluation,
            external: Evaluation | None, analysis: dict, timings_s: dict, shelf: Shelf | None = None) -> dict:
    """The run's results: what ``metrics.json`` and ``results/trivia.json`` hold (``cinephile.report`` reads it).

    ``results`` lists the tuned reader's rows, then the off-the-shelf rows; ``off_the_shelf`` names
    the best of them (chosen on validation) and the tuned reader's paired EM / F1 difference from it.
    """
    results = {name: t.to_dict("records") for name, t in result_tables(validation, external, shelf).items()}
    paired = {"validation": validation.paired}
    if external is not None:
        paired["external"] = external.paired
    off = None if shelf is None else {"models": list(cfg.off_the_shelf), "best_row": shelf.best_row,
                                      "paired_tuned_vs_best": shelf.paired}
    return {"model": cfg.model_name, "split": cfg.split, "prompt_style": cfg.prompt_style,
            "settings": {"chunk_tokens": cfg.chunk_tokens, "top_k": cfg.top_k, "lexical_weight": cfg.lexical_weight,
                         "raft_p_gold": cfg.raft_p_gold, "epochs": cfg.epochs, "bf16": cfg.bf16,
                         "lora_r": cfg.lora_r},
            "results": results,
            "paired_em_tuned_vs_base": paired,
            "off_the_shelf": off,
            "validation_em_by_kind": validation.by_kind().reset_index().to_dict("records"),
            "retrieval": {"validation_split": retrieved.recall,
                          "precision_recall": {m: df.to_dict("records")
                                               for m, df in (retrieved.precision_recall or {}).items()},
                          "external": external.info if external is not None else None},
            "errors": {name: counts.to_dict("records") for name, (counts, _) in analysis.items()},
            "n_train": len(trained.examples), "timings_s": timings_s, "wall_time_min": timings_s["total_s"] / 60}


def build_index(cfg: TriviaConfig, retrieved: Retrieved, embed_fn, out_dir) -> CorpusIndex:
    """A hybrid index over every chunk, saved as ``<out_dir>/corpus_index`` and loaded back (checked)."""
    corpus = CorpusIndex.build(retrieved.chunked, embed_fn, name="all-MiniLM-L6-v2",
                               lexical_weight=cfg.lexical_weight)
    corpus.save(Path(out_dir) / "corpus_index")
    return CorpusIndex.load(Path(out_dir) / "corpus_index")


def demo(cfg: TriviaConfig, questions: Sequence[tuple[str, str]], corpus: CorpusIndex, embed_fn, weights,
         records: Sequence[dict] = ()) -> pd.DataFrame:
    """Answer new questions with the saved ``weights`` loaded into a freshly loaded base model.

    Returns:
        One row per question: question, answer, expected, right, and the film of the top passage
        (``films.title_of`` over ``records``; without records, the ids of the records it comes from).
    """
    model, tokenizer = models.load_base_model(cfg.model_name, dtype=cfg.base_dtype())
    load_lora_weights(model, weights)
    blocks = films.film_blocks(records) if records and cfg.split == "film" else {}
    rows = []
    for question, expected in questions:
        got = answer.answer(question, model, tokenizer, corpus, embed_fn, style=cfg.prompt_style, k=cfg.top_k,
                            bf16=bool(cfg.bf16), answer_format=cfg.answer_format)
        rows.append({"question": question, "answer": got["answer"], "expected": expected,
                     "right": bool(evaluate.exact_match(got["answer"], expected)),
                     "top passage from": films.title_of(got["passages"][0], blocks) if blocks else got["source"]})
    return pd.DataFrame(rows)
