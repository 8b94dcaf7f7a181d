"""The trivia reader's ablation outside the notebook: the same ``ablation.ablation`` call as main.ipynb's opt-in cell.

Reads the resolved config main.ipynb saved (``runs/<run>/config.json``: model, prompt style, LoRA, training,
chunk size, k, BM25 weight), rebuilds the film-disjoint split with its comparison questions, and trains
one reader per step of ``ablation.ablation_steps`` (SmolLM2-135M first, the notebook's reader last), each
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
    import dataclasses

    from cinephile import embedding, io, models
    from cinephile.trivia import ablation
    from cinephile.trivia.config import TriviaConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "runs" / "trivia"), help="run folder of main.ipynb")
    parser.add_argument("--data", default=str(ROOT / "Data" / "movie_trivia_qa.csv"))
    parser.add_argument("--facts", default=str(ROOT / "Data" / "film_facts.csv"))
    parser.add_argument("--pairs", type=int, nargs=2, default=(36, 8),
                        help="comparison pairs of the first recipe, train / validation")
    parser.add_argument("--train-pairs", type=int, help="training pairs of the last step (main.ipynb's "
                        "COMPARISON_PAIRS[0]; default: the run's config)")
    parser.add_argument("--first-context", type=int, nargs=2, default=(128, 3), metavar=("CHUNK_TOKENS", "K"),
                        help="chunk size and k of the first recipe's hybrid retrieval step")
    parser.add_argument("--out", default=str(ROOT / "results" / "trivia_ablation.json"))
    parser.add_argument("--steps", type=int, nargs="+", help="only these steps (0-based), merged into --out")
    args = parser.parse_args(argv)
    saved = TriviaConfig.load(Path(args.run) / "config.json")
    cfg = dataclasses.replace(saved, data_csv=args.data, facts_csv=args.facts, split="film", max_questions=None,
                              comparison_pairs=(args.train_pairs or saved.comparison_pairs[0], args.pairs[1]))
    steps = ablation.steps_for(cfg, first_pairs=args.pairs[0], first_context=tuple(args.first_context))
    chosen = sorted(set(args.steps)) if args.steps else range(len(steps))
    if any(i not in range(len(steps)) for i in chosen):
        raise SystemExit(f"--steps must be indices 0..{len(steps) - 1} of: " + "; ".join(s["name"] for s in steps))
    previous = io.read_json(args.out) if args.steps and Path(args.out).is_file() else {"rows": [], "minutes": 0.0}
    run_steps = [steps[i] for i in chosen]
    embed_fn = embedding.cached_embedder(embedding.sentence_transformer_embedder(models.load_retriever()))
    t0 = time.time()
    table = ablation.ablation(cfg, ablation.load_splits(cfg, run_steps), embed_fn, run_steps)
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
