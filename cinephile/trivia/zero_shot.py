"""Off-the-shelf instruct readers: another model reads the same contexts as the tuned reader, zero-shot.

These are the rows a user compares a tuned reader against: an instruct model that installs offline
(``models.PART_MODELS``, SmolLM2-135M-Instruct), prompted through its chat template with a fixed
system message, greedy, its first line as the answer (``reader.answer_of``). They are other models than the tuned one, so
they are their own evaluation call with their own row names; their per-question lines pair with the
tuned rows by question id (``evaluate.paired_difference``). ``keep_read`` asks the tuned reader's own
base model, adapters off, which training prompts it already reads (``TriviaConfig.keep_read``).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from lora import disable_lora

from cinephile import models
from cinephile.generate import generate_answers
from cinephile.io import write_jsonl
from cinephile.markdown import interval_text
from cinephile.prompts import CHAT, format_prompt
from cinephile.replies import ReplyCache, cached, open_cache
from cinephile.trivia.config import TriviaConfig
from cinephile.trivia.evaluate import f1_score, paired_difference, score_row
from cinephile.trivia.matching import accepted_answers
from cinephile.trivia.reader import (CHAT_SYSTEM, QUOTE_SYSTEM, REPLY_TOKENS, answer_of, chat_user_text,
                                     check_answer_format, trivia_examples)

logger = logging.getLogger(__name__)


CONTEXTS = {"retrieved_context": "retrieved context", "gold_context": "gold context"}


def prompt(tokenizer, question: str, context: str | None, answer_format: str = "answer") -> str:
    """The chat-template prompt of one question (``reader``'s chat style), ending where the answer starts;
    ``answer_format="quote"`` asks for the evidence first (``reader.QUOTE_SYSTEM``)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("an off-the-shelf reader needs a chat template (an instruct model); "
                         f"{getattr(tokenizer, 'name_or_path', 'this tokenizer')} has none")
    check_answer_format(answer_format)
    return format_prompt(chat_user_text(question, context), tokenizer, style=CHAT,
                         system=QUOTE_SYSTEM if answer_format == "quote" else CHAT_SYSTEM)


def display_name(model_name: str) -> str:
    """The model's name as rows show it: the hub id's last part ("Qwen2.5-Coder-1.5B-Instruct")."""
    spec = models.part_model(model_name)
    if spec:
        return spec.hub_id.split("/")[-1]
    if model_name in models.SMOLLM2_ALIASES:
        return "SmolLM2-135M-Instruct"
    return models.short_name(model_name)


def row_name(model_name: str, context_key: str, answer_format: str = "answer") -> str:
    """``"Qwen2.5-Coder-1.5B-Instruct, zero-shot + retrieved context"`` (``", zero-shot, evidence first + ..."``
    for the quote format)."""
    how = "zero-shot, evidence first" if answer_format == "quote" else "zero-shot"
    return f"{display_name(model_name)}, {how} + {CONTEXTS[context_key]}"


def evaluate_zero_shot(model, tokenizer, records: Sequence[dict], model_name: str, *,
                       context_keys: Sequence[str] = tuple(CONTEXTS), batch_size: int = 8,
                       max_new_tokens: int | None = None, bf16: bool | None = False, progress: bool = True,
                       answer_format: str = "answer",
                       cache: ReplyCache | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """EM / F1 of an off-the-shelf reader per context, and its per-question lines (``evaluate_qa``'s layout).

    Args:
        model, tokenizer: the instruct model (no adapters).
        records: evaluated records holding each of ``context_keys``.
        model_name: as for ``models.load_base_model``; names the rows (``row_name``).
        context_keys: the contexts read ("retrieved_context", "gold_context").
        max_new_tokens: None: ``reader.REPLY_TOKENS`` of the format.
        answer_format: "answer" (the first line is the answer) or "quote" (``reader.answer_of`` the reply).
        cache: the model's stored replies (``replies.ReplyCache``): only prompts it lacks are generated.

    Returns:
        ``(table, lines)`` with columns row, em, f1, n, and one dict per (row, question).
    """
    if not records:
        raise ValueError("no records to evaluate; is the evaluation split empty?")
    unknown = [k for k in context_keys if k not in CONTEXTS]
    if unknown:
        raise ValueError(f"unknown context keys {unknown}; use {list(CONTEXTS)}")
    lacking = [k for k in context_keys if any(k not in r for r in records)]
    if lacking:
        raise ValueError(f"records lack {lacking}; pass retrieved records (retrieval.with_gold_context for gold)")
    table, lines = [], []
    max_new_tokens = max_new_tokens or REPLY_TOKENS[answer_format]
    for key in tqdm(context_keys, desc=f"{display_name(model_name)}: {len(records)} questions", disable=not progress):
        name = row_name(model_name, key, answer_format)
        prompts = [prompt(tokenizer, r["question"], r[key], answer_format) for r in records]
        # stop at EOS (the chat turn's end); the first line is kept afterwards
        raw = cached(cache, prompts, lambda todo: generate_answers(
            model, tokenizer, todo, batch_size=batch_size, progress=False, bf16=bf16, max_new_tokens=max_new_tokens),
            max_new_tokens)
        row, row_lines = score_row(name, [answer_of(p) for p in raw], records)
        table.append(row)
        lines += row_lines
    return pd.DataFrame(table), lines


def read_with(model_names: Sequence[str], record_sets: dict[str, Sequence[dict]], *, bf16: bool | None = False,
              device: str | None = None, context_keys: Sequence[str] = tuple(CONTEXTS),
              batch_size: int = 8, progress: bool = True, formats: Sequence[str] = ("answer",),
              cache_dir=None) -> dict[str, tuple[pd.DataFrame, list[dict]]]:
    """Each off-the-shelf model, loaded once (bf16 weights when ``bf16``), reads every record set, prompted
    for each of ``formats`` ("answer", "quote": ``evaluate_zero_shot``). ``cache_dir``: replies already
    stored there are read back, not generated (``replies.open_cache``; None: every reply generated).

    Returns:
        ``{set name: (table, lines)}`` with every model's rows, in ``model_names`` order.
    """
    out = {name: ([], []) for name in record_sets}
    dtype = torch.bfloat16 if bf16 else torch.float32
    for model_name in model_names:
        model, tokenizer = models.load_base_model(model_name, dtype=dtype, device=models.pick_device(device))
        cache = open_cache(cache_dir, model_name, weights=dtype, bf16=bf16)
        for set_name, records in record_sets.items():
            for answer_format in formats:
                table, lines = evaluate_zero_shot(model, tokenizer, records, model_name, context_keys=context_keys,
                                                  batch_size=batch_size, bf16=bf16, progress=progress,
                                                  answer_format=answer_format, cache=cache)
                out[set_name][0].append(table)
                out[set_name][1].extend(lines)
        del model
        gc.collect()
    return {name: (pd.concat(tables, ignore_index=True), lines) for name, (tables, lines) in out.items()}


@dataclass
class Shelf:
    """``compare``: the off-the-shelf rows per evaluation set, and the tuned reader paired against the best."""

    tables: dict[str, pd.DataFrame]  # per set: row, em, f1, n
    lines: dict[str, list[dict]]  # per set: one dict per (row, question)
    best_row: str  # the off-the-shelf row with the retrieved context that scores best on validation EM
    paired: dict[str, dict]  # per set: {"em": ..., "f1": ...} tuned minus best_row, paired bootstrap
    seconds: float

    def paired_text(self) -> str:
        return "\n".join(f"{name}: tuned - {self.best_row}: EM {interval_text(p['em'])}, F1 {interval_text(p['f1'])}"
                         for name, p in self.paired.items())


def compare(model_names: Sequence[str], evaluated: dict[str, tuple[Sequence[dict], list[dict]]], tuned_row: str, *,
            bf16: bool | None = False, device: str | None = None, out_dir=None, progress: bool = True,
            context_keys: Sequence[str] = tuple(CONTEXTS), formats: Sequence[str] = ("answer",),
            cache_dir=None) -> Shelf:
    """Off-the-shelf rows on each evaluation set, paired with the tuned reader's ``tuned_row`` by question id.

    Args:
        model_names: the instruct models (``read_with``).
        evaluated: per set (``"validation"`` first), the records evaluated and the tuned reader's lines.
        tuned_row: the tuned reader's row compared.
        out_dir: gets ``predictions_off_the_shelf_<set>.jsonl`` (None: nothing written).
        context_keys: the contexts read (the retrieved one is needed: the pairing uses it).
        formats: the prompts each model reads ("answer"; "quote": also asked for the evidence first).
        cache_dir: stored replies to reuse and extend (``read_with``).

    The best off-the-shelf row is chosen on validation only (retrieved context, EM then F1), so the
    external set never picks what it is compared with.
    """
    if "validation" not in evaluated:
        raise ValueError("compare needs the validation set: the best off-the-shelf row is chosen on it")
    if "retrieved_context" not in context_keys:
        raise ValueError(f"compare pairs the tuned reader with a retrieved-context row; context_keys "
                         f"{list(context_keys)} must include 'retrieved_context'")
    t0 = time.time()
    read = read_with(model_names, {name: records for name, (records, _) in evaluated.items()}, bf16=bf16,
                     device=device, progress=progress, context_keys=context_keys, formats=formats,
                     cache_dir=cache_dir)
    val = read["validation"][0]
    val = val[val["row"].str.endswith(CONTEXTS["retrieved_context"])]
    best_row = str(val.sort_values(["em", "f1"], ascending=False).iloc[0]["row"])
    paired = {}
    for name, (_, tuned_lines) in evaluated.items():
        lines = tuned_lines + read[name][1]
        paired[name] = {key: paired_difference(lines, tuned_row, best_row, key=key) for key in ("em", "f1")}
        if out_dir is not None:
            write_jsonl(Path(out_dir) / f"predictions_off_the_shelf_{name}.jsonl", read[name][1])
    return Shelf({k: v[0] for k, v in read.items()}, {k: v[1] for k, v in read.items()}, best_row, paired,
                 time.time() - t0)


def keep_read(cfg: TriviaConfig, model, tokenizer, contexts: list[dict], key: str) -> tuple[list[dict], dict]:
    """The training records whose question the untuned reader (adapters off) already reads from ``key``: its
    greedy answer shares a word with a gold answer (F1 > 0). Comparison questions are always kept (a skill to
    learn, not a span to find), so only the others are read. Returns the kept records and
    ``{kind: {"kept", "dropped"}}``; with ``cfg.reply_cache`` replies read before are not generated again."""
    asked = [i for i, r in enumerate(contexts) if r["kind"] != "comparison"]
    cache = open_cache(cfg.reply_cache, cfg.model_name, weights=models.frozen_torch_dtype(cfg.frozen_dtype),
                       bf16=bool(cfg.bf16))
    budget = REPLY_TOKENS["answer"]
    answers = {}
    if asked:
        prompts = [e["prompt"] for e in trivia_examples([contexts[i] for i in asked], tokenizer, cfg.prompt_style,
                                                        key)]
        with disable_lora(model):
            answers = dict(zip(asked, cached(cache, prompts, lambda todo: generate_answers(
                model, tokenizer, todo, batch_size=cfg.batch_size, bf16=bool(cfg.bf16), max_new_tokens=budget),
                budget)))
    read = [i not in answers or f1_score(answers[i], accepted_answers(r)) > 0 for i, r in enumerate(contexts)]
    counts: dict[str, dict] = {}
    for r, ok in zip(contexts, read):
        c = counts.setdefault(r["kind"], {"kept": 0, "dropped": 0})
        c["kept" if ok else "dropped"] += 1
    logger.info("keep_read: %s", counts)
    return [r for r, ok in zip(contexts, read) if ok], counts
