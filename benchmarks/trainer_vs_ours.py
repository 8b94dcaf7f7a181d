"""End to end: our ``train()`` against ``transformers.Trainer`` + PEFT on the same trivia examples.

Same model (SmolLM2-135M-Instruct, fp32), same examples and tokenisation (labels -100 on the
prompt), LoRA r=16 / alpha 32 / dropout 0 on q/k/v/o, effective batch 8, one epoch, AdamW at 2e-4
with the same warmup + linear-decay schedule (handed to the Trainer), gradient clipping at 1.0.
The Trainer is set up as a competent user would: dynamic padding (DataCollatorForSeq2Seq),
``train_sampling_strategy="group_by_length"`` (transformers 5's name for ``group_by_length``), no evaluation or
checkpoints during the timed run. Each side runs in its own subprocess (peak RSS is that run's alone). Both
are then scored with the same function on the same validation examples (mean cross-entropy per answer
token). Writes results/bench_trainer.json.

Speed-ups tried on our side, each a separate run of the same training (``--tries``): ``fused_adamw``
(``torch.optim.AdamW(fused=True)``), ``compile`` (``torch.compile`` of the transformer, dynamic shapes,
compile time included since a user pays it), ``bf16_autocast`` (training under CPU bf16 autocast) and
``bf16_base`` (the same with the frozen weights held in bf16 and fp32 adapters), the last two tried only where
the CPU has native bf16; the validation loss is computed in fp32 for all. The Trainer is run a second time with
``bf16=True`` (its CPU autocast) where the CPU has native bf16, and each side is compared at its fastest setting
whose validation loss stays within 1% of its own fp32 run. Sequence packing is bounded by the padding it would remove:
the share of padding in our length-grouped batches is measured and reported.

    python benchmarks/trainer_vs_ours.py [--examples 160] [--val 48] [--tries fused_adamw,compile,bf16_autocast]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
LR, BATCH, WARMUP = 2e-4, 8, 0.1


def data(n_train: int, n_val: int, tokenizer):
    from cinephile.io import read_jsonl
    from cinephile.trivia.reader import trivia_examples
    from cinephile.batching import tokenize_example

    def items(path, n):
        examples = trivia_examples(read_jsonl(path)[:n], tokenizer, "chat")
        return [tokenize_example(tokenizer, e["prompt"], e["response"], 1024) for e in examples], examples

    train_items, train_examples = items(ROOT / "Data" / "training_data.jsonl", n_train)
    val_items, _ = items(ROOT / "Data" / "validation_data.jsonl", n_val)
    return train_items, train_examples, val_items


def padding_share(items: list[dict], batch: int = BATCH, seed: int = 1) -> float:
    """Share of pad tokens in the length-grouped batches ``train()`` builds: all that packing could remove."""
    from cinephile.batching import length_batches

    lengths = [len(i["input_ids"]) for i in items]
    padded = sum(len(g) * max(lengths[i] for i in g) for g in length_batches(lengths, batch, shuffle=True, seed=seed))
    return 1 - sum(lengths) / padded


def run_ours(n_train: int, n_val: int, variant: str = "plain", seed: int = 0) -> dict:
    import functools

    import torch

    from cinephile import models
    from cinephile.train import evaluate_loss, train, TrainConfig
    from lora import LoRAConfig, inject_lora

    # bf16_base: the frozen weights held in bf16 (half the memory, no cast per step), adapters fp32
    model, tok = models.load_base_model(dtype=torch.bfloat16 if variant == "bf16_base" else torch.float32)
    torch.manual_seed(seed)
    inject_lora(model, LoRAConfig(r=16, alpha=32, dropout=0.0, target_modules=tuple(TARGETS)))
    train_items, train_examples, val_items = data(n_train, n_val, tok)
    t0 = time.perf_counter()
    if variant == "fused_adamw":  # train() builds torch.optim.AdamW; this process only
        torch.optim.AdamW = functools.partial(torch.optim.AdamW, fused=True)
    elif variant == "compile":
        model.model = torch.compile(model.model, dynamic=True)
    elif variant not in ("plain", "bf16_autocast", "bf16_base"):  # bf16: TrainConfig(bf16=True)
        raise SystemExit(f"unknown variant {variant!r}; use plain, fused_adamw, compile, bf16_autocast or bf16_base")
    train(model, tok, train_examples, [], TrainConfig(epochs=1, lr=LR, batch_size=BATCH, warmup_ratio=WARMUP,
                                                      max_len=1024, bf16=variant.startswith("bf16"), seed=seed))
    wall = time.perf_counter() - t0
    if variant == "bf16_base":  # the validation loss in fp32 for every variant (a bf16 base keeps its rounded values)
        model.hf_quantizer, model.is_quantized = None, False  # the GGUF loader's marker: nothing is quantized
        model.float()
    return {"wall_s": wall, "val_loss": evaluate_loss(model, val_items, tok.pad_token_id),
            "tokens": sum(len(i["input_ids"]) for i in train_items),
            **({"padding_share": padding_share(train_items)} if variant == "plain" else {})}


def run_trainer(n_train: int, n_val: int, bf16: bool = False, seed: int = 0) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from cinephile import models
    from cinephile.train import evaluate_loss, warmup_then_decay

    model, tok = models.load_base_model()
    # The GGUF weights were dequantized to fp32 at load; only the loader's marker says "quantized", and the
    # Trainer refuses to train a model with that marker. Nothing is quantized, so drop it.
    model.hf_quantizer, model.is_quantized = None, False
    torch.manual_seed(seed)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS,
                                             task_type="CAUSAL_LM"))
    train_items, _, val_items = data(n_train, n_val, tok)
    steps = math.ceil(len(train_items) / BATCH)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_then_decay(steps, WARMUP))  # train()'s schedule
    args = TrainingArguments(output_dir=str(ROOT / "runs" / "bench_trainer"), per_device_train_batch_size=BATCH,
                             num_train_epochs=1, train_sampling_strategy="group_by_length", max_grad_norm=1.0,
                             logging_steps=10,
                             save_strategy="no", eval_strategy="no", report_to=[], dataloader_num_workers=0,
                             use_cpu=True, seed=seed, disable_tqdm=False, bf16=bf16)
    trainer = Trainer(model=model, args=args, train_dataset=train_items, optimizers=(opt, sched),
                      data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "val_loss": evaluate_loss(model.get_base_model(), val_items, tok.pad_token_id),
            "tokens": sum(len(i["input_ids"]) for i in train_items)}


def child(which: str, n_train: int, n_val: int) -> None:
    which, _, seed = which.partition("@")  # "ours:plain@1": another seed (adapter init, batch order)
    kind, _, variant = which.partition(":")
    out = (run_trainer(n_train, n_val, bf16=variant == "bf16_autocast", seed=int(seed or 0)) if kind == "trainer"
           else run_ours(n_train, n_val, variant or "plain", seed=int(seed or 0)))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out), flush=True)


def best_settings(ours: dict, trainer: dict, tried: dict, trainer_bf16: dict | None, tolerance: float = 0.01) -> dict:
    """Each side at its fastest setting whose validation loss stays within ``tolerance`` of its own fp32 run."""
    def fastest(plain: dict, variants: dict) -> tuple[str, dict]:
        ok = {k: r for k, r in variants.items() if "error" not in r and r["val_loss"] <= plain["val_loss"] * (1 + tolerance)}
        return max([("plain", plain)] + list(ok.items()), key=lambda kv: kv[1]["tokens_per_s"])

    o_name, o = fastest(ours, tried)
    t_name, t = fastest(trainer, {"bf16_autocast": trainer_bf16} if trainer_bf16 else {})
    return {"ours": o_name, "trainer": t_name, "trainer_bf16_autocast": trainer_bf16, "tolerance": tolerance,
            "tokens_per_s_ours_over_trainer": round(o["tokens_per_s"] / t["tokens_per_s"], 2),
            "val_loss_relative_difference": round(o["val_loss"] / t["val_loss"] - 1, 4)}


def run_child(which: str, args) -> tuple[dict | None, str]:
    """One training run in its own process: ``(result, "")``, or ``(None, its stderr)`` when it failed."""
    proc = subprocess.run([sys.executable, __file__, "--child", which, "--examples", str(args.examples),
                           "--val", str(args.val)], capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        return None, proc.stderr
    return json.loads(lines[-1][len("RESULT "):]), ""


def seed_spread(seeds: list[int], args) -> None:
    """Both fp32 trainings again with other seeds; their validation losses join the record's seed 0."""
    from cinephile.io import read_json, save_json

    record = read_json(args.out)
    if (record["examples"], record["val_examples"]) != (args.examples, args.val):
        raise SystemExit(f"{args.out} was measured with --examples {record['examples']} --val {record['val_examples']}; "
                         "pass the same")
    spread = {"seeds": [0], "ours": [record["results"]["ours"]["val_loss"]],
              "trainer": [record["results"]["trainer"]["val_loss"]]}
    for seed in seeds:
        spread["seeds"].append(seed)
        for side in ("ours", "trainer"):
            result, stderr = run_child(f"{side}:plain@{seed}", args)
            if result is None:
                raise SystemExit(f"{side} seed {seed} run failed:\n{stderr[-3000:]}")
            spread[side].append(result["val_loss"])
            print(f"seed {seed} {side}: val loss {spread[side][-1]:.4f}", flush=True)
    save_json(args.out, {**record, "seed_spread": spread})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=160)
    ap.add_argument("--val", type=int, default=48)
    ap.add_argument("--tries", default="fused_adamw,compile,bf16_autocast,bf16_base",
                    help="speed-ups tried on our side, comma-separated")
    ap.add_argument("--seed-spread", default="", help="e.g. 1,2: only rerun both fp32 trainings with these seeds "
                    "and add their validation losses to --out (the spread that says whether two losses differ)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_trainer.json"))
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.examples, args.val)
    if args.seed_spread:
        return seed_spread([int(x) for x in args.seed_spread.split(",")], args)
    from cinephile import models

    results, failed, trainer_failed = {}, {}, {}
    bf16 = models.native_bf16()
    tries = [t for t in args.tries.split(",") if t and (not t.startswith("bf16") or bf16)]
    runs = ["ours", "trainer"] + [f"ours:{t}" for t in tries] + (["trainer:bf16_autocast"] if bf16 else [])
    for which in runs:
        result, stderr = run_child(which, args)
        if result is None and ":" in which:  # a try that fails is reported, not fatal
            error = (stderr.strip().splitlines() or ["no output"])[-1][:300]
            (trainer_failed if which.startswith("trainer") else failed)[which.partition(":")[2]] = {"error": error}
            print(f"{which} failed: {error}", flush=True)
            continue
        if result is None:
            raise SystemExit(f"{which} run failed:\n{stderr[-3000:]}")
        results[which] = result
        r = results[which]
        r["tokens_per_s"] = r["tokens"] / r["wall_s"]
        print(f"{which:8s} {r['wall_s']:7.1f} s | {r['tokens_per_s']:7.1f} non-pad tokens/s | peak RSS "
              f"{r['peak_rss_mb']:6.0f} MB | val loss {r['val_loss']:.4f}", flush=True)
    ours, hf = results.pop("ours"), results.pop("trainer")
    hf_bf16 = results.pop("trainer:bf16_autocast", None)
    tried = {k.partition(":")[2]: {**r, "speed_over_plain": round(r["tokens_per_s"] / ours["tokens_per_s"], 3),
                                    "val_loss_relative_to_plain": round(r["val_loss"] / ours["val_loss"] - 1, 4)}
             for k, r in results.items()} | failed
    best = best_settings(ours, hf, tried, hf_bf16)
    pad = ours.pop("padding_share")
    results = {"ours": ours, "trainer": hf}
    print(f"tried on our side: {tried}\npadding share of our batches (the most packing could remove): {pad:.1%}; "
          f"native bf16: {bf16}")
    ratios = {"tokens_per_s_ours_over_trainer": round(ours["tokens_per_s"] / hf["tokens_per_s"], 2),
              "peak_rss_ours_over_trainer": round(ours["peak_rss_mb"] / hf["peak_rss_mb"], 2),
              "val_loss_relative_difference": round(ours["val_loss"] / hf["val_loss"] - 1, 4)}
    print(ratios, best)
    from cinephile.io import save_json
    save_json(args.out, {"benchmark": "trainer_vs_ours", "cores": os.cpu_count(), "examples": args.examples,
                         "val_examples": args.val, "batch": BATCH, "lora": {"r": 16, "alpha": 32, "targets": TARGETS},
                         "results": results, "ratios": ratios, "tried": tried, "best_settings": best,
                         "trainer_failed": trainer_failed, "padding_share": round(pad, 4),
                         "native_bf16": bf16})


if __name__ == "__main__":
    main()
