"""The trivia reader's ablation: one reader per step on the same film-disjoint validation questions.

Each step is the notebook's config with one thing changed (``dataclasses.replace``); ``ablation``
runs the pipeline's own stages for it (``load_reader``, ``chunk_and_retrieve``, ``train_reader``,
``validation_scores``). The notebook's opt-in cell and ``benchmarks/trivia_ablation.py`` call it;
its table is committed under ``results/``.

Reference:
    Zhang et al. 2024, "RAFT: Adapting Language Model to Domain Specific RAG".
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence

import pandas as pd

from cinephile import io, models
from cinephile.trivia import pipeline
from cinephile.trivia.config import TriviaConfig

logger = logging.getLogger(__name__)

COLUMNS = ["name", "n_train", "train_min", "val_context_recall", "em_all", "f1_all", "em_single", "em_comparison"]


def step_config(cfg: TriviaConfig, step: dict) -> TriviaConfig:
    """The config of one step: ``cfg`` with the step's reader, context, training data and, if given, epochs / bf16.

    LoRA targets are the step's model's preset, whatever ``cfg`` resolved them to.
    """
    return dataclasses.replace(
        cfg, model_name=step.get("model", cfg.model_name), chunk_tokens=step["chunk_tokens"], top_k=step["k"],
        lexical_weight=step["lexical_weight"], train_comparisons=step["comparisons"], raft_p_gold=step["p_gold"],
        comparison_pairs=(step["train_pairs"], cfg.comparison_pairs[1]),
        epochs=step.get("epochs", cfg.epochs), bf16=step.get("bf16", cfg.bf16), lora_targets="auto")


def load_splits(cfg: TriviaConfig, steps: Sequence[dict]) -> dict[int, pipeline.Split]:
    """``pipeline.load_and_split`` once per number of training pairs the steps use (validation is the same)."""
    if cfg.split != "film":
        raise ValueError(f'the ablation compares readers on the film-disjoint split; set split = "film", '
                         f'got {cfg.split!r}')
    pairs = dict.fromkeys(step["train_pairs"] for step in steps)
    return {n: pipeline.load_and_split(dataclasses.replace(cfg, comparison_pairs=(n, cfg.comparison_pairs[1])))
            for n in pairs}


def ablation(cfg: TriviaConfig, split_by_pairs: Mapping[int, pipeline.Split], embed_fn,
             steps: Sequence[dict]) -> pd.DataFrame:
    """Train and validate one reader per step; every step is scored on the same validation questions.

    Args:
        cfg: the notebook's resolved config (prompt style, LoRA, training settings).
        split_by_pairs: the split for each number of training film pairs the steps use (``load_splits``).
        embed_fn: the retriever's ``EmbedFn``.
        steps: dicts with ``name``, ``chunk_tokens``, ``k``, ``lexical_weight``, ``comparisons``
            (train on comparison questions?), ``train_pairs``, ``p_gold`` (None: train on the retrieved
            context) and optionally ``model``, ``epochs`` and ``bf16`` (else ``cfg``'s; ``bf16`` also
            sets generation's precision).

    Returns:
        One row per step: its settings, n_train, train minutes, validation EM / F1 overall and per
        kind (single-hop, comparison), and the recall of the fed validation context.
    """
    _check_steps(steps)
    missing = sorted({step["train_pairs"] for step in steps} - set(split_by_pairs))
    if missing:
        raise ValueError(f"steps train on {missing} comparison pairs but split_by_pairs has "
                         f"{sorted(split_by_pairs)}; build the splits with load_splits(cfg, steps)")
    rows = []
    for step in steps:
        t0 = time.time()
        step_cfg = pipeline.resolve_hardware(step_config(cfg, step))
        model, tokenizer, _ = pipeline.load_reader(step_cfg)
        retrieved = pipeline.chunk_and_retrieve(step_cfg, split_by_pairs[step["train_pairs"]], tokenizer, embed_fn,
                                                compare=False)
        pipeline.train_reader(step_cfg, model, tokenizer, retrieved)
        row = {**step, "n_train": len(retrieved.train), "train_min": round((time.time() - t0) / 60, 1),
               "val_context_recall": sum(r["context_recall"] for r in retrieved.val) / len(retrieved.val)}
        for kind, got in pipeline.validation_scores(step_cfg, model, tokenizer, retrieved).items():
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


def steps_for(cfg: TriviaConfig, *, first_pairs: int = 36, first_context: tuple[int, int] | None = None,
              train_pairs: int | None = None) -> list[dict]:
    """``ablation_steps`` ending at the resolved ``cfg`` (its context, reader, epochs, bf16 and training pairs)."""
    return ablation_steps(chunk_tokens=cfg.chunk_tokens, k=cfg.top_k, lexical_weight=cfg.lexical_weight,
                          model=cfg.model_name, epochs=cfg.epochs, bf16=cfg.bf16 or None,
                          first_pairs=first_pairs, train_pairs=train_pairs or cfg.comparison_pairs[0],
                          first_context=first_context)


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


def load_table(path) -> pd.DataFrame:
    """The columns of a saved ablation table (``results/trivia_ablation.json``) the notebook shows."""
    return pd.DataFrame(io.read_json(path)["rows"])[COLUMNS]
