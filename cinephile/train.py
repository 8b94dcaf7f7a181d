"""Tokenise prompt/response pairs, collate with dynamic padding, and train LoRA adapters.

Labels are -100 on the prompt and on padding; the response ends with exactly one EOS that is a
target, so the model learns to stop even when the pad token is the EOS token (GPT-2, SmolLM2).
The training loop is one plain function that returns a history (minGPT / "LLMs from scratch").
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from lora import adapter_parameters, adapter_state_dict, save_adapter, save_lora_weights
from lora.io import load_adapter_state

from cinephile import distributed
from cinephile.batching import length_batches, pad_id_of
from cinephile.io import save_figure, save_json
from cinephile.models import autocast, pick_device
from cinephile.prompts import CHAT, PLAIN, trivia_examples

logger = logging.getLogger(__name__)
IGNORE = -100
NUMERIC = ("rating", "anchor")  # example fields collated as float tensors (rating_llm.RatingLoss)


@dataclass(frozen=True)
class TrainConfig:
    """How to train the adapters."""

    epochs: int = 2  # passes over the training examples
    lr: float = 2e-4  # peak AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay on the adapters
    batch_size: int = 8  # examples per forward pass
    grad_accum: int = 1  # forward passes per optimizer step
    warmup_ratio: float = 0.1  # share of optimizer steps with linear warmup, then linear decay
    max_len: int = 512  # longest tokenised example; longer prompts are cut from the left
    grad_clip: float = 1.0  # max gradient norm
    seed: int = 0  # shuffling and dropout
    device: str | None = None  # None: cuda, then mps, then cpu
    log_every: int = 10  # optimizer steps between train-loss records
    bf16: bool | None = None  # None: mixed precision on CUDA only; True: bf16 autocast on any device; False: fp32


def tokenize_example(tokenizer, prompt: str, response: str, max_len: int) -> dict:
    """``{"input_ids", "labels"}`` lists: prompt ids (label -100) + response ids + one EOS.

    Prompts longer than the budget keep their end (where the question is); the response is never cut.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no EOS token; set tokenizer.eos_token before training")
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(r) >= max_len:
        raise ValueError(f"response of {len(r)} tokens does not fit max_len={max_len}; raise max_len")
    p = p[-(max_len - len(r)):]
    return {"input_ids": p + r, "labels": [IGNORE] * len(p) + r}


def collate(batch: list[dict], pad_id: int | None) -> dict[str, torch.Tensor]:
    """Right-pad to the longest item of the batch: (B, T) input_ids, attention_mask, labels."""
    if pad_id is None:
        raise ValueError("no pad id: the tokenizer has no pad token; call "
                         "cinephile.models.ensure_pad_token(tokenizer) before training")
    if not batch:
        raise ValueError("collate needs at least one item")
    width = max(len(item["input_ids"]) for item in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, item in enumerate(batch):
        n = len(item["input_ids"])
        ids[i, :n] = torch.tensor(item["input_ids"])
        labels[i, :n] = torch.tensor(item["labels"])
        mask[i, :n] = 1
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    for key in NUMERIC:  # numeric targets travel with their examples (rating loss)
        if all(key in item for item in batch):
            out[key] = torch.tensor([float(item[key]) for item in batch])
    return out


def batches(items: list[dict], batch_size: int, pad_id: int | None, *, shuffle: bool, seed: int = 0):
    """Collated batches of similar length (``batching.length_batches``); order shuffled when ``shuffle``."""
    for group in length_batches([len(it["input_ids"]) for it in items], batch_size, shuffle=shuffle, seed=seed):
        yield collate([items[i] for i in group], pad_id)


def response_loss(model: nn.Module, batch: dict[str, torch.Tensor], reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy on the response tokens only, projecting only those positions to the vocabulary.

    The LM head of a 49k-token vocabulary costs as much as several transformer blocks; prompts are
    most of each example, so computing logits only where labels != -100 saves that work.
    """
    backbone = getattr(model, model.base_model_prefix)  # model.model (Llama), model.transformer (GPT-2)
    hidden = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]  # (B, T, C)
    targets = batch["labels"][:, 1:]  # position t predicts token t + 1
    keep = targets != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])  # (N, V), N = response tokens
    return nn.functional.cross_entropy(logits.float(), targets[keep], reduction=reduction)


def token_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """The default ``LossFn``: mean cross-entropy per response token, and the number of those tokens."""
    return response_loss(model, batch), int((batch["labels"][:, 1:] != IGNORE).sum())


@torch.no_grad()
def evaluate_loss(model: nn.Module, items: list[dict], pad_id: int, batch_size: int = 8,
                  loss_fn=token_loss, bf16: bool | None = None) -> float:
    """Mean loss over ``items`` (tokenised examples), weighted as ``loss_fn`` counts its units.

    Under torchrun each rank scores its share of ``items`` and the sums are all-reduced; ``bf16`` as
    in ``TrainConfig``.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rank, world = distributed.rank_world()
    total, count = 0.0, 0
    for batch in batches(items[rank::world], batch_size, pad_id, shuffle=False):
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, bf16):
            loss, n = loss_fn(model, batch)
        total, count = total + loss.item() * n, count + n
    total, count = distributed.all_reduce_sum(torch.tensor([total, float(count)], dtype=torch.float64)).tolist()
    model.train(was_training)
    return total / max(count, 1)


def warmup_then_decay(steps: int, warmup_ratio: float):
    """Learning-rate factor per optimizer step: linear warmup over ``warmup_ratio`` of the steps, then linear decay."""
    warmup = max(1, int(warmup_ratio * steps))
    return lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))


