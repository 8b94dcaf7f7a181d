"""The trivia reader's ablation outside the notebook: the same ``reader.ablation`` call as main.ipynb's opt-in cell.

Reads the settings main.ipynb froze (``runs/<run>/config.json``: model, prompt style, LoRA, training,
chunk size, k, BM25 weight), rebuilds the film-disjoint split with its comparison questions, and trains
one reader per step of ``reader.ablation_steps`` (SmolLM2-135M first, the notebook's reader last), each
scored on the same validation questions (never on the external test set). About 75 minutes on 2 cores.
Writes results/trivia_ablation.json.

    python benchmarks/trivia_ablation.py [--run runs/trivia]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> None:
    from cinephile import films, index, io, models, reader, retrieval, trivia
    from cinephile.train import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "runs" / "trivia"), help="run folder of main.ipynb")
    parser.add_argument("--data", default=str(ROOT / "Data" / "movie_trivia_qa.csv"))
    parser.add_argument("--facts", default=str(ROOT / "Data" / "film_facts.csv"))
    parser.add_argument("--pairs", type=int, nargs=2, default=(36, 8), help="comparison pairs, train / validation")
    parser.add_argument("--out", default=str(ROOT / "results" / "trivia_ablation.json"))
    args = parser.parse_args(argv)
    cfg = io.read_json(Path(args.run) / "config.json")
    records, _ = trivia.load_qa_csv(args.data)
    train_raw, val_raw = films.film_split_with_comparisons(records, films.read_facts(args.facts),
                                                           train_pairs=args.pairs[0], val_pairs=args.pairs[1])
    embed_fn = index.cached_embedder(retrieval.sentence_transformer_embedder(models.load_retriever()))
    steps = reader.ablation_steps(chunk_tokens=cfg["chunk_tokens"], k=cfg["top_k"],
                                  lexical_weight=cfg["lexical_weight"], model=cfg["model"])
    lora = {k: cfg["lora"][k] for k in ("r", "alpha", "dropout")}
    t0 = time.time()
    table = reader.ablation(train_raw, val_raw, embed_fn, steps, model_name=cfg["model"], lora_kwargs=lora,
                            train_cfg=TrainConfig(**cfg["train"]), style=cfg["prompt_style"])
    print(table.round(3).to_string(index=False))
    io.save_json(args.out, {"rows": table.to_dict("records"), "minutes": (time.time() - t0) / 60})


if __name__ == "__main__":
    main()
