"""Choosing the rating model's settings on the validation split: named variants and the recommender references.

Every variant trains a fresh adapter on the training instructions with the pipeline's stages
(``pipeline.load_rating_model``, ``pipeline.train_rating_model``, ``pipeline.expected_ratings``) and scores
the expected rating on validation targets (each user's second-to-last rating), never on the test split.
``optuna_study`` searches rank, learning rate, instructions per user and the cross-entropy weight with
optuna's TPE sampler on the same validation pairs. The notebook's opt-in cells call these functions; their
tables are committed under ``results/``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from cinephile import io
from cinephile.prompts import chat_examples
from cinephile.ratings import head, instructions, pipeline
from cinephile.train import train
from cinephile.ratings.evaluate import rating_metrics
from cinephile.ratings.config import RatingsConfig

logger = logging.getLogger(__name__)

DEFAULTS = dict(model_name="smollm2-135m", r=16, alpha=32, dropout=0.1, layers=None, lr=5e-4, epochs=1,
                batch_size=8, max_len=448, loss="rating", rating_lambda=0.1, per_user=1, residual_to=None, recent=0,
                shared_history=False, head=False, select=True)
FIELDS = {"r": "lora_r", "alpha": "lora_alpha", "dropout": "lora_dropout", "layers": "lora_layers",
          "recent": "recent_ratings"}  # -> RatingsConfig
OWN = ("per_user", "head", "select")  # settings of the variant itself, not of RatingsConfig


def pick_per_user(examples: list[dict], per_user: int) -> list[dict]:
    """Each user's ``per_user`` (>= 1) most recent instructions (in time order per user), users in id order."""
    by_user = sorted(examples, key=lambda e: e["user_id"])  # stable: time order kept within a user
    return [by_user[i] for i in instructions.latest_per_user([e["user_id"] for e in by_user], per_user)]


def variant_config(settings: dict) -> RatingsConfig:
    """The ``RatingsConfig`` of a variant: ``DEFAULTS`` updated with ``settings`` (``per_user`` aside)."""
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; choose from {sorted(DEFAULTS)}")
    s = {**DEFAULTS, **settings}
    kept = {FIELDS.get(k, k): v for k, v in s.items() if k not in OWN}
    kept["lora_layers"] = None if kept["lora_layers"] is None else tuple(kept["lora_layers"])
    kept.update(lora_r=int(kept["lora_r"]), epochs=int(kept["epochs"]), lr=float(kept["lr"]),
                batch_size=int(kept["batch_size"]), max_len=int(kept["max_len"]))
    return RatingsConfig(**kept).resolved()


def train_and_validate(train_raw: list[dict], val_raw: list[dict], *, n_val_loss: int = 32, **settings) -> dict:
    """Train one adapter with ``settings`` (keys of ``DEFAULTS``) and score it on ``val_raw``.

    ``residual_to`` (a recommender in the examples' predictions, e.g. "SVD++") trains the adjustment to
    its prediction (``instructions.as_residual``) instead of the rating; ``recent`` shows that many latest
    earlier ratings with their values in place of the liked and disliked titles (``instructions.showing_recent``);
    ``shared_history`` batches each user's instructions together (``train_raw`` built with that option);
    ``head`` reads the adjustment from the last hidden state (``head.RatingHead``, needs ``residual_to``)
    instead of scoring the answers. ``select`` keeps the adapter (initial state or end of an epoch) with the
    lowest loss on ``n_val_loss`` validation prompts, as the notebook does; False keeps the trained one (a new
    head starts at exactly the anchor's prediction, which selection keeps whenever an epoch does not help).

    Returns:
        The settings plus n_train, train_s, kept_epoch (0: the initial state), val_rmse, val_mae and val_n
        (expected-value ratings).
    """
    cfg = variant_config(settings)
    s = {**DEFAULTS, **settings}
    if s["head"] and not cfg.residual_to:
        raise ValueError("a regression head predicts the adjustment to a recommender; set residual_to (e.g. 'SVD++')")
    for raw in (train_raw, val_raw):  # before any work
        instructions.check_rating_examples(raw)
    picked = pick_per_user(train_raw, s["per_user"])
    if s["recent"]:
        picked, val_raw = (instructions.showing_recent(x, s["recent"]) for x in (picked, val_raw))
    picked, val_raw = (pipeline.to_target(x, cfg.residual_to) for x in (picked, val_raw))
    model, tokenizer = pipeline.load_rating_model(cfg)
    train_ex, val_ex = (chat_examples(x, tokenizer, cfg.system) for x in (picked, val_raw))
    t0 = time.time()
    selection = val_ex[:n_val_loss] if s["select"] else []
    if s["head"]:
        rating_head = head.RatingHead(model.config.hidden_size)
        history = train(model, tokenizer, train_ex, selection, cfg.train_config(), loss_fn=head.HeadLoss(rating_head))
        train_s = time.time() - t0
        expected = head.head_ratings(model, rating_head, tokenizer, [e["prompt"] for e in val_ex],
                                     [e["anchor"] for e in val_ex], batch_size=cfg.batch_size, bf16=cfg.bf16)
    else:
        history = pipeline.train_rating_model(model, tokenizer, train_ex, selection, cfg.train_config(),
                                              answers=cfg.answers, loss=cfg.loss, rating_lambda=cfg.rating_lambda)
        train_s = time.time() - t0
        expected = pipeline.expected_ratings(cfg, model, tokenizer, val_ex)["expected"]
    metrics = rating_metrics(np.array([e["rating"] for e in val_raw]), expected)
    return {**s, "layers": None if s["layers"] is None else list(s["layers"]), "n_train": len(train_ex),
            "train_s": round(train_s, 1), "kept_epoch": history["best_epoch"], "val_rmse": metrics["rmse"],
            "val_mae": metrics["mae"],
            "val_n": len(val_raw)}


