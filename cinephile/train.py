"""Train LoRA adapters on prompt/response examples, tokenised and batched by ``cinephile.batching``.

The training loop is one plain function that returns a history (minGPT / "LLMs from scratch").
It stops with ``TrainingDiverged`` when the loss or the gradients stop being finite, and on any
failure leaves the model in eval mode with its best adapter so far.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from lora import adapter_parameters, adapter_state_dict, save_adapter, save_lora_weights
from lora.io import load_adapter_state

from cinephile import distributed
from cinephile.batching import IGNORE, batches, collate, length_batches, pad_id_of, tokenize_examples
from cinephile.io import save_figure, save_json
from cinephile.models import autocast, pick_device, position_window

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """How to train the adapters."""

    epochs: int = 2  # passes over the training examples
    lr: float = 2e-4  # peak AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay on the adapters
    batch_size: int = 8  # examples per forward pass
    grad_accum: int = 1  # forward passes per optimizer step
    warmup_ratio: float = 0.1  # share of optimizer steps with linear warmup, then linear decay
    max_len: int = 512  # longest tokenised example (at most the model's positions); longer prompts lose their start
    grad_clip: float = 1.0  # max gradient norm
    seed: int = 0  # shuffling and dropout
    device: str | None = None  # None: cuda, then mps, then cpu
    log_every: int = 10  # optimizer steps between train-loss records
    bf16: bool | None = None  # None: mixed precision on CUDA only; True: bf16 autocast on any device; False: fp32
    group_by: str | None = None  # an example field: examples with the same value share their batches (a user's
    # prompts with one history, which scoring.RatingLoss runs once); None: batches of similar length

    def __post_init__(self):
        names = ("epochs", "batch_size", "grad_accum", "log_every", "max_len", "lr", "grad_clip", "weight_decay",
                 "warmup_ratio")
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"TrainConfig.{name} must be a number, got {value!r}")
        rules = {"epochs": (self.epochs >= 1, ">= 1"), "batch_size": (self.batch_size >= 1, ">= 1"),
                 "grad_accum": (self.grad_accum >= 1, ">= 1"), "log_every": (self.log_every >= 1, ">= 1"),
                 "max_len": (self.max_len >= 2, ">= 2 (a prompt token and the EOS)"), "lr": (self.lr > 0, "> 0"),
                 "grad_clip": (self.grad_clip > 0, "> 0"), "weight_decay": (self.weight_decay >= 0, ">= 0"),
                 "warmup_ratio": (0 <= self.warmup_ratio <= 1, "between 0 and 1")}
        for name, (ok, rule) in rules.items():
            if not ok:
                raise ValueError(f"TrainConfig.{name} must be {rule}, got {getattr(self, name)!r}")


class TrainingDiverged(RuntimeError):
    """The loss or the gradients became NaN or infinite; ``history`` holds what was recorded until then
    (``train`` leaves the model in eval mode with its best finite adapter before raising this)."""

    def __init__(self, message: str, history: dict):
        super().__init__(message)
        self.history = history


def fit_max_len(model: nn.Module, max_len: int) -> int:
    """``max_len``, capped (with a warning) at the positions the model's config declares."""
    window = position_window(model)
    if window is not None and max_len > window:
        logger.warning("max_len=%d is more than the model's %d positions; examples are cut to %d tokens",
                       max_len, window, window)
        return window
    return max_len


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
    On any failure (an error, Ctrl-C, divergence) the model is put back in eval mode with the best
    adapter so far (the last completed epoch without validation; the initial one if none), which is
    logged, and the error is raised again.

    Args:
        model: a model with LoRA injected (only adapter parameters are optimised).
        tokenizer: its tokenizer (must have a pad and an EOS token).
        train_examples / val_examples: dicts with "prompt" and "response" (and "rating", "anchor"
            for a rating loss).
        cfg: the training configuration; ``max_len`` is capped at the model's positions (warning).
        loss_fn: ``loss_fn(model, batch) -> (mean loss, units)``; the default is ``token_loss``
            (e.g. ``scoring.RatingLoss`` trains the expected rating on its squared error). A loss with
            ``trainable_modules()`` (e.g. ``ratings.head.HeadLoss``) trains those layers with the adapters.

    Returns:
        History: ``{"step", "train_loss", "epoch_val_loss", "best_epoch", "best_val_loss", ...}``.

    Raises:
        ValueError: a malformed example (named by index, checked before the model changes).
        TrainingDiverged: the loss or the gradients became NaN or infinite.
    """
    if not train_examples:
        raise ValueError("no training examples; check the data split (is the training set empty?)")
    pad_id = pad_id_of(tokenizer)
    max_len = fit_max_len(model, cfg.max_len)
    check = getattr(loss_fn, "check_examples", None)  # a task loss checks its own fields (e.g. RatingLoss)
    if check is not None:
        check(train_examples)
        check(val_examples)
    tok = tokenize_examples(tokenizer, train_examples, max_len, "training", cfg.group_by)
    val = tokenize_examples(tokenizer, val_examples, max_len, "validation")
    device = pick_device(cfg.device)
    model.to(device)
    torch.manual_seed(cfg.seed)
    extra = [m.to(device) for m in getattr(loss_fn, "trainable_modules", list)()]  # a loss's own layers (a head)
    params = adapter_parameters(model) + [p for m in extra for p in m.parameters()]
    distributed.broadcast_parameters(params)
    rank, world = distributed.rank_world()
    global_batch = cfg.batch_size * world
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_batches = len(length_batches(lengths := [len(it["input_ids"]) for it in tok], global_batch,
                                   groups=[it["group"] for it in tok] if cfg.group_by else None))
    steps = cfg.epochs * math.ceil(n_batches / cfg.grad_accum)  # a short last group still steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_then_decay(steps, cfg.warmup_ratio))
    history = {"step": [], "train_loss": [], "epoch_val_loss": [], "epoch_train_loss": [],
               "best_epoch": 0,
               "best_val_loss": evaluate_loss(model, val, pad_id, loss_fn=loss_fn, bf16=cfg.bf16) if val else math.nan}
    history["initial_val_loss"] = history["best_val_loss"]

    def snapshot() -> tuple[dict, list[dict]]:  # the adapter and the loss's own layers
        return ({k: v.clone() for k, v in adapter_state_dict(model).items()},
                [{k: v.clone() for k, v in m.state_dict().items()} for m in extra])

    best = snapshot()

    def diverged(what: str, value: float, epoch: int, step: int) -> TrainingDiverged:
        return TrainingDiverged(
            f"training diverged at epoch {epoch}, optimizer step {step}: {what} is {value} (learning rate "
            f"{sched.get_last_lr()[0]:.2e}, peak {cfg.lr:.2e}); the adapter is restored to {restored(history)}; "
            f"lower TrainConfig.lr (e.g. {cfg.lr / 10:.1e}) or train in fp32 (bf16=False)", history)

    if val and not math.isfinite(history["initial_val_loss"]):
        raise diverged("the validation loss before training", history["initial_val_loss"], 0, 0)
    epoch, step, running = 0, 0, []
    bar = tqdm(total=steps, desc="train", unit="step", disable=rank != 0)
    try:
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            epoch_losses = []
            groups = length_batches(lengths, global_batch, shuffle=True, seed=cfg.seed + epoch,
                                    groups=[it["group"] for it in tok] if cfg.group_by else None)
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
                running.append(total[0].item() / max(total[1].item(), 1))
                if not math.isfinite(running[-1]):  # every rank sees the same sum, so every rank stops
                    raise diverged("the training loss", running[-1], epoch, step + 1)
                if n:
                    (local / (total[1].item() * group)).backward()
                epoch_losses.append(running[-1])
                if (i + 1) % cfg.grad_accum and i + 1 < n_batches:
                    continue
                distributed.sum_gradients(params)
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                if not torch.isfinite(norm):
                    raise diverged("the gradient norm", norm.item(), epoch, step + 1)
                opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{running[-1]:.3f}", epoch=epoch)
                if step % cfg.log_every == 0 or step == steps:
                    history["step"].append(step)
                    history["train_loss"].append(sum(running) / len(running))
                    running = []
            val_loss = evaluate_loss(model, val, pad_id, loss_fn=loss_fn, bf16=cfg.bf16) if val else math.nan
            if val and not math.isfinite(val_loss):
                raise diverged("the validation loss", val_loss, epoch, step)
            history["epoch_val_loss"].append(val_loss)
            history["epoch_train_loss"].append(sum(epoch_losses) / max(len(epoch_losses), 1))
            logger.info("epoch %d: val loss %.4f", epoch, val_loss)
            if not val or val_loss < history["best_val_loss"]:
                history["best_epoch"], history["best_val_loss"] = epoch, val_loss
                best = snapshot()
    except BaseException as err:
        if not isinstance(err, TrainingDiverged):
            logger.error("training stopped at epoch %d (%s); the adapter is restored to %s",
                         epoch, type(err).__name__, restored(history))
        raise
    finally:
        bar.close()
        load_adapter_state(model, best[0], "best checkpoint")
        for m, state in zip(extra, best[1]):
            m.load_state_dict(state)
        model.eval()
    return history


def restored(history: dict) -> str:
    """Which adapter ``train`` keeps, in words: its best epoch so far, or the initial state."""
    if history["best_epoch"] == 0:
        return "its initial state (before training)"
    loss = history["best_val_loss"]
    return f"the end of epoch {history['best_epoch']}" + ("" if math.isnan(loss) else f" (validation loss {loss:.4f})")


def save_run(model: nn.Module, run_dir, *, weights_name: str, config: dict) -> dict:
    """Save the trained adapter twice (``.pth`` file and PEFT directory) and ``config.json`` in ``run_dir``:
    ``{"weights": Path, "adapter": Path, "config": Path}``."""
    run_dir = Path(run_dir)
    return {"weights": save_lora_weights(model, run_dir / weights_name),
            "adapter": save_adapter(model, run_dir / "adapter"),
            "config": save_json(run_dir / "config.json", config)}


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
