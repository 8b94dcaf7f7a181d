"""Attention kernels for the trivia reader, side by side in one run: eager vs SDPA.

Same model (Gemma 3 270M with the notebook's LoRA), same batches, the two loaded at once and
timed alternately so machine noise hits both alike. Measures a training step (forward + backward,
response-only loss) and greedy generation at the notebook's lengths, under the notebook's
precision (bf16 autocast where the CPU has native bf16), and checks that the two kernels agree.
Writes results/bench_attention.json (medians, ratios, the machine's core count).

    python benchmarks/attention_speed.py            # 5 timed repeats each
    python benchmarks/attention_speed.py --quick    # 2 repeats, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seq-len", type=int, default=450, help="prompt tokens (the notebook's mean is about 450)")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_attention.json"))
    args = ap.parse_args()

    import torch

    from benchmarks.synthetic import random_batch, train_step
    from cinephile import models
    from cinephile.generate import generate_answers
    from cinephile.io import save_json
    from lora import inject_lora

    torch.manual_seed(0)
    bf16 = models.native_bf16()
    kernels = ("sdpa", "eager")
    loaded = {}
    for kernel in kernels:
        model, tok = models.load_base_model(args.model, attn_implementation=kernel)
        inject_lora(model, models.lora_preset(args.model, r=16, alpha=32, dropout=0.0))
        loaded[kernel] = (model, tok)
    tok = loaded["sdpa"][1]
    vocab = len(tok)
    gen = torch.Generator().manual_seed(0)
    T = args.seq_len
    batch = random_batch(tok.pad_token_id, vocab - 1, gen, low=1000, seq=T)
    words = "The film was directed by a man who was born in a small town and later moved to the city . "
    prompts = [f"Context: {words * (T // 20)}\nQuestion: Who directed film number {i}?\nAnswer:" for i in range(8)]

    def timed_step(model):
        t0 = time.perf_counter()
        loss = train_step(model, batch, bf16)
        return time.perf_counter() - t0, loss

    def generate(model, tokenizer):
        t0 = time.perf_counter()
        out = generate_answers(model, tokenizer, prompts, max_new_tokens=16, progress=False, bf16=bf16)
        return time.perf_counter() - t0, out

    repeats = 2 if args.quick else 5
    times = {k: {"train_step_s": [], "generate_s": []} for k in kernels}
    losses, answers = {}, {}
    for kernel in kernels:  # warm-up (first calls allocate and tune)
        timed_step(loaded[kernel][0])
    for _ in range(repeats):
        for kernel in kernels:
            dt, losses[kernel] = timed_step(loaded[kernel][0])
            times[kernel]["train_step_s"].append(dt)
            dt, answers[kernel] = generate(*loaded[kernel])
            times[kernel]["generate_s"].append(dt)
    med = {k: {m: statistics.median(v) for m, v in t.items()} for k, t in times.items()}
    result = {
        "model": args.model, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "bf16": bf16,
        "batch": 8, "seq_len": T, "repeats": repeats, "median_s": med,
        "speedup_eager_vs_sdpa": {m: med["sdpa"][m] / med["eager"][m] for m in ("train_step_s", "generate_s")},
        "loss_abs_diff": abs(losses["sdpa"] - losses["eager"]),
        "same_answers": sum(a == b for a, b in zip(answers["sdpa"], answers["eager"])),
        "n_answers": len(prompts),
    }
    save_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
