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
import typing
from dataclasses import fields
from pathlib import Path

import torch

from lora import LoRAConfig, inject_lora, save_adapter

from cinephile import distributed, models
from cinephile.io import read_jsonl, save_json
from cinephile.ratings.pipeline import adjusts, launch_examples, train_rating_model
from cinephile.train import TrainConfig, token_loss, train
from cinephile.trivia.reader import trivia_examples

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = {
    "task": "trivia",  # "trivia": records with question/answer/<context_key>; "ratings": MovieLens instructions
    "model": "smollm2-135m",  # as for models.load_base_model (a local directory works too)
    "train": "Data/training_data.jsonl",
    "val": "Data/validation_data.jsonl",
    "out": "runs/launch",
    "style": "chat",  # trivia prompt style: "chat" or "plain"
    "context_key": "retrieved_context",  # trivia: the record field fed as context
    "loss": "token",  # "token" (cross-entropy) or "rating" (scoring.RatingLoss; ratings task)
    "rating_lambda": 0.1,
    "limit": None,  # null: every training example; N >= 1: only the first N
    "lora": {"r": 16, "alpha": 32, "dropout": 0.1, "layers": None, "mlp": False},
    "train_config": {"epochs": 1, "lr": 2e-4, "batch_size": 8},  # cinephile.train.TrainConfig fields
}


CHOICES = {"task": ("ratings", "trivia"), "style": ("chat", "plain"), "loss": ("rating", "token")}
TYPES = {"task": str, "model": str, "train": str, "val": str | None, "out": str, "style": str,
         "context_key": str | None, "loss": str, "rating_lambda": float, "limit": int | None,
         "lora": dict, "train_config": dict}
LORA_TYPES = {"r": int, "alpha": float, "dropout": float, "layers": list | None, "mlp": bool}
TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "an object",
              list: "a list", type(None): "null"}


def load_config(path: str | Path | None) -> dict:
    """``DEFAULT_CONFIG`` updated with the JSON file at ``path`` (nested dicts merged), checked by ``check_config``."""
    config = json.loads(json.dumps(DEFAULT_CONFIG))
    if path is None:
        return config
    try:
        given = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} not found; write a JSON file with keys from "
                                f"{sorted(DEFAULT_CONFIG)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); fix the file (UTF-8 JSON)") from None
    if not isinstance(given, dict):
        raise ValueError(f"{path} must hold a JSON object with keys from {sorted(config)}, got "
                         f"{type(given).__name__}; e.g. {{\"task\": \"trivia\", \"limit\": 100}}")
    unknown = set(given) - set(config)
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)} in {path}; allowed: {sorted(config)}")
    for key, value in given.items():
        if isinstance(config[key], dict):
            _check_type(value, dict, key, config[key], str(path))
            value = {**config[key], **value}
        config[key] = value
    check_config(config, str(path))
    return config


def _check_type(value, hint, key: str, example, source: str) -> None:
    """A ValueError naming ``source`` and ``key`` unless ``value`` is of type ``hint`` (JSON's view: 1 is a float)."""
    allowed = getattr(hint, "__args__", (hint,))
    for t in allowed:
        if isinstance(value, bool) and t is not bool:
            continue
        if isinstance(value, t) or (t is float and isinstance(value, int)):
            return
    expected = " or ".join(TYPE_NAMES[t] for t in sorted(allowed, key=lambda t: t is not type(None)))
    raise ValueError(f"{source}: {key} must be {expected}, got {value!r}; e.g. \"{key.split('.')[-1]}\": "
                     f"{json.dumps(example)}")