SEARCH = {"r": (4, 8, 16, 32), "lr": (1e-4, 2e-3), "per_user": (1, 2, 4), "rating_lambda": (0.01, 1.0)}


def suggest(trial, search: dict = SEARCH) -> dict:
    """One trial's settings: rank (alpha = 2 x rank, the notebook's ratio), learning rate and the cross-entropy
    weight on a log scale, instructions per user."""
    r = trial.suggest_categorical("r", list(search["r"]))
    return {"r": r, "alpha": 2 * r, "lr": trial.suggest_float("lr", *search["lr"], log=True),
            "per_user": trial.suggest_categorical("per_user", list(search["per_user"])),
            "rating_lambda": trial.suggest_float("rating_lambda", *search["rating_lambda"], log=True)}


def optuna_study(cfg: RatingsConfig, split: pipeline.Split, *, params: dict[str, dict] | None = None,
                 n_trials: int = 8, timeout_min: float | None = None, n_val: int = 240, seed: int = 0,
                 search: dict = SEARCH, path: str | None = "results/ratings_study.json") -> dict:
    """An optuna study of ``search`` on the validation pairs (seeded; the first half of the trials sampled at
    random, the rest by TPE from them): each trial is
    ``train_and_validate`` with the notebook's model, blocks and answer format (``cfg``).

    Instructions are built once for the largest ``per_user`` (each user's latest training ratings, their
    predictions from a refit without any of them, with the recommenders' tuned ``params``); a trial keeps
    its ``per_user`` latest. ``n_val`` validation pairs are a seeded sample spread over users. The study stops after
    ``n_trials`` or once ``timeout_min`` has passed (a trial under way finishes). Writes ``path`` (one unit) after
    every trial, so a study stopped early keeps the trials it finished.

    Returns:
        ``{"search", "n_trials", "trials": [...], "best": {...}, "references": [...], "wall_s"}``.
    """
    import optuna

    t0 = time.time()
    base = dataclasses.replace(cfg, max_per_user=max(search["per_user"]), pick="latest", predictor_folds=1,
                               residual_to=None)
    raw = pipeline.rating_examples(base, split, which=("train", "val"), params=params)
    val = [raw["val"][i] for i in np.random.default_rng(seed).permutation(len(raw["val"]))[:n_val]]
    fixed = {"model_name": cfg.model_name, "layers": cfg.lora_layers, "residual_to": cfg.residual_to,
             "max_len": cfg.max_len, "batch_size": cfg.batch_size, "epochs": cfg.epochs, "dropout": cfg.lora_dropout,
             "shared_history": cfg.shared_history, "recent": cfg.recent_ratings}
    trials, references = [], reference_rows(val, cfg.predictors)

    def record() -> dict:  # the trials so far; written after each one, so an interrupted study keeps them
        return {"search": {k: list(v) for k, v in search.items()}, "n_trials": len(trials), "trials": trials,
                "n_train_users": len({e["user_id"] for e in raw["train"]}), "timeout_min": timeout_min,
                "best": min(trials, key=lambda t: t["val_rmse"]), "references": references,
                "wall_s": time.time() - t0}

    def objective(trial) -> float:
        settings = suggest(trial, search)
        logger.warning("trial %d: %s", trial.number, settings)
        row = train_and_validate(raw["train"], val, **fixed, **settings)
        trials.append({"trial": trial.number, **row})
        logger.warning("trial %d: validation RMSE %.4f", trial.number, row["val_rmse"])
        if path:
            io.save_json(path, record())
        return row["val_rmse"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, n_trials // 2))  # random, then TPE
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.optimize(objective, n_trials=n_trials, timeout=None if timeout_min is None else 60 * timeout_min)
    return record()


TOP10 = list(range(20, 30))
RESIDUAL = dict(per_user=2, layers=TOP10, residual_to="SVD++")
VARIANTS = {  # name -> settings of train_and_validate; the first three change the one before, the rest the third
    "all 30 blocks, 1 per user": dict(per_user=1),
    "top 10 blocks, 2 per user": dict(per_user=2, layers=TOP10),
    "residual to SVD++, top 10 blocks, 2 per user": RESIDUAL,
    "residual, the 8 latest ratings with their values instead of liked / disliked titles": {**RESIDUAL, "recent": 8},
    "residual, one history per user (the ratings before its earliest instruction)": {**RESIDUAL, "shared_history": True},
    "residual, a regression head on the last hidden state instead of answer tokens": {**RESIDUAL, "head": True},
    "residual, a regression head, its trained state kept (no selection on validation loss)":
        {**RESIDUAL, "head": True, "select": False},
}


def reference_rows(val_raw: list[dict], names: tuple[str, ...]) -> list[dict]:
    """Validation RMSE of the recommenders whose predictions the prompts carry (same validation pairs)."""
    y = np.array([e["rating"] for e in val_raw])
    return [{"variant": f"{name} (recommender)", "val_n": len(val_raw),
             "val_rmse": rating_metrics(y, np.array([e["predictions"][name] for e in val_raw]))["rmse"]}
            for name in names]


def variants_study(cfg: RatingsConfig, split: pipeline.Split, variants: dict[str, dict], *, n_val: int = 240,
                   predictors: tuple[str, ...] = ("bias", "SVD", "SVD++"), path: str = "results/ratings_variants.json",
                   only: list[str] | None = None) -> list[dict]:
    """Instructions for the variants (2 latest per user, counts, ``predictors``; built once more with one history
    per user when a variant asks for ``shared_history``), the reference rows and each variant's row, written to
    ``path``. ``only``: re-run these variants and keep the other rows of ``path``."""
    t0 = time.time()
    if only:
        unknown = sorted(set(only) - set(variants))
        if unknown:
            raise ValueError(f"no variants named {unknown}; choose from {list(variants)}")
        kept = {r["variant"]: r for r in io.read_json(path)["rows"]} if Path(path).is_file() else {}
        variants = {k: v for k, v in variants.items() if k in only}
    base = dataclasses.replace(cfg, max_per_user=2, pick="latest", show_counts=True, predictors=predictors,
                               predictor_folds=1, residual_to=None, recent_ratings=0, shared_history=False)
    raw = pipeline.rating_examples(base, split, which=("train", "val"))
    val = raw["val"][:n_val]
    trains = {False: raw["train"]}
    rows = reference_rows(val, predictors)
    for name, settings in variants.items():
        shared = bool(settings.get("shared_history"))
        if shared not in trains:
            trains[shared] = pipeline.rating_examples(dataclasses.replace(base, shared_history=shared), split,
                                                      which=("train",))["train"]
        logger.warning("variant %s: %s", name, settings)
        rows.append({"variant": name, **train_and_validate(trains[shared], val, **settings)})
    if only:
        fresh = {r["variant"]: r for r in rows}
        rows = [fresh.get(name, row) for name, row in kept.items()] + [r for n, r in fresh.items() if n not in kept]
    io.save_json(path, {"rows": rows, "wall_s": time.time() - t0})
    return rows


def main(argv: list[str] | None = None) -> None:
    """``python -m cinephile.ratings.sweeps``: the optuna study with llm.ipynb's defaults (``--variants``: the
    named variants of ``VARIANTS`` instead, into results/ratings_variants.json)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m cinephile.ratings.sweeps", description=main.__doc__)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--timeout-min", type=float, default=None, help="start no trial after this many minutes")
    ap.add_argument("--variants", nargs="*", default=None, metavar="NAME",
                    help="run the named variants (all of VARIANTS, or these, keeping the file's other rows), not the study")
    ap.add_argument("--out", default=None, help="default: results/ratings_study.json (results/ratings_variants.json)")
    args = ap.parse_args(argv)
    cfg = RatingsConfig().resolved()
    split = pipeline.load_and_split(cfg)
    if args.variants is not None:
        rows = variants_study(cfg, split, VARIANTS, path=args.out or "results/ratings_variants.json",
                              only=args.variants or None)
        for row in rows:
            print(f"{row['variant']}: validation RMSE {row['val_rmse']:.4f}")
        return
    tuned = pipeline.baselines(dataclasses.replace(cfg, baseline_seeds=1), split)  # settings chosen on validation
    record = optuna_study(cfg, split, params=tuned.params, n_trials=args.trials, timeout_min=args.timeout_min,
                          path=args.out or "results/ratings_study.json")
    best = record["best"]
    print(f"{record['n_trials']} trials in {record['wall_s'] / 60:.1f} min; best validation RMSE {best['val_rmse']:.4f} "
          f"(r={best['r']}, lr={best['lr']:.2g}, {best['per_user']} per user, lambda={best['rating_lambda']:.2g})")


if __name__ == "__main__":
    main()
