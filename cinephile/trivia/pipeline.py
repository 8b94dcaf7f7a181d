"""The trivia pipeline's multi-reader runs: the ablation on the film-disjoint validation split.

``ablation`` trains one adapter per step (each step changes one thing against the last) and scores
it on the validation split only. The notebook's opt-in cell and ``benchmarks/trivia_ablation.py``
call it; its table is committed under ``results/``.

Reference:
    Zhang et al. 2024, "RAFT: Adapting Language Model to Domain Specific RAG".
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from lora import inject_lora

from cinephile import models
from cinephile.generate import generate_answers
from cinephile.train import TrainConfig, train
from cinephile.trivia import chunking, retrieval
from cinephile.trivia.evaluate import scores_by_kind
from cinephile.trivia.reader import reader_examples, trivia_examples

logger = logging.getLogger(__name__)


def ablation(train_sets: Mapping[int, Sequence[dict]], val_records: Sequence[dict], embed_fn,
             steps: Sequence[dict], *, model_name: str, lora_kwargs: dict, train_cfg: TrainConfig,
             style: str) -> pd.DataFrame:
    """Train and validate one reader per step; every step is scored on the same validation questions.

    Args:
        train_sets: training records (single-hop and comparison, with ``context``, not yet chunked)
            by the number of film pairs their comparison questions cover
            (``splits.film_split_with_comparisons(train_pairs=...)``).
        val_records: validation records, the same for every step.
        embed_fn: the retriever's ``EmbedFn``.
        steps: dicts with ``name``, ``chunk_tokens``, ``k``, ``lexical_weight``, ``comparisons``
            (train on comparison questions?), ``train_pairs`` (which of ``train_sets``), ``p_gold``
            (None: train on the retrieved context) and optionally ``model`` (else ``model_name``),
            ``epochs`` and ``bf16`` (else ``train_cfg``'s; ``bf16`` also sets generation's precision).
        model_name, lora_kwargs, train_cfg, style: the reader, as in the notebook.

    Returns:
        One row per step: its settings, n_train, train minutes, validation EM / F1 overall and per
        kind (single-hop, comparison), and the recall of the fed validation context.
    """
    _check_steps(steps)
    missing = sorted({step["train_pairs"] for step in steps} - set(train_sets))
    if missing:
        raise ValueError(f"steps train on {missing} comparison pairs but train_sets has {sorted(train_sets)}; "
                         "build those training sets with splits.film_split_with_comparisons(train_pairs=...)")
    rows = []
    for step in steps:
        t0 = time.time()
        name = step.get("model", model_name)
        model, tokenizer = models.load_base_model(name)
        cfg = dataclasses.replace(train_cfg, **{key: step[key] for key in ("epochs", "bf16") if key in step})
        torch.manual_seed(cfg.seed)  # the adapters' initial values do not depend on the steps run before
        inject_lora(model, models.lora_preset(name, **lora_kwargs))
        chunk = lambda recs: chunking.chunk_records(recs, tokenizer, step["chunk_tokens"])  # noqa: E731
        use = [r for r in train_sets[step["train_pairs"]] if step["comparisons"] or r.get("kind") != "comparison"]
        tr = retrieval.with_gold_context(retrieval.retrieve(chunk(use), embed_fn, k=step["k"],
                                                            lexical_weight=step["lexical_weight"]))
        va = retrieval.with_gold_context(retrieval.retrieve(chunk(val_records), embed_fn, k=step["k"],
                                                            lexical_weight=step["lexical_weight"]))
        val_ex = trivia_examples(va, tokenizer, style)
        train(model, tokenizer, reader_examples(tr, tokenizer, style, k=step["k"], p_gold=step["p_gold"]),
              val_ex[:48], cfg)
        train_min = (time.time() - t0) / 60
        row = {**step, "n_train": len(tr), "train_min": round(train_min, 1),
               "val_context_recall": sum(r["context_recall"] for r in va) / len(va)}
        preds = generate_answers(model, tokenizer, [e["prompt"] for e in val_ex], progress=False, bf16=bool(cfg.bf16))
        for kind, got in scores_by_kind(preds, va).items():
            row[f"em_{kind}"], row[f"f1_{kind}"], row[f"n_{kind}"] = got["em"], got["f1"], got["n"]
        logger.info("%s: EM %.1f (%.1f min)", step["name"], row["em_all"], (time.time() - t0) / 60)
        rows.append(row)
    return pd.DataFrame(rows)


_STEP_KEYS = ("name", "chunk_tokens", "k", "lexical_weight", "comparisons", "train_pairs", "p_gold")


def _check_steps(steps: Sequence[dict]) -> None:
    """Refuse an ablation step with a missing or out-of-range setting before the first one trains."""
    for i, step in enumerate(steps):
        missing = [key for key in _STEP_KEYS if key not in step]
        if missing:
            raise ValueError(f"ablation step {i} ({step.get('name')!r}) has no {missing}; build steps with "
                             "ablation_steps()")
        p_gold = step["p_gold"]
        if not (step["k"] >= 1 and step["chunk_tokens"] >= 1 and 0 <= step["lexical_weight"] <= 1
                and (p_gold is None or 0 <= p_gold <= 1)):
            raise ValueError(f"ablation step {step['name']!r}: need k >= 1, chunk_tokens >= 1, lexical_weight in "
                             f"[0, 1] and p_gold None or in [0, 1], got k={step['k']}, chunk_tokens="
                             f"{step['chunk_tokens']}, lexical_weight={step['lexical_weight']}, p_gold={p_gold}")


def ablation_steps(*, chunk_tokens: int, k: int, lexical_weight: float, p_gold: float = 0.8,
                   first_model: str = "smollm2-135m", model: str = "gemma3-270m", epochs: int = 1,
                   bf16: bool | None = None, first_pairs: int = 36, train_pairs: int = 36,
                   first_context: tuple[int, int] | None = None) -> list[dict]:
    """The ablation: the first recipe on the film-disjoint split, then one change per step.

    The first steps use ``first_model`` (the first version's reader), one epoch without bf16,
    comparison questions over ``first_pairs`` film pairs and ``first_context`` (chunk tokens, k;
    None: ``chunk_tokens``, ``k``) for the hybrid retrieval; then ``model`` swaps in with everything
    else equal (no model step when they are the same); then a step trains ``epochs`` epochs under
    ``bf16`` when either differs from that, one ``train_pairs`` pairs and a last one feeds the top
    ``k`` chunks of ``chunk_tokens`` tokens, each only when it differs from the first recipe.
    """
    first_tokens, first_k = first_context or (chunk_tokens, k)
    base = {"model": first_model, "chunk_tokens": 192, "k": 1, "lexical_weight": 0.0, "comparisons": False,
            "train_pairs": first_pairs, "p_gold": None, "epochs": 1, "bf16": None}
    steps = [{"name": "MiniLM top-1 chunk, single-hop training", **base}]
    steps.append({**steps[-1], "name": f"+ hybrid retrieval, top-{first_k} chunks of {first_tokens} tokens",
                  "chunk_tokens": first_tokens, "k": first_k, "lexical_weight": lexical_weight})
    steps.append({**steps[-1], "name": "+ comparison questions in training", "comparisons": True})
    steps.append({**steps[-1], "name": f"+ RAFT contexts ({p_gold:.0%} with the evidence)", "p_gold": p_gold})
    if models.short_name(model) != models.short_name(first_model):
        steps.append({**steps[-1], "name": f"+ {models.short_name(model)} reader", "model": model})
    if epochs != 1 or bf16:
        steps.append({**steps[-1], "name": f"+ {epochs} epoch{'s' if epochs > 1 else ''}"
                      + (", bf16 autocast" if bf16 else ""), "epochs": epochs, "bf16": bf16})
    if train_pairs != first_pairs:
        steps.append({**steps[-1], "name": f"+ comparisons over {train_pairs} film pairs (not {first_pairs})",
                      "train_pairs": train_pairs})
    if (chunk_tokens, k) != (first_tokens, first_k):
        steps.append({**steps[-1], "name": f"+ top-{k} chunks of {chunk_tokens} tokens (not {first_k} of {first_tokens})",
                      "chunk_tokens": chunk_tokens, "k": k})
    return steps