def check_config(config: dict, source: str = "config") -> None:
    """Refuse a config with a key of the wrong type or value, before anything is loaded.

    Args:
        config: a full config (``DEFAULT_CONFIG`` keys).
        source: where it came from (the config file), named in the errors.
    """
    unknown, missing = set(config) - set(DEFAULT_CONFIG), set(DEFAULT_CONFIG) - set(config)
    if unknown or missing:
        raise ValueError(f"{source}: unknown config keys {sorted(unknown)}, missing keys {sorted(missing)}; "
                         "start from load_config(None) (DEFAULT_CONFIG) and change what you need")
    for key, hint in TYPES.items():
        _check_type(config[key], hint, key, DEFAULT_CONFIG[key] if key != "limit" else 100, source)
    for key, choices in CHOICES.items():
        if config[key] not in choices:
            raise ValueError(f"{source}: {key} must be one of {list(choices)}, got {config[key]!r}")
    if config["loss"] == "rating" and config["task"] != "ratings":
        raise ValueError(f"{source}: loss 'rating' needs task 'ratings'; use loss 'token' for trivia")
    if config["limit"] is not None and config["limit"] < 1:
        raise ValueError(f"{source}: limit must be null (every example) or an integer >= 1, got {config['limit']}")
    if config["rating_lambda"] < 0:
        raise ValueError(f"{source}: rating_lambda must be >= 0, got {config['rating_lambda']}")
    lora = config["lora"]
    if set(lora) - set(LORA_TYPES):
        raise ValueError(f"{source}: unknown lora keys {sorted(set(lora) - set(LORA_TYPES))}; "
                         f"allowed: {sorted(LORA_TYPES)}")
    if {"r", "alpha", "dropout"} - set(lora):
        raise ValueError(f"{source}: lora needs 'r', 'alpha' and 'dropout', got {lora}")
    for key, hint in LORA_TYPES.items():
        if key in lora:
            _check_type(lora[key], hint, f"lora.{key}", DEFAULT_CONFIG["lora"][key], source)
    layers = lora.get("layers")
    if layers is not None and not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers):
        raise ValueError(f"{source}: lora.layers must be null or a list of block indices >= 0, got {layers!r}")
    try:  # the one check of LoRA settings (rank, alpha, dropout), before any model loads
        LoRAConfig(r=lora["r"], alpha=lora["alpha"], dropout=lora["dropout"])
    except ValueError as err:
        raise ValueError(f"{source}: lora: {err}") from None
    hints = typing.get_type_hints(TrainConfig)
    known = {f.name: f.default for f in fields(TrainConfig)}
    if set(config["train_config"]) - set(known):
        raise ValueError(f"{source}: unknown train_config keys {sorted(set(config['train_config']) - set(known))}; "
                         f"allowed: {sorted(known)}")
    for key, value in config["train_config"].items():
        _check_type(value, hints[key], f"train_config.{key}", known[key], source)
    try:
        TrainConfig(**config["train_config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: {err}") from None


def required_keys(config: dict) -> tuple[str, ...]:
    """The keys every JSONL row of the task needs."""
    if config["task"] == "trivia":
        return ("id", "question", "answer") + ((config["context_key"],) if config["context_key"] else ())
    return ("prompt", "response") + (("rating",) if config["loss"] == "rating" else ())


def read_data(config: dict) -> dict[str, list[dict]]:
    """The training rows (first ``limit``) and validation rows of ``config``, checked before any model loads.

    Every row must be an object with the task's keys (``required_keys``); for ratings, both files
    must hold the same target (ratings, or adjustments with an "anchor").

    Returns:
        ``{"train": rows, "val": rows}`` (val empty without a validation file).
    """
    data = {"train": read_jsonl(config["train"], required_keys(config))[:config["limit"]],
            "val": read_jsonl(config["val"], required_keys(config)) if config["val"] else []}
    if not data["train"]:
        raise ValueError(f"{config['train']} holds no records; point 'train' at the notebook's training JSONL")
    if config["task"] == "ratings" and data["val"]:
        kinds = {name: "adjustment" if adjusts(rows, config[name]) else "rating" for name, rows in data.items()}
        if kinds["train"] != kinds["val"]:
            raise ValueError(f"{config['train']} holds {kinds['train']} examples but {config['val']} holds "
                             f"{kinds['val']} examples; write both from one notebook run (one RESIDUAL_TO setting)")
    return data


def examples_from(config: dict, tokenizer, rows: list[dict], path: str) -> list[dict]:
    """The task's prompt/response examples from rows read by ``read_data``."""
    if config["task"] == "trivia":
        return trivia_examples(rows, tokenizer, config["style"], context_key=config["context_key"])
    if config["task"] == "ratings":
        return launch_examples(rows, tokenizer, path)[0]
    raise ValueError(f"unknown task {config['task']!r}; use 'trivia' or 'ratings'")


def examples_for(config: dict, tokenizer, path: str) -> list[dict]:
    """The task's prompt/response examples from a JSONL file written by a notebook."""
    return examples_from(config, tokenizer, read_jsonl(path, required_keys(config)), path)


def run(config: dict) -> dict:
    """Train as ``config`` says (under torchrun: data-parallel); rank 0 writes the artifacts."""
    check_config(config)
    data = read_data(config)  # every error in the config or the data shows before the model loads
    device = distributed.init_from_env()
    model, tokenizer = models.load_base_model(config["model"], device=device)
    torch.manual_seed(int(config["train_config"].get("seed", 0)))  # the same adapter init on every run and rank
    lora = config["lora"]
    inject_lora(model, models.lora_preset(config["model"], r=lora["r"], alpha=lora["alpha"], dropout=lora["dropout"],
                                          mlp=lora.get("mlp", False), layers=lora.get("layers")))
    cfg = TrainConfig(**{**config["train_config"], "device": str(device)})
    if config["task"] == "ratings":  # the notebook's training stage, with the answer format the rows hold
        train_ex, answers = launch_examples(data["train"], tokenizer, config["train"])
        val_ex = launch_examples(data["val"], tokenizer, config["val"])[0] if data["val"] else []
        history = train_rating_model(model, tokenizer, train_ex, val_ex, cfg, answers=answers, loss=config["loss"],
                                     rating_lambda=config["rating_lambda"])
    else:
        train_ex = examples_from(config, tokenizer, data["train"], config["train"])
        val_ex = examples_from(config, tokenizer, data["val"], config["val"]) if data["val"] else []
        history = train(model, tokenizer, train_ex, val_ex, cfg, loss_fn=token_loss)
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
