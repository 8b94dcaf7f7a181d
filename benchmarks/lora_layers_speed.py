"""A reader's LoRA training step with adapters on every block, the top half, or the top quarter, side by side.

Backpropagation stops at the lowest adapted block: below it no activation needs a gradient, so the step's
backward pass (about two thirds of it) shrinks with the adapted share while the forward pass stays whole. The
step is the trivia reader's: LoRA r=16 on q/k/v/o, batch 8 x 300 tokens, the loss on the last 8 tokens of each
row, AdamW on the adapters, the frozen base in bf16 with bf16 autocast where the CPU has native bf16 and in
fp32 otherwise (as ``TriviaConfig`` resolves it). Each setting runs in its own subprocess (its own peak RSS),
the settings interleaved per repeat so machine noise hits them alike. Prints the median step time and peak
RSS per setting and their ratios to every block; writes results/bench_lora_layers.json.

    python benchmarks/lora_layers_speed.py                                # Qwen2.5-Coder-0.5B, 3 steps
    python benchmarks/lora_layers_speed.py --model qwen2.5-coder-1.5b --steps 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synthetic import BATCH, LABELS, SEQ  # noqa: E402

SHARES = {"every block": 1.0, "top half": 0.5, "top quarter": 0.25}


def worker(model_name: str, share: float, steps: int) -> dict:
    """Median seconds of ``steps`` training steps after one warm-up, with adapters on the top ``share`` of blocks."""
    import torch

    from benchmarks.synthetic import random_batch, train_step
    from cinephile import models
    from lora import adapter_parameters, inject_lora

    bf16 = models.native_bf16()
    model, tok = models.load_base_model(model_name, dtype=torch.bfloat16 if bf16 else torch.float32)
    n = model.config.num_hidden_layers
    layers = list(range(n - max(1, round(n * share)), n))
    torch.manual_seed(0)
    inject_lora(model, models.lora_preset(model_name, r=16, alpha=32, dropout=0.0,
                                          layers=None if len(layers) == n else layers))
    params = adapter_parameters(model)
    opt = torch.optim.AdamW(params, lr=1e-4)
    batch = random_batch(tok.pad_token_id, model.config.vocab_size, torch.Generator().manual_seed(0),
                         batch=BATCH, seq=SEQ, labels=LABELS)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        train_step(model, batch, bf16, opt)
        if i:  # the first step allocates and picks kernels
            times.append(time.perf_counter() - t0)
    return {"step_s": statistics.median(times), "steps_s": times, "layers": [layers[0], n], "blocks": n,
            "lora_params": sum(p.numel() for p in params), "bf16": bf16,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run(model_name: str, share: float, steps: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", model_name, str(share), str(steps)],
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"the {share:.0%} worker failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per run, after one warm-up step")
    ap.add_argument("--repeats", type=int, default=1, help="runs per setting, interleaved")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_lora_layers.json"))
    args = ap.parse_args(argv)
    if args.worker:
        name, share, steps = args.worker
        print(json.dumps(worker(name, float(share), int(steps))))
        return
    runs: dict[str, list[dict]] = {label: [] for label in SHARES}
    for r in range(args.repeats):
        for label, share in SHARES.items():
            runs[label].append(run(args.model, share, args.steps))
            last = runs[label][-1]
            print(f"repeat {r + 1}/{args.repeats} {label:<12} blocks {last['layers'][0]}..{last['blocks'] - 1}: "
                  f"step {last['step_s']:.1f} s, peak RSS {last['peak_rss_mb']:.0f} MB", flush=True)
    settings = {}
    for label, rs in runs.items():
        settings[label] = {"layers": rs[0]["layers"], "lora_params": rs[0]["lora_params"],
                           "step_s": statistics.median(x["step_s"] for x in rs),
                           "peak_rss_mb": statistics.median(x["peak_rss_mb"] for x in rs),
                           "steps_s": [t for x in rs for t in x["steps_s"]]}
    base = settings["every block"]
    bf16 = runs["every block"][0]["bf16"]
    print(f"\n{args.model}, batch {BATCH} x {SEQ} tokens, bf16 {bf16}, {os.cpu_count()} cores")
    print(f"{'adapters on':<14}{'blocks':>8}{'step s':>9}{'speed-up':>10}{'peak RSS MB':>13}{'RSS ratio':>11}")
    for label, s in settings.items():
        s["speedup_vs_every_block"] = round(base["step_s"] / s["step_s"], 3)
        s["rss_vs_every_block"] = round(s["peak_rss_mb"] / base["peak_rss_mb"], 3)
        print(f"{label:<14}{s['layers'][1] - s['layers'][0]:>8}{s['step_s']:>9.1f}{s['speedup_vs_every_block']:>9.2f}x"
              f"{s['peak_rss_mb']:>13.0f}{s['rss_vs_every_block']:>10.2f}x")
    from cinephile.io import save_json
    save_json(args.out, {"benchmark": "lora_layers_speed", "model": args.model, "cores": os.cpu_count(),
                         "bf16": bf16, "batch": BATCH, "seq_len": SEQ,
                         "loss_positions": LABELS, "timed_steps": args.steps, "repeats": args.repeats,
                         "settings": settings})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
