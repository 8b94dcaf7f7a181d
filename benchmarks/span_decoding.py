"""Free vs span-constrained decoding of the trained trivia reader, on the film-disjoint validation split.

Loads the adapter main.ipynb saved and the validation JSONL it wrote, generates the "tuned + retrieved"
answers twice (free greedy decoding, and decoding restricted to spans of the retrieved context plus
"yes", "no" and numbers: ``cinephile.generate.span_constraint``) and prints EM / F1 with the paired
bootstrap interval of the difference. Validation only: the choice is never made on the external test
set. Writes results/bench_span_decoding.json.

    python benchmarks/span_decoding.py [--run runs/trivia] [--data Data/validation_data.jsonl]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> dict:
    from cinephile import io
    from cinephile.trivia import evaluate, pipeline
    from cinephile.trivia.config import TriviaConfig
    from lora import load_lora_weights

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "runs" / "trivia"), help="run folder of main.ipynb")
    parser.add_argument("--data", default=str(ROOT / "Data" / "validation_data.jsonl"))
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_span_decoding.json"))
    args = parser.parse_args(argv)
    cfg = TriviaConfig.load(Path(args.run) / "config.json")
    weights = Path(args.run) / pipeline.weights_name(cfg)
    if not weights.is_file():
        raise SystemExit(f"no {weights.name} in {args.run}; run main.ipynb first")
    records = io.read_jsonl(args.data)
    model, tokenizer, _ = pipeline.load_reader(cfg)
    load_lora_weights(model, weights)
    free = pipeline.TUNED_ROW
    t0 = time.time()
    table, lines = evaluate.evaluate_qa(model, tokenizer, records, cfg.prompt_style, rows=[free, evaluate.SPAN_ROW],
                                        predictions_path=Path(args.run) / "predictions_span_decoding.jsonl")
    result = {"model": cfg.model_name, "n": len(records), "cores": os.cpu_count(),
              "rows": table.to_dict("records"),
              "em_diff": evaluate.paired_difference(lines, evaluate.SPAN_ROW[0], free[0]),
              "f1_diff": evaluate.paired_difference(lines, evaluate.SPAN_ROW[0], free[0], key="f1"),
              "minutes": (time.time() - t0) / 60}
    print(table.round(1).to_string(index=False))
    print("span - free, EM:", {k: round(v, 1) if isinstance(v, float) else v for k, v in result["em_diff"].items()})
    print("span - free, F1:", {k: round(v, 1) if isinstance(v, float) else v for k, v in result["f1_diff"].items()})
    io.save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
