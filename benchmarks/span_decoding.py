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
    from cinephile import io, models
    from cinephile.trivia import evaluate
    from lora import load_lora_weights

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "runs" / "trivia"), help="run folder of main.ipynb")
    parser.add_argument("--data", default=str(ROOT / "Data" / "validation_data.jsonl"))
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_span_decoding.json"))
    args = parser.parse_args(argv)
    config = io.read_json(Path(args.run) / "config.json")
    weights = next(Path(args.run).glob("lora_*_triviaqa_weights.pth"), None)
    if weights is None:
        raise SystemExit(f"no lora_*_triviaqa_weights.pth in {args.run}; run main.ipynb first")
    records = io.read_jsonl(args.data)
    model, tokenizer = models.load_base_model(config["model"])
    load_lora_weights(model, weights)
    free = ("tuned + retrieved context", True, "retrieved_context")
    t0 = time.time()
    table = evaluate.evaluate_qa(model, tokenizer, records, config["prompt_style"], rows=[free, evaluate.SPAN_ROW],
                                predictions_path=Path(args.run) / "predictions_span_decoding.jsonl")
    lines = io.read_jsonl(Path(args.run) / "predictions_span_decoding.jsonl")
    result = {"model": config["model"], "n": len(records), "cores": os.cpu_count(),
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
