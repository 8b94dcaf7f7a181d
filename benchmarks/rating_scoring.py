"""Scoring rating prompts with a shared history prefix against whole prompts, side by side in one run.

A user's test prompts differ only after "Target movie:": the history above it (liked and disliked
titles, genres) is the same for all of them. ``score_ratings(min_shared=64)`` runs that prefix once per
user and lets up to ``batch_size`` of the user's prompts continue its KV cache; ``min_shared=None`` runs
every prompt whole (length-grouped batches). Both score the same prompts of llm.ipynb's test file (each
user's every test pair, in the notebook's chat template and answer format) with llm.ipynb's model
settings (bf16 where the CPU has it natively); the adapters are freshly injected (B = 0), so both read the
base model. Runs alternate (whole, shared, whole, shared, ...) and the medians are compared.

Writes results/bench_rating_scoring.json (seconds, ratio, tokens run, the largest difference in expected rating
between the two and, under bf16, of each from whole prompts scored in fp32: bf16 rounds differently for
different shapes, so the two bf16 paths differ by that rounding, while in fp32 they agree to 1e-4).

    python benchmarks/rating_scoring.py [--examples Data/movielens_test.jsonl] [--users 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> None:
    import numpy as np
    import torch

    from cinephile import io
    from cinephile.generate import encode_prompts
    from cinephile.ratings import pipeline
    from cinephile.ratings.config import RatingsConfig
    from cinephile.ratings.scoring import score_ratings, shared_prefixes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", default=str(ROOT / "Data" / "movielens_test.jsonl"),
                        help="test instructions written by llm.ipynb")
    parser.add_argument("--users", type=int, default=64, help="the first N users, every test pair of each")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--min-shared", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_rating_scoring.json"))
    args = parser.parse_args(argv)
    if not Path(args.examples).is_file():
        raise SystemExit(f"{args.examples} not found: run llm.ipynb once (it writes the MovieLens instructions), "
                         "or pass --examples")

    rows = io.read_jsonl(args.examples, required=("user_id", "prompt", "response"))
    users = sorted({r["user_id"] for r in rows})[:args.users]
    rows = [r for r in rows if r["user_id"] in set(users)]
    cfg = RatingsConfig().resolved()
    model, tokenizer = pipeline.load_rating_model(cfg)
    examples, answers = pipeline.launch_examples(rows, tokenizer, args.examples)
    prompts = [e["prompt"] for e in examples]
    anchors = answers.anchors(examples)
    ids = encode_prompts(tokenizer, prompts)
    groups, rest = shared_prefixes(ids, cfg.batch_size, args.min_shared)
    whole_tokens = sum(map(len, ids))
    shared_tokens = sum(p + sum(len(ids[i]) - p for i in g) for p, g in groups) + sum(len(ids[i]) for i in rest)
    print(f"{len(prompts)} prompts of {len(users)} users, {whole_tokens / len(ids):.0f} tokens each; "
          f"{len(groups)} shared prefixes of {np.mean([p for p, _ in groups]):.0f} tokens; tokens run: "
          f"{shared_tokens / whole_tokens:.2f} of whole prompts", flush=True)

    def run(min_shared):
        t0 = time.perf_counter()
        out = score_ratings(model, tokenizer, prompts, batch_size=cfg.batch_size, answers=answers, anchors=anchors,
                            progress=False, bf16=cfg.bf16, min_shared=min_shared)
        return time.perf_counter() - t0, out

    score_ratings(model, tokenizer, prompts[:cfg.batch_size], batch_size=cfg.batch_size, answers=answers,
                  anchors=anchors[:cfg.batch_size] if anchors else None, progress=False, bf16=cfg.bf16)  # warm-up
    times = {"whole": [], "shared": []}
    outs = {}
    for _ in range(args.repeats):
        for name, min_shared in (("whole", None), ("shared", args.min_shared)):
            seconds, outs[name] = run(min_shared)
            times[name].append(seconds)
            print(f"{name}: {seconds:.1f} s", flush=True)
    whole, shared = statistics.median(times["whole"]), statistics.median(times["shared"])
    diff = float(np.abs(outs["whole"]["expected"] - outs["shared"]["expected"]).max())
    from_fp32 = {}
    if cfg.bf16:  # bf16 rounds differently for different shapes: both paths against whole prompts in fp32
        fp32 = score_ratings(model, tokenizer, prompts, batch_size=cfg.batch_size, answers=answers, anchors=anchors,
                             progress=False, bf16=False, min_shared=None)["expected"]
        from_fp32 = {name: {"max": float(np.abs(o["expected"] - fp32).max()),
                            "mean": float(np.abs(o["expected"] - fp32).mean())} for name, o in outs.items()}
        print("expected rating against whole prompts in fp32: " + ", ".join(
            f"{k} max {v['max']:.4f} mean {v['mean']:.4f}" for k, v in from_fp32.items()), flush=True)
    result = {"benchmark": "rating_scoring", "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "model": cfg.model_name, "bf16": cfg.bf16, "frozen_dtype": cfg.frozen_dtype,
              "prompts": len(prompts), "users": len(users), "mean_prompt_tokens": whole_tokens / len(ids),
              "shared_groups": len(groups), "mean_shared_tokens": float(np.mean([p for p, _ in groups])),
              "tokens_run_ratio": shared_tokens / whole_tokens, "min_shared": args.min_shared,
              "seconds": times, "whole_s": whole, "shared_s": shared, "ratio": shared / whole,
              "per_pair_s": {"whole": whole / len(prompts), "shared": shared / len(prompts)},
              "max_abs_expected_diff": diff, "expected_diff_from_fp32_whole": from_fp32}
    io.save_json(args.out, result)
    print(f"whole {whole:.1f} s, shared {shared:.1f} s: {shared / whole:.2f}x; largest difference in expected rating "
          f"{diff:.4f}; wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
