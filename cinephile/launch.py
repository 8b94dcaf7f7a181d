"""Train a trivia or ratings adapter from the JSONL files the notebooks write, on one or many processes.

    python -m cinephile.launch --config train.json                          # one process
    torchrun --nproc_per_node 2 -m cinephile.launch --config train.json     # 2 processes on this machine (gloo on CPU)
    torchrun --nproc_per_node 8 -m cinephile.launch --config train.json     # 8 GPUs (nccl)
    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --rdzv_backend c10d \\
        --rdzv_endpoint HOST:29500 -m cinephile.launch --config train.json   # 2 machines

The config is JSON (see ``DEFAULT_CONFIG``). ``batch_size`` is per process: the global batch is
``batch_size x processes``. Only rank 0 writes the adapter (PEFT layout), ``history.json`` and
``config.json`` in ``out``, and logs.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import fields
from pathlib import Path

from cinephile import distributed, models
from cinephile.io import read_jsonl, save_json
from cinephile.prompts import RATING_SYSTEM, RESIDUAL_SYSTEM, chat_examples, trivia_examples
from cinephile.train import TrainConfig, token_loss, train

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = {
    "task": "trivia",  # "trivia": records with question/answer/<context_key>; "ratings": MovieLens instructions
    "model": "smollm2-135m",  # as for models.load_base_model (a local directory works too)
    "train": "Data/training_data.jsonl",
    "val": "Data/validation_data.jsonl",
    "out": "runs/launch",
    "style": "chat",  # trivia prompt style: "chat" or "plain"
    "context_key": "retrieved_context",  # trivia: the record field fed as context
    "loss": "token",  # "token" (cross-entropy) or "rating" (rating_llm.RatingLoss; ratings task)
    "rating_lambda": 0.1,
    "limit": None,  # keep only the first N training examples
    "lora": {"r": 16, "alpha": 32, "dropout": 0.1, "layers": None, "mlp": False},
    "train_config": {"epochs": 1, "lr": 2e-4, "batch_size": 8},  # cinephile.train.TrainConfig fields
}


def load_config(path: str | Path | None) -> dict:
    """``DEFAULT_CONFIG`` updated with the JSON file at ``path`` (nested dicts merged); unknown keys refused."""
    config = json.loads(json.dumps(DEFAULT_CONFIG))
    if path is None:
        return config
    try:
        given = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} not found; write a JSON file with keys from "
                                f"{sorted(DEFAULT_CONFIG)}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); fix the file") from None
    unknown = set(given) - set(config)
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)} in {path}; allowed: {sorted(config)}")
    for key, value in given.items():
        config[key] = {**config[key], **value} if isinstance(config[key], dict) and value is not None else value
    known = {f.name for f in fields(TrainConfig)}
    if set(config["train_config"]) - known:
        raise ValueError(f"unknown train_config keys {sorted(set(config['train_config']) - known)}; "
                         f"allowed: {sorted(known)}")
    return config


def adjusts(rows: list[dict], path: str = "the examples") -> bool:
    """True when MovieLens rows answer adjustments to a recommender (``movielens.as_residual``: they carry an anchor)."""
    kinds = {"anchor" in r for r in rows}
    if len(kinds) > 1:
        raise ValueError(f"{path} mixes rating examples and adjustment examples (with 'anchor'); write it again "
                         "from one notebook run (one RESIDUAL_TO setting)")
    return kinds == {True}


def examples_for(config: dict, tokenizer, path: str) -> list[dict]:
    """The task's prompt/response examples from a JSONL file written by a notebook."""
    rows = read_jsonl(path)
    if config["task"] == "trivia":
        return trivia_examples(rows, tokenizer, config["style"], context_key=config["context_key"])
    if config["task"] == "ratings":
        return chat_examples(rows, tokenizer, RESIDUAL_SYSTEM if adjusts(rows, path) else RATING_SYSTEM)
    raise ValueError(f"unknown task {config['task']!r}; use 'trivia' or 'ratings'")


def run(config: dict) -> dict:
    """Train as ``config`` says (under torchrun: data-parallel); rank 0 writes the artifacts."""
    from lora import inject_lora, save_adapter

    import torch

    device = distributed.init_from_env()
    model, tokenizer = models.load_base_model(config["model"], device=device)
    torch.manual_seed(int(config["train_config"].get("seed", 0)))  # the same adapter init on every run and rank
    lora = config["lora"]
    inject_lora(model, models.lora_preset(config["model"], r=lora["r"], alpha=lora["alpha"], dropout=lora["dropout"],
                                          mlp=lora.get("mlp", False), layers=lora.get("layers")))
    train_ex = examples_for(config, tokenizer, config["train"])[:config["limit"]]
    val_ex = examples_for(config, tokenizer, config["val"]) if config["val"] else []
    if config["loss"] == "rating":
        from cinephile.rating_llm import ADJUSTMENT_ANSWERS, RATING_ANSWERS, RatingLoss
        answers = ADJUSTMENT_ANSWERS if adjusts(train_ex, config["train"]) else RATING_ANSWERS
        loss_fn = RatingLoss(tokenizer, lam=config["rating_lambda"], answers=answers)
    else:
        loss_fn = token_loss
    cfg = TrainConfig(**{**config["train_config"], "device": str(device)})
    history = train(model, tokenizer, train_ex, val_ex, cfg, loss_fn=loss_fn)
    if distributed.is_main():
        out = Path(config["out"])
        save_adapter(model, out / "adapter")
        world = distributed.rank_world()[1]
        save_json(out / "history.json", {**history, "world_size": world, "n_train": len(train_ex)})
        save_json(out / "config.json", config)
        logger.warning("adapter written to %s (%d processes)", out / "adapter", world)
    return history


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train a LoRA adapter from the notebooks' JSONL files "
                                                 "(torchrun-ready).")
    parser.add_argument("--config", help="JSON config (keys of cinephile.launch.DEFAULT_CONFIG)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(load_config(args.config))
    finally:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
