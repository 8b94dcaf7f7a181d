"""The rating model's opt-in large configuration, measured once: llm.ipynb's pipeline on 4x its training instructions.

llm.ipynb trains on each user's 8 latest training-period ratings (4,866 instructions) to stay within its
time budget. This script runs the same stages (``cinephile.ratings.pipeline``: split, tuned baselines with
their seeds, instructions, LoRA training, expected value on every test pair, greedy answers on each user's
last pair) with each user's ``--per-user`` latest training ratings (40: 19,466 instructions; a target needs 3
earlier ratings). With that many targets per user, a prompt's recommender predictions come from ``--folds``
refits, each without a fold of the targets (out of fold: no anchor has seen its own rating). The export and the llama.cpp check are left
to the notebook (the answer format is the same).

Writes results/ratings_large.json (the notebook's record: table, slices, user-resampled intervals, timings)
and the run's files under runs/ratings-large/ (instructions, adapter weights, metrics.json).

    python benchmarks/rating_large.py [--per-user 40] [--folds 5] [--epochs 1] [--set FIELD=JSON ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> dict:
    from cinephile import io
    from cinephile.ratings import pipeline
    from cinephile.ratings.config import RatingsConfig, Timer, start_run
    from lora import save_adapter

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-user", type=int, default=40, help="training instructions per user (latest first)")
    parser.add_argument("--folds", type=int, default=5, help="out-of-fold refits for the training prompts' predictions")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--run-name", default="ratings-large")
    parser.add_argument("--out", default=str(ROOT / "results" / "ratings_large.json"))
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON",
                        help='other RatingsConfig fields, e.g. --set train_limit=64 n_eval=8 baseline_seeds=1')
    args = parser.parse_args(argv)

    other = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or name not in {f.name for f in dataclasses.fields(RatingsConfig)}:
            parser.error(f"--set {item!r}: give FIELD=VALUE with a RatingsConfig field, e.g. train_limit=64")
        other[name] = json.loads(value)
    cfg = RatingsConfig(**{"max_per_user": args.per_user, "predictor_folds": args.folds, "epochs": args.epochs,
                           "run_name": args.run_name, "data_out": f"runs/{args.run_name}/data", **other,
                           "results_json": ""}).resolved()
    timer = Timer()
    run_dir = start_run(cfg)
    split = pipeline.load_and_split(cfg)
    with timer("baselines_s"):
        base = pipeline.baselines(cfg, split)
    with timer("examples_s"):
        instr = pipeline.build_instructions(cfg, split, base.params)
    print(f"{len(instr.train):,} training instructions ({args.per_user} latest per user), "
          f"{len(instr.eval):,} test pairs", flush=True)
    model, tokenizer = pipeline.load_rating_model(cfg)
    ex = pipeline.chat(cfg, tokenizer, instr)
    with timer("zero_shot_scoring_s"):
        zero = pipeline.zero_shot(cfg, model, tokenizer, ex)
    with timer("training_s"):
        history = pipeline.train_rating_model(model, tokenizer, ex.train, ex.val, cfg.train_config(),
                                              answers=cfg.answers, loss=cfg.loss, rating_lambda=cfg.rating_lambda)
    save_adapter(model, run_dir / "adapter")
    with timer("scoring_s"):
        scores = pipeline.score(cfg, model, tokenizer, instr, ex, base, zero)
    record = pipeline.summary(cfg, instr, ex, scores, None, history, timer.total(), run_dir, base)
    record = {**record, "timings_s": {k: round(v, 1) for k, v in timer.seconds.items()},
              "command": "python benchmarks/rating_large.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    io.save_json(args.out, record)
    print(scores.intervals.to_string(index=False))
    print({k: round(v / 60, 1) for k, v in timer.seconds.items()}, "minutes")
    return record


if __name__ == "__main__":
    main()
