"""The rating model's shared history, side by side in one run: scoring and training, with and without it.

A user's test prompts differ only after "Target movie:": the history above it (liked and disliked
titles, genres) is the same for all of them.
(a) Scoring: ``score_ratings(min_shared=64)`` runs that prefix once per user and lets up to ``batch_size``
    of the user's prompts continue its KV cache; ``min_shared=None`` runs every prompt whole (length-grouped
    batches). Same prompts, same model; runs alternate and the medians are compared.
(b) Training: the same users' latest ``--per-user`` training ratings as instructions, one epoch each way:
    every instruction with its own history in length-grouped batches (today's default), or one history
    per user (``shared_history``) with each user's instructions batched together, so ``RatingLoss`` runs
    the history once per batch. Seconds per instruction are compared (the prompts differ slightly: a
    shared history stops before the user's earliest instruction).
Both use llm.ipynb's model settings (bf16 where the CPU has it natively, the base as ``frozen_dtype`` says,
adapters on the top 10 blocks) and MovieLens through llm.ipynb's data path; prompts carry no recommender
predictions (no factor-model fits needed) and answer the rating.

Writes results/bench_rating_speed.json (seconds, ratios, tokens run; under bf16 the difference in expected
rating of each scoring path from an fp32 model (fp32 base, no autocast) on whole prompts: bf16 rounds
differently for different shapes, while in fp32 the two paths agree to 1e-4).

    python benchmarks/rating_speed.py [--users 64] [--train-users 32] [--per-user 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import dataclasses
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
    from cinephile.prompts import chat_examples
    from cinephile.ratings import pipeline
    from cinephile.ratings.config import RatingsConfig
    from cinephile.ratings.branches import shared_prefixes
    from cinephile.ratings.scoring import score_ratings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=64, help="scoring: the first N users, every test pair of each")
    parser.add_argument("--train-users", type=int, default=32, help="training: the first N users")
    parser.add_argument("--per-user", type=int, default=8, help="training instructions per user")
    parser.add_argument("--repeats", type=int, default=2, help="scoring runs each way")
    parser.add_argument("--min-shared", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_rating_speed.json"))
    args = parser.parse_args(argv)

    cfg = RatingsConfig(predictors=(), residual_to=None, max_per_user=args.per_user, pick="latest").resolved()
    split = pipeline.load_and_split(cfg)
    model, tokenizer = pipeline.load_rating_model(cfg)
    answers = cfg.answers

    # (a) scoring
    test = pipeline.rating_examples(cfg, split, which=("test",))["test"]
    users = set(sorted({e["user_id"] for e in test})[:args.users])
    prompts = [e["prompt"] for e in chat_examples([e for e in test if e["user_id"] in users], tokenizer, cfg.system)]
    ids = encode_prompts(tokenizer, prompts)
    groups, rest = shared_prefixes(ids, cfg.batch_size, args.min_shared)
    whole_tokens = sum(map(len, ids))
    shared_tokens = sum(p + sum(len(ids[i]) - p for i in g) for p, g in groups) + sum(len(ids[i]) for i in rest)
    print(f"scoring: {len(prompts)} prompts of {len(users)} users, {whole_tokens / len(ids):.0f} tokens each; "
          f"{len(groups)} shared prefixes of {np.mean([p for p, _ in groups]):.0f} tokens; tokens run: "
          f"{shared_tokens / whole_tokens:.2f} of whole prompts", flush=True)

    def score(min_shared, n=None):
        t0 = time.perf_counter()
        out = score_ratings(model, tokenizer, prompts[:n], batch_size=cfg.batch_size, answers=answers,
                            progress=False, bf16=cfg.bf16, min_shared=min_shared)
        return time.perf_counter() - t0, out

    score(None, n=cfg.batch_size)  # warm-up
    times, outs = {"whole": [], "shared": []}, {}
    for _ in range(args.repeats):
        for name, min_shared in (("whole", None), ("shared", args.min_shared)):
            seconds, outs[name] = score(min_shared)
            times[name].append(seconds)
            print(f"  {name}: {seconds:.1f} s", flush=True)
    whole, shared = statistics.median(times["whole"]), statistics.median(times["shared"])
    from_fp32 = {}
    if cfg.bf16:  # bf16 rounds differently for different shapes: both paths against an fp32 model on whole prompts
        fp32_model, _ = pipeline.load_rating_model(dataclasses.replace(cfg, bf16=False, frozen_dtype="float32"))
        fp32 = score_ratings(fp32_model, tokenizer, prompts, batch_size=cfg.batch_size, answers=answers,
                             progress=False, bf16=False, min_shared=None)["expected"]
        from_fp32 = {name: {"max": float(np.abs(o["expected"] - fp32).max()),
                            "mean": float(np.abs(o["expected"] - fp32).mean())} for name, o in outs.items()}
        print("expected rating against an fp32 model on whole prompts: " + ", ".join(
            f"{k} max {v['max']:.4f} mean {v['mean']:.4f}" for k, v in from_fp32.items()), flush=True)
        fp32_model = None
    scoring = {"prompts": len(prompts), "users": len(users), "mean_prompt_tokens": whole_tokens / len(ids),
               "shared_groups": len(groups), "mean_shared_tokens": float(np.mean([p for p, _ in groups])),
               "tokens_run_ratio": shared_tokens / whole_tokens, "min_shared": args.min_shared, "seconds": times,
               "whole_s": whole, "shared_s": shared, "ratio": shared / whole,
               "max_abs_expected_diff": float(np.abs(outs["whole"]["expected"] - outs["shared"]["expected"]).max()),
               "expected_diff_from_fp32_whole": from_fp32}
    print(f"scoring: whole {whole:.1f} s, shared {shared:.1f} s: {shared / whole:.2f}x", flush=True)

    # (b) training, one epoch each way on the same users' latest instructions
    training = {}
    for name, shared_history in (("own history", False), ("shared history", True)):
        run_cfg = dataclasses.replace(cfg, shared_history=shared_history)
        train = pipeline.rating_examples(run_cfg, split, which=("train",))["train"]
        keep = set(sorted({e["user_id"] for e in train})[:args.train_users])
        train = [e for e in train if e["user_id"] in keep]
        torch.manual_seed(0)
        model, tokenizer = pipeline.load_rating_model(run_cfg)
        ex = chat_examples(train, tokenizer, run_cfg.system)
        t0 = time.perf_counter()
        pipeline.train_rating_model(model, tokenizer, ex, [], run_cfg.train_config(), answers=answers)
        seconds = time.perf_counter() - t0
        tokens = [len(t) for t in encode_prompts(tokenizer, [e["prompt"] for e in ex])]
        training[name] = {"instructions": len(ex), "users": len(keep), "seconds": seconds,
                          "per_instruction_s": seconds / len(ex), "mean_prompt_tokens": float(np.mean(tokens))}
        print(f"training, {name}: {len(ex)} instructions in {seconds:.1f} s ({seconds / len(ex):.3f} s each)",
              flush=True)
    ratio = training["shared history"]["per_instruction_s"] / training["own history"]["per_instruction_s"]
    result = {"benchmark": "rating_speed", "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "model": cfg.model_name, "bf16": cfg.bf16, "frozen_dtype": cfg.frozen_dtype,
              "lora_layers": list(cfg.lora_layers), "batch_size": cfg.batch_size, "scoring": scoring,
              "training": {**training, "per_user": args.per_user, "ratio": ratio}}
    io.save_json(args.out, result)
    print(f"training: shared history {ratio:.2f}x the time per instruction; wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
