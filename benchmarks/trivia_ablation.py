"""The trivia reader's ablation outside the notebook: the same ``pipeline.ablation`` call as main.ipynb's opt-in cell.

Reads the settings main.ipynb froze (``runs/<run>/config.json``: model, prompt style, LoRA, training,
chunk size, k, BM25 weight), rebuilds the film-disjoint split with its comparison questions, and trains
one reader per step of ``pipeline.ablation_steps`` (SmolLM2-135M first, the notebook's reader last), each
scored on the same validation questions (never on the external test set). About 2.5 hours on 2 cores.
Writes results/trivia_ablation.json; ``--steps`` re-measures only some steps (indices into the step list)
and replaces those rows of the existing file.

    python benchmarks/trivia_ablation.py [--run runs/trivia] [--steps 7] [--train-pairs 50] [--first-context 128 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> None:
    from cinephile import embedding, io, models
    from cinephile.train import TrainConfig
    from cinephile.trivia import data, films, pipeline, splits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "runs" / "trivia"), help="run folder of main.ipynb")
    parser.add_argument("--data", default=str(ROOT / "Data" / "movie_trivia_qa.csv"))
    parser.add_argument("--facts", default=str(ROOT / "Data" / "film_facts.csv"))
    parser.add_argument("--pairs", type=int, nargs=2, default=(36, 8),
                        help="comparison pairs of the first recipe, train / validation")
    parser.add_argument("--train-pairs", type=int, help="training pairs of the last step (main.ipynb's "
                        "COMPARISON_PAIRS[0]; default: the run's config, else --pairs)")
    parser.add_argument("--first-context", type=int, nargs=2, default=(128, 3), metavar=("CHUNK_TOKENS", "K"),
                        help="chunk size and k of the first recipe's hybrid retrieval step")
    parser.add_argument("--out", default=str(ROOT / "results" / "trivia_ablation.json"))
    parser.add_argument("--steps", type=int, nargs="+", help="only these steps (0-based), merged into --out")
    args = parser.parse_args(argv)
    cfg = io.read_json(Path(args.run) / "config.json")
    records, _ = data.load_qa_csv(args.data)
    facts = films.read_facts(args.facts)
    steps = pipeline.ablation_steps(chunk_tokens=cfg["chunk_tokens"], k=cfg["top_k"],
                                  lexical_weight=cfg["lexical_weight"], model=cfg["model"],
                                  epochs=cfg["train"]["epochs"], bf16=cfg["train"].get("bf16"),
                                  first_pairs=args.pairs[0],
                                  train_pairs=args.train_pairs or cfg.get("comparison_pairs", args.pairs)[0],
                                  first_context=tuple(args.first_context))
    chosen = sorted(set(args.steps)) if args.steps else range(len(steps))
    if any(i not in range(len(steps)) for i in chosen):
        raise SystemExit(f"--steps must be indices 0..{len(steps) - 1} of: " + "; ".join(s["name"] for s in steps))
    previous = io.read_json(args.out) if args.steps and Path(args.out).is_file() else {"rows": [], "minutes": 0.0}
    lora = {k: cfg["lora"][k] for k in ("r", "alpha", "dropout")}
    by_pairs = {n: splits.film_split_with_comparisons(records, facts, train_pairs=n, val_pairs=args.pairs[1])
              for n in {steps[i]["train_pairs"] for i in chosen}}
    val_raw = next(iter(by_pairs.values()))[1]  # the same validation records whatever the training pairs
    embed_fn = embedding.cached_embedder(embedding.sentence_transformer_embedder(models.load_retriever()))
    t0 = time.time()
    table = pipeline.ablation({n: train for n, (train, _) in by_pairs.items()}, val_raw, embed_fn,
                            [steps[i] for i in chosen], model_name=cfg["model"],
                            lora_kwargs=lora, train_cfg=TrainConfig(**cfg["train"]), style=cfg["prompt_style"])
    print(table.round(3).to_string(index=False))
    fresh = {row["name"]: row for row in table.to_dict("records")}
    kept = {row["name"]: row for row in previous["rows"]}
    rows = [fresh.get(s["name"]) or kept.get(s["name"]) for s in steps]
    missing = [s["name"] for s, row in zip(steps, rows) if row is None]
    if missing:
        print("not measured yet (run without --steps for the whole table):", "; ".join(missing))
    io.save_json(args.out, {"rows": [row for row in rows if row is not None],
                            "minutes": previous["minutes"] + (time.time() - t0) / 60})


if __name__ == "__main__":
    main()