def train(model: nn.Module, tokenizer, train_examples: list[dict], val_examples: list[dict],
          cfg: TrainConfig = TrainConfig(), loss_fn=token_loss) -> dict:
    """Train the LoRA adapters of ``model`` on ``{"prompt", "response"}`` examples.

    Keeps the adapter with the lowest validation loss (restored at the end). Under torchrun
    (``cinephile.launch``) each rank takes its share of every global batch of
    ``batch_size x world size`` examples and the adapter gradients are summed across ranks
    (``cinephile.distributed``): the same update as one process with that batch size.

    Args:
        model: a model with LoRA injected (only adapter parameters are optimised).
        tokenizer: its tokenizer (must have a pad and an EOS token).
        train_examples / val_examples: dicts with "prompt" and "response" (and "rating", "anchor"
            for a rating loss).
        cfg: the training configuration.
        loss_fn: ``loss_fn(model, batch) -> (mean loss, units)``; the default is ``token_loss``
            (e.g. ``rating_llm.RatingLoss`` trains the expected rating on its squared error).

    Returns:
        History: ``{"step", "train_loss", "epoch_val_loss", "best_epoch", "best_val_loss", ...}``.
    """
    if not train_examples:
        raise ValueError("no training examples; check the data split (is the training set empty?)")
    if cfg.grad_accum < 1 or cfg.batch_size < 1 or cfg.epochs < 1:
        raise ValueError(f"epochs, batch_size and grad_accum must be >= 1, got {cfg.epochs}, {cfg.batch_size}, "
                         f"{cfg.grad_accum}")
    pad_id = pad_id_of(tokenizer)
    device = pick_device(cfg.device)
    model.to(device)
    torch.manual_seed(cfg.seed)
    def tokenized(examples):
        return [{**tokenize_example(tokenizer, e["prompt"], e["response"], cfg.max_len),
                 **{k: e[k] for k in NUMERIC if k in e}} for e in examples]
    tok, val = tokenized(train_examples), tokenized(val_examples)
    params = adapter_parameters(model)
    distributed.broadcast_parameters(params)
    rank, world = distributed.rank_world()
    global_batch = cfg.batch_size * world
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_batches = math.ceil(len(tok) / global_batch)
    steps = cfg.epochs * math.ceil(n_batches / cfg.grad_accum)  # a short last group still steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_then_decay(steps, cfg.warmup_ratio))
    history = {"step": [], "train_loss": [], "epoch_val_loss": [], "epoch_train_loss": [],
               "best_epoch": 0,
               "best_val_loss": evaluate_loss(model, val, pad_id, loss_fn=loss_fn, bf16=cfg.bf16) if val else math.nan}
    history["initial_val_loss"] = history["best_val_loss"]
    best = {k: v.clone() for k, v in adapter_state_dict(model).items()}
    step, running = 0, []
    bar = tqdm(total=steps, desc="train", unit="step", disable=rank != 0)
    lengths = [len(it["input_ids"]) for it in tok]
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        epoch_losses = []
        groups = length_batches(lengths, global_batch, shuffle=True, seed=cfg.seed + epoch)
        for i, shard in enumerate(group[rank::world] for group in groups):
            group = min(cfg.grad_accum, n_batches - i // cfg.grad_accum * cfg.grad_accum)  # batches in this step
            local = torch.zeros((), device=device)  # a rank left without examples adds nothing
            n = 0
            if shard:
                batch = {k: v.to(device) for k, v in collate([tok[j] for j in shard], pad_id).items()}
                with autocast(device, cfg.bf16):
                    mean, n = loss_fn(model, batch)
                local = mean * n  # summed over units: normalised below by the count over all ranks
            total = distributed.all_reduce_sum(torch.tensor([local.item(), float(n)], dtype=torch.float64))
            if n:
                (local / (total[1].item() * group)).backward()
            running.append(total[0].item() / max(total[1].item(), 1))
            epoch_losses.append(running[-1])
            if (i + 1) % cfg.grad_accum and i + 1 < n_batches:
                continue
            distributed.sum_gradients(params)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{running[-1]:.3f}", epoch=epoch)
            if step % cfg.log_every == 0 or step == steps:
                history["step"].append(step)
                history["train_loss"].append(sum(running) / len(running))
                running = []
        val_loss = evaluate_loss(model, val, pad_id, loss_fn=loss_fn, bf16=cfg.bf16) if val else math.nan
        history["epoch_val_loss"].append(val_loss)
        history["epoch_train_loss"].append(sum(epoch_losses) / max(len(epoch_losses), 1))
        logger.info("epoch %d: val loss %.4f", epoch, val_loss)
        if not val or val_loss < history["best_val_loss"]:
            history["best_epoch"], history["best_val_loss"] = epoch, val_loss
            best = {k: v.clone() for k, v in adapter_state_dict(model).items()}
    bar.close()
    load_adapter_state(model, best, "best checkpoint")
    model.eval()
    return history


def save_run(model: nn.Module, run_dir, *, weights_name: str, config: dict) -> dict:
    """Save the trained adapter twice (``.pth`` file and PEFT directory) and ``config.json`` in ``run_dir``.

    Returns:
        ``{"weights": Path, "adapter": Path, "config": Path}``.
    """
    run_dir = Path(run_dir)
    return {"weights": save_lora_weights(model, run_dir / weights_name),
            "adapter": save_adapter(model, run_dir / "adapter"),
            "config": save_json(run_dir / "config.json", config)}


def choose_prompt_style(model, tokenizer, records: list[dict], max_len: int = 1024) -> tuple[str, pd.DataFrame]:
    """Measure the base model's loss on the answers under each prompt format; the lowest wins.

    The chat template is tried only when the tokenizer has one (instruct models).

    Returns:
        ``(style, table)``: the chosen style and a DataFrame of style, answer_loss.
    """
    if not records:
        raise ValueError("choose_prompt_style needs at least one record")
    styles = [PLAIN] + ([CHAT] if getattr(tokenizer, "chat_template", None) else [])
    rows = []
    for style in styles:
        items = [tokenize_example(tokenizer, e["prompt"], e["response"], max_len)
                 for e in trivia_examples(records, tokenizer, style)]
        rows.append({"style": style, "answer_loss": evaluate_loss(model, items, pad_id_of(tokenizer))})
    table = pd.DataFrame(rows).sort_values("answer_loss").reset_index(drop=True)
    return str(table.loc[0, "style"]), table


def plot_history(history: dict, path=None):
    """Training loss per logged step and validation loss per epoch."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(history["step"], history["train_loss"], label="train (running mean)")
    n_epochs = len(history["epoch_val_loss"])
    if n_epochs and history["step"]:
        per_epoch = history["step"][-1] / n_epochs
        ax.plot([0] + [per_epoch * (e + 1) for e in range(n_epochs)],
                [history["initial_val_loss"]] + history["epoch_val_loss"], "o-", label="validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per response token")
    ax.legend()
    fig.tight_layout()
    if path:
        save_figure(fig, path)
    return fig
