"""Choosing the rating model's settings on the validation split: named variants and an optuna study.

Every trial trains a fresh adapter on the training instructions and scores the expected rating on
validation targets (each user's second-to-last rating), never on the test split. The notebook's
opt-in cells call these functions; their tables are committed under ``results/``.
"""

from __future__ import annotations

import logging
import numbers
import time

import numpy as np

from lora import inject_lora

from cinephile import models
from cinephile.prompts import chat_examples
from cinephile.ratings import instructions, scoring
from cinephile.ratings.evaluate import rating_metrics
from cinephile.ratings.scoring import RATING_SYSTEM, RESIDUAL_SYSTEM
from cinephile.train import TrainConfig, token_loss, train

logger = logging.getLogger(__name__)

DEFAULTS = dict(model_name="smollm2-135m", r=16, alpha=32, dropout=0.1, layers=None, lr=5e-4, epochs=1,
                batch_size=8, max_len=448, loss="rating", rating_lambda=0.1, per_user=1, residual_to=None)


def pick_per_user(examples: list[dict], per_user: int) -> list[dict]:
    """Keep each user's ``per_user`` (>= 1) most recent training instructions (examples are in time order per user)."""
    if isinstance(per_user, bool) or not isinstance(per_user, numbers.Integral) or per_user < 1:
        raise ValueError(f"per_user must be a whole number >= 1 (instructions kept per user), got {per_user!r}")
    by_user: dict[int, list[dict]] = {}
    for e in examples:
        by_user.setdefault(e["user_id"], []).append(e)
    return [e for user in sorted(by_user) for e in by_user[user][-per_user:]]


def train_and_validate(train_raw: list[dict], val_raw: list[dict], *, n_val_loss: int = 32, **settings) -> dict:
    """Train one adapter with ``settings`` (keys of ``DEFAULTS``) and score it on ``val_raw``.

    ``residual_to`` (a recommender in the examples' predictions, e.g. "SVD++") trains the adjustment to
    its prediction (``instructions.as_residual``) instead of the rating.

    Returns:
        The settings plus n_train, train_s, val_rmse, val_mae and val_n (expected-value ratings).
    """
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; choose from {sorted(DEFAULTS)}")
    s = {**DEFAULTS, **settings}

    answers, system = scoring.RATING_ANSWERS, RATING_SYSTEM
    for raw in (train_raw, val_raw):  # before any work
        instructions.check_rating_examples(raw)
    picked = pick_per_user(train_raw, s["per_user"])
    if s["residual_to"]:
        picked, val_raw = (instructions.as_residual(x, s["residual_to"]) for x in (picked, val_raw))
        answers, system = scoring.ADJUSTMENT_ANSWERS, RESIDUAL_SYSTEM
    model, tokenizer = models.load_base_model(s["model_name"])
    inject_lora(model, models.lora_preset(s["model_name"], r=int(s["r"]), alpha=s["alpha"], dropout=s["dropout"],
                                          layers=s["layers"]))
    train_ex = chat_examples(picked, tokenizer, system)
    val_ex = chat_examples(val_raw, tokenizer, system)
    cfg = TrainConfig(epochs=int(s["epochs"]), lr=float(s["lr"]), batch_size=int(s["batch_size"]),
                      max_len=int(s["max_len"]))
    loss_fn = scoring.RatingLoss(tokenizer, lam=s["rating_lambda"], answers=answers) if s["loss"] == "rating" else token_loss
    t0 = time.time()
    train(model, tokenizer, train_ex, val_ex[:n_val_loss], cfg, loss_fn=loss_fn)
    train_s = time.time() - t0
    scored = scoring.score_ratings(model, tokenizer, [e["prompt"] for e in val_ex], batch_size=8, answers=answers,
                                      anchors=[e.get("anchor") for e in val_raw] if answers.residual else None)
    metrics = rating_metrics(np.array([e["rating"] for e in val_raw]), scored["expected"])
    return {**s, "layers": None if s["layers"] is None else list(s["layers"]), "n_train": len(train_ex),
            "train_s": round(train_s, 1), "val_rmse": metrics["rmse"], "val_mae": metrics["mae"],
            "val_n": len(val_raw)}


def run_variants(variants: dict[str, dict], train_raw: list[dict], val_raw: list[dict]) -> list[dict]:
    """``train_and_validate`` for each named variant; rows in the order given."""
    rows = []
    for name, settings in variants.items():
        logger.warning("variant %s: %s", name, settings)
        rows.append({"variant": name, **train_and_validate(train_raw, val_raw, **settings)})
    return rows


def reference_rows(val_raw: list[dict], names: tuple[str, ...]) -> list[dict]:
    """Validation RMSE of the recommenders whose predictions the prompts carry (same validation pairs)."""
    y = np.array([e["rating"] for e in val_raw])
    return [{"variant": f"{name} (recommender)", "val_n": len(val_raw),
             "val_rmse": rating_metrics(y, np.array([e["predictions"][name] for e in val_raw]))["rmse"]}
            for name in names]
