"""The trivia pipeline, one function per stage: data -> settings -> chunk + retrieve -> train -> evaluate.

Each stage takes the (resolved) ``TriviaConfig`` and the previous stage's result and returns a small
result object. main.ipynb calls them in order, ``ablation.ablation`` calls the same functions with
one changed config per step, and the benchmarks call them with the config a run saved.
The run summary, the corpus index and the demo are in ``trivia.results``.

Reference:
    Zhang et al. 2024, "RAFT: Adapting Language Model to Domain Specific RAG".
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from lora import inject_lora

from cinephile import io, models
from cinephile.train import save_run, train
from cinephile.trivia import chunking, data, evaluate, films, questions, reader, retrieval, splits, zero_shot
from cinephile.trivia.config import TriviaConfig, resolve_hardware
from cinephile.trivia.matching import covers

logger = logging.getLogger(__name__)

__all__ = ["TriviaConfig", "resolve_hardware", "load_and_split", "load_reader", "choose_settings",
           "chunk_and_retrieve", "choose_prompt_style", "train_reader", "evaluate_reader", "validation_scores",
           "evaluate_external", "evaluate_off_the_shelf"]

TUNED_ROW = evaluate.EVAL_ROWS[2]  # ("tuned + retrieved context", True, "retrieved_context")
BASE_ROW = evaluate.EVAL_ROWS[1]


@dataclass
class Split:
    """``load_and_split``: the questions, the training / validation sides and what the notebook shows."""

    records: list[dict]  # the loaded single-hop questions
    train_raw: list[dict]  # training questions with ``context`` and ``kind`` (single / comparison)
    val_raw: list[dict]  # validation questions, same layout
    facts: dict = field(default_factory=dict)  # year and director per film (comparison questions)
    report: object = None  # the CSV loader's report (rows kept / skipped)

    @property
    def val_ids(self) -> set[str]:
        return {r["id"] for r in self.val_raw}

    def table(self) -> pd.DataFrame:
        """Questions and films per split side and kind."""
        rows = pd.DataFrame([{"split": side, "kind": r["kind"], "film": r.get("film")}
                             for side, rs in (("train", self.train_raw), ("validation", self.val_raw)) for r in rs])
        return rows.groupby(["split", "kind"]).agg(questions=("kind", "size"), films=("film", "nunique"))

    def val_films(self) -> list[str]:
        return sorted({r["film"] for r in self.val_raw if r.get("film")})

    def examples(self) -> pd.DataFrame:
        """A few validation questions, first and last."""
        return pd.DataFrame(self.val_raw)[["id", "kind", "question", "answer"]].iloc[[0, 1, -3, -2, -1]]


def load_and_split(cfg: TriviaConfig) -> Split:
    """Load the QA CSV (built from TriviaQA first when ``cfg.triviaqa_source``) and split it.

    ``cfg.split == "film"``: whole films held out, contexts rebuilt per side, comparison questions
    over ``cfg.comparison_pairs`` film pairs; ``"id"``: a seeded split by question id.
    """
    if cfg.triviaqa_source:
        logger.info("TriviaQA build: %s", data.build_triviaqa_csv(cfg.triviaqa_source, cfg.data_csv))
    records, report = data.load_qa_csv(cfg.data_csv)
    records = records[:cfg.max_questions] if cfg.max_questions else records
    if cfg.split == "film":
        facts = films.read_facts(cfg.facts_csv) if cfg.facts_csv else {}
        train_raw, val_raw = splits.film_split_with_comparisons(
            records, facts, val_fraction=cfg.val_fraction, train_pairs=cfg.comparison_pairs[0],
            val_pairs=cfg.comparison_pairs[1], bridges=cfg.bridges, similar_distractors=cfg.similar_distractors)
        if any(cfg.generated):
            train_raw, val_raw = with_generated(cfg, train_raw, val_raw)
        return Split(records, train_raw, val_raw, facts, report)
    if cfg.split != "id":
        raise ValueError(f'split must be "film" or "id", got {cfg.split!r}')
    if cfg.similar_distractors is not None:
        raise ValueError(f"similar_distractors={cfg.similar_distractors} rebuilds contexts from films of one side of "
                         'a film split; set split="film", or similar_distractors=None')
    train_raw, val_raw = splits.split_train_val([{**r, "kind": "single"} for r in records],
                                                val_fraction=cfg.val_fraction)
    return Split(records, train_raw, val_raw, {}, report)


def with_generated(cfg: TriviaConfig, train_raw: list[dict], val_raw: list[dict]) -> tuple[list[dict], list[dict]]:
    """Both sides plus ``cfg.generated`` questions of ``cfg.generated_questions`` about their own films."""
    if not cfg.generated_questions or not Path(cfg.generated_questions).is_file():
        raise FileNotFoundError(f"generated={cfg.generated} asks for written questions, but {cfg.generated_questions!r} "
                                "is not a file; write it with python -m cinephile.trivia.questions, or set "
                                "GENERATED = (0, 0)")
    written = io.read_jsonl(cfg.generated_questions, required=("id", "question", "answer", "film"))
    train_add = questions.attach(written, train_raw, limit=cfg.generated[0], seed=cfg.seed, prefix="train-")
    val_add = questions.attach(written, val_raw, limit=cfg.generated[1], seed=cfg.seed, prefix="val-")
    films_here = {r.get("film") for r in train_raw + val_raw}
    elsewhere = sum(1 for w in written if w["film"] not in films_here)
    logger.info("generated questions: %d in %s; %d to training, %d to validation%s", len(written),
                cfg.generated_questions, len(train_add), len(val_add),
                f"; {elsewhere} about films outside these questions' films, left out" if elsewhere else "")
    return train_raw + train_add, val_raw + val_add


def load_reader(cfg: TriviaConfig):
    """The base model (in ``cfg.frozen_dtype``) with freshly initialised (seeded) fp32 LoRA adapters:
    ``(model, tokenizer, lora_names)``."""
    model, tokenizer = models.load_base_model(cfg.model_name, dtype=cfg.base_dtype(),
                                              device=models.pick_device(cfg.device))
    torch.manual_seed(cfg.seed)  # the adapters' initial values do not depend on what ran before
    return model, tokenizer, inject_lora(model, cfg.lora_config())


@dataclass
class Settings:
    """``choose_settings``: the resolved config and the tables the choice was made from."""

    cfg: TriviaConfig
    weight_table: pd.DataFrame | None  # recall@1 per BM25 weight (None: the weight was given)
    context_table: pd.DataFrame  # fed-context recall and length per chunk size and k
    seconds: float

    def context_grid(self) -> pd.DataFrame:
        """``context_table`` as chunk size (rows) x k (columns), recall and mean tokens."""
        return self.context_table.pivot(index="chunk_tokens", columns="k", values=["context_recall", "context_tokens"])


def choose_settings(cfg: TriviaConfig, split: Split, tokenizer, embed_fn, window: int) -> Settings:
    """Resolve lexical_weight, chunk_tokens and top_k on the training questions only.

    The BM25 weight maximises recall@1 of the single-hop training questions at 192-token chunks;
    chunk size and k give the shortest context within 0.02 of the best recall under
    ``cfg.max_context_tokens`` (``reader.choose_context``). ``chunk_tokens`` is then capped to the
    model window minus ``cfg.reserve_tokens`` (``chunking.chunk_budget``).
    """
    t0 = time.time()
    weight, weight_table = cfg.lexical_weight, None
    if weight == "auto":
        singles = [r for r in split.train_raw if r["kind"] == "single"]
        weight, weight_table = retrieval.choose_lexical_weight(chunking.chunk_records(singles, tokenizer, 192),
                                                               embed_fn, k=1)
    table = reader.context_table(split.train_raw, tokenizer, embed_fn, sizes=cfg.chunk_choices, ks=cfg.k_choices,
                                 lexical_weight=weight)
    chosen = reader.choose_context(table, max_tokens=cfg.max_context_tokens)
    size = chosen["chunk_tokens"] if cfg.chunk_tokens == "auto" else cfg.chunk_tokens
    budget = chunking.chunk_budget(tokenizer, window=window, reserve_tokens=cfg.reserve_tokens, max_chunk_tokens=size)
    resolved = dataclasses.replace(cfg, lexical_weight=float(weight), chunk_tokens=budget,
                                   top_k=chosen["k"] if cfg.top_k == "auto" else cfg.top_k)
    return Settings(resolved, weight_table, table, time.time() - t0)


@dataclass
class Retrieved:
    """``chunk_and_retrieve``: chunked records, retrieved training / validation records, recall."""

    chunked: list[dict]  # every question with its ``chunks``
    train: list[dict]  # retrieved training records (``retrieved_context``, ``gold_context``)
    val: list[dict]  # retrieved validation records
    recall: dict  # recall@1-3 and context_recall over all questions
    precision_recall: dict[str, pd.DataFrame] | None  # per retriever, on single-hop records with several chunks
    seconds: float

    def describe(self) -> str:
        n = pd.Series([len(r["chunks"]) for r in self.chunked])
        return (f"{len(self.chunked)} records, chunks per context: mean {n.mean():.1f}, max {n.max()}\n"
                f"train {len(self.train)} / validation {len(self.val)} questions | "
                f"{ {k: round(v, 3) for k, v in self.recall.items()} }")

    def precision_recall_table(self) -> pd.DataFrame:
        return pd.concat({m: df.set_index("k")[["precision", "recall"]]
                          for m, df in self.precision_recall.items()}, axis=1)


def chunk_and_retrieve(cfg: TriviaConfig, split: Split, tokenizer, embed_fn, out_dir=None, *,
                       compare: bool = True, progress: bool = False) -> Retrieved:
    """Chunk every context to ``cfg.chunk_tokens``, retrieve the top ``cfg.top_k`` chunks, split.

    Writes ``processed_chunks_with_qa.jsonl``, ``training_data.jsonl`` and ``validation_data.jsonl``
    in ``out_dir`` (None: nothing written). ``compare``: also the precision / recall@k of MiniLM,
    BM25 and the hybrid on the single-hop records with several chunks.
    """
    t0 = time.time()
    train_raw = [r for r in split.train_raw if cfg.train_comparisons or r.get("kind") != "comparison"]
    chunked = chunking.chunk_records(train_raw + split.val_raw, tokenizer, cfg.chunk_tokens, overlap_sentences=1,
                                     progress=progress)
    if out_dir is not None:
        io.write_jsonl(Path(out_dir) / "processed_chunks_with_qa.jsonl", chunked)
    train_records, val_records, recall = retrieval.retrieve_and_split(
        chunked, embed_fn, k=cfg.top_k, lexical_weight=cfg.lexical_weight, val_ids=split.val_ids, out_dir=out_dir)
    pr = None
    if compare:
        single = [r for r in chunked if r["kind"] == "single" and len(r["chunks"]) > 1]
        weights = {"MiniLM": 0.0, "BM25": 1.0, f"hybrid (w={cfg.lexical_weight})": cfg.lexical_weight}
        pr = retrieval.compare_retrievers(single, embed_fn, weights, ks=[1, 2, 3, 5])
    return Retrieved(chunked, train_records, val_records, recall, pr, time.time() - t0)


def choose_prompt_style(cfg: TriviaConfig, model, tokenizer, retrieved: Retrieved):
    """Resolve ``prompt_style="auto"``: the format with the lowest base-model answer loss.

    Returns:
        ``(cfg, table)``; ``table`` is None when the style was given.
    """
    if cfg.prompt_style != "auto":
        return cfg, None
    style, table = reader.choose_prompt_style(model, tokenizer, retrieved.val[:48], cfg.max_len)
    return dataclasses.replace(cfg, prompt_style=style), table


@dataclass
class Trained:
    """``train_reader``: the training prompts, the history and the saved files."""

    examples: list[dict]
    n_with_evidence: int | None  # training contexts that hold the evidence (None: retrieved contexts)
    history: dict
    saved: dict | None  # {"weights", "adapter", "config"} paths (None: not saved)
    seconds: float
    read_filter: dict | None = None  # ``keep_read``: prompts kept / dropped per kind (None: no filter)

    def describe(self) -> str:
        h, n_gold = self.history, "-" if self.n_with_evidence is None else self.n_with_evidence
        saved = f" | saved {self.saved['weights']} and {self.saved['adapter']}/" if self.saved else ""
        return (f"{len(self.examples)} training prompts, {n_gold} with the evidence\n"
                f"best epoch {h['best_epoch']}: val loss {h['initial_val_loss']:.3f} -> {h['best_val_loss']:.3f}"
                f" | {self.seconds / 60:.1f} min{saved}\nlast training example:\n"
                + self.examples[-1]["prompt"] + self.examples[-1]["response"])


def weights_name(cfg: TriviaConfig) -> str:
    return f"lora_{models.short_name(cfg.model_name)}_triviaqa_weights.pth"


def train_reader(cfg: TriviaConfig, model, tokenizer, retrieved: Retrieved, run_dir=None) -> Trained:
    """Train the adapters on RAFT contexts (``cfg.raft_p_gold``) and save them with the resolved config.

    ``cfg.max_train_examples`` keeps a seeded sample of the prompts (in their order). Validation loss
    is measured on the first 48 validation prompts; ``run_dir`` gets the ``.pth``
    weights, the PEFT adapter and ``config.json`` (``asdict(cfg)`` plus the history).
    """
    if not cfg.resolved():
        raise ValueError(f"resolve the config before training; still auto: {cfg}")
    t0 = time.time()
    contexts, key = reader.reader_contexts(retrieved.train, k=cfg.top_k, p_gold=cfg.raft_p_gold, seed=cfg.seed)
    if cfg.max_train_examples is not None and len(contexts) > cfg.max_train_examples:
        keep = sorted(random.Random(f"{cfg.seed}-train-sample").sample(range(len(contexts)), cfg.max_train_examples))
        contexts = [contexts[i] for i in keep]
    read_filter = None
    if cfg.keep_read:
        contexts, read_filter = zero_shot.keep_read(cfg, model, tokenizer, contexts, key)
    train_ex = reader.trivia_examples(contexts, tokenizer, cfg.prompt_style, key, cfg.answer_format)
    val_ex = reader.trivia_examples(retrieved.val, tokenizer, cfg.prompt_style, answer_format=cfg.answer_format)
    n_gold = None if cfg.raft_p_gold is None else sum(covers(r, r[key]) for r in contexts)
    history = train(model, tokenizer, train_ex, val_ex[:48], cfg.train_config())
    seconds = time.time() - t0
    saved = None
    if run_dir is not None:
        saved = save_run(model, run_dir, weights_name=weights_name(cfg),
                         config={**dataclasses.asdict(cfg), "history": history})
    return Trained(train_ex, n_gold, history, saved, seconds, read_filter)


@dataclass
class Evaluation:
    """``evaluate_reader`` / ``evaluate_external``: the table, per-question lines and the paired difference."""

    records: list[dict]  # the records evaluated
    table: pd.DataFrame  # row, em, f1, n
    lines: list[dict]  # one per (row, question)
    paired: dict | None  # tuned + retrieved minus base + retrieved, EM points, paired bootstrap (None: a row not run)
    seconds: float
    info: dict | None = None  # external set only: n, load report, retrieval at 192 tokens, context recall
    retrieval_table: pd.DataFrame | None = None  # external set only: recall per retriever at 192 tokens

    def by_kind(self) -> pd.DataFrame:
        return evaluate.em_by_kind(self.lines, self.records).round(1)

    def paired_text(self) -> str:
        rounded = {k: round(v, 1) if isinstance(v, float) else v for k, v in self.paired.items()}
        return f"tuned - base (retrieved context), EM points: {rounded}"


def _evaluate(cfg, model, tokenizer, records, path, t0, rows=evaluate.EVAL_ROWS, **extra) -> Evaluation:
    table, lines = evaluate.evaluate_qa(model, tokenizer, records, cfg.prompt_style, predictions_path=path,
                                        bf16=bool(cfg.bf16), rows=rows, answer_format=cfg.answer_format)
    names = {row[0] for row in rows}
    paired = (evaluate.paired_difference(lines, TUNED_ROW[0], BASE_ROW[0])
              if {TUNED_ROW[0], BASE_ROW[0]} <= names else None)
    return Evaluation(records, table, lines, paired, time.time() - t0, **extra)


def evaluate_reader(cfg: TriviaConfig, model, tokenizer, retrieved: Retrieved, run_dir=None, *,
                    rows=evaluate.EVAL_ROWS) -> Evaluation:
    """The evaluation ``rows`` (default: every row, base and tuned) on the validation split; predictions also
    in ``predictions_validation.jsonl``."""
    path = Path(run_dir) / "predictions_validation.jsonl" if run_dir is not None else None
    return _evaluate(cfg, model, tokenizer, retrieved.val, path, time.time(), rows)


def validation_scores(cfg: TriviaConfig, model, tokenizer, retrieved: Retrieved) -> dict[str, dict]:
    """EM / F1 of the tuned reader with the retrieved context, overall and per kind (``scores_by_kind``)."""
    _, lines = evaluate.evaluate_qa(model, tokenizer, retrieved.val, cfg.prompt_style, rows=[TUNED_ROW],
                                    progress=False, bf16=bool(cfg.bf16), answer_format=cfg.answer_format)
    return evaluate.scores_by_kind([x["prediction"] for x in lines], retrieved.val)


def evaluate_external(cfg: TriviaConfig, model, tokenizer, embed_fn, run_dir=None, *,
                      rows=evaluate.EVAL_ROWS) -> Evaluation | None:
    """The external test set (``cfg.external_csv``), scored once with the frozen settings; None without one.

    Retrieval recall is also measured at 192 SmolLM2-token chunks, the chunks every earlier version
    was scored on, so it stays comparable across versions.
    """
    if not cfg.external_csv:
        return None
    t0 = time.time()
    ext, report = data.load_qa_csv(cfg.external_csv)
    ext = [{**r, "kind": "external"} for r in ext[:cfg.external_limit] if r]
    at_192 = chunking.chunk_records(ext, models.load_tokenizer("smollm2-135m"), 192)
    at_192 = retrieval.recall_by_retriever(at_192, embed_fn,
                                           {"MiniLM": 0.0, "BM25": 1.0, "hybrid": cfg.lexical_weight})
    records = retrieval.with_gold_context(retrieval.retrieve(
        chunking.chunk_records(ext, tokenizer, cfg.chunk_tokens), embed_fn, k=cfg.top_k,
        lexical_weight=cfg.lexical_weight))
    info = {"n": len(records), "load_report": report, "retrieval_192": at_192,
            "context_recall": sum(r["context_recall"] for r in records) / len(records)}
    path = Path(run_dir) / "predictions_external.jsonl" if run_dir is not None else None
    return _evaluate(cfg, model, tokenizer, records, path, t0, rows, info=info,
                     retrieval_table=pd.DataFrame(at_192).T.rename_axis("retriever (192-token chunks)"))


def evaluate_off_the_shelf(cfg: TriviaConfig, validation: Evaluation, external: Evaluation | None,
                           run_dir=None, *, context_keys=tuple(zero_shot.CONTEXTS),
                           formats=("answer",)) -> zero_shot.Shelf | None:
    """``cfg.off_the_shelf`` instruct models read the same contexts zero-shot; paired with the tuned reader.

    None when ``cfg.off_the_shelf`` is empty. The models load in bf16 when ``cfg.bf16`` (they are
    only read, never trained). ``formats``: the prompts they read (``zero_shot.compare``).
    """
    if not cfg.off_the_shelf:
        return None
    sets = {"validation": validation, **({"external": external} if external is not None else {})}
    return zero_shot.compare(cfg.off_the_shelf, {name: (ev.records, ev.lines) for name, ev in sets.items()},
                             TUNED_ROW[0], bf16=bool(cfg.bf16), device=cfg.device, out_dir=run_dir,
                             context_keys=context_keys, formats=formats, cache_dir=cfg.reply_cache)
