"""main.ipynb's wall time with the frozen base in fp32 and in bf16, side by side, against the roofline's prediction.

Executes the notebook twice in one run, first with ``FROZEN_DTYPE="float32"`` (the reader's weights in fp32,
autocast casting them to bf16 in every step), then at its defaults (the base held in bf16 where the CPU has
native bf16). Each run writes its executed copy, data files and tables under runs/notebook-wall/, never over
the committed ones. The prediction scales the fp32 run's stages by the roofline's side-by-side ratios for the
notebook's reader (results/bench_roofline.json): training by the training step's, evaluation and the external
evaluation by generation's; the other stages (settings, retrieval, the off-the-shelf reader) do not depend on
the reader's dtype. Writes results/bench_notebook_wall.json.

    python benchmarks/notebook_wall.py                 # two full runs of main.ipynb, about 40 minutes
    python benchmarks/notebook_wall.py -p EXTERNAL_LIMIT 10 -p MAX_QUESTIONS 120   # a quick check
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cinephile.io import read_json, save_json  # noqa: E402
from cinephile.notebooks import parse_value, run_notebook  # noqa: E402

RUNS = (("fp32 base", "float32"), ("bf16 base (default)", "auto"))
SCALED_BY = {"training_s": "step_s", "evaluation_s": "generate_s", "external_eval_s": "generate_s"}


def roofline_ratios(record: dict, model: str) -> dict[str, float]:
    """bf16-base time / fp32-base time of the training step and of generation, for ``model``."""
    rows = {(m["model"].split(" (")[0], m["frozen_dtype"]): m for m in record["models"]}
    fp32, bf16 = rows.get((model, "float32")), rows.get((model, "bfloat16"))
    if fp32 is None or bf16 is None:
        raise SystemExit(f"results/bench_roofline.json has no fp32 and bf16 rows for {model}; "
                         f"run: python benchmarks/roofline.py --models {model}")
    return {key: bf16[key] / fp32[key] for key in ("step_s", "generate_s")}


def predict(timings: dict, ratios: dict) -> dict[str, float]:
    """The fp32 run's stage times scaled by the roofline's ratios (unscaled stages kept)."""
    stages = {k: v for k, v in timings.items() if k != "total_s"}
    predicted = {k: v * ratios[SCALED_BY[k]] if k in SCALED_BY else v for k, v in stages.items()}
    return {**predicted, "total_s": sum(predicted.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a parameter for both runs, e.g. -p EXTERNAL_LIMIT 10")
    ap.add_argument("--model", default="gemma3-270m", help="the notebook's reader (MODEL_NAME)")
    ap.add_argument("--reuse", action="store_true", help="take both runs from runs/notebook-wall/ (executed "
                    "before) and predict again from the current roofline, e.g. after re-running it")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_notebook_wall.json"))
    args = ap.parse_args()
    shared = {name: parse_value(value) for name, value in args.parameter}
    ratios = roofline_ratios(read_json(ROOT / "results" / "bench_roofline.json"), args.model)
    folder = ROOT / "runs" / "notebook-wall"
    runs = []
    for label, dtype in RUNS:
        tag = dtype.replace("auto", "default")
        params = {**shared, "MODEL_NAME": args.model, "FROZEN_DTYPE": dtype, "RUN_NAME": f"notebook-wall-{tag}",
                  "DATA_OUT": str(folder / f"data-{tag}"), "RESULTS_JSON": str(folder / f"trivia-{tag}.json")}
        if not args.reuse:
            print(f"{label}: executing main.ipynb", flush=True)
            run_notebook(ROOT / "main.ipynb", folder / f"main-{tag}.ipynb", parameters=params, cwd=ROOT)
        record = read_json(params["RESULTS_JSON"])
        runs.append({"label": label, "frozen_dtype": dtype, "timings_s": record["timings_s"],
                     "tuned_em": {side: next((r["em"] for r in rows if r["row"] == "tuned + retrieved context"), None)
                                  for side, rows in record["results"].items()}})
        print(f"{label}: {record['timings_s']['total_s'] / 60:.1f} min", flush=True)
    predicted = predict(runs[0]["timings_s"], ratios)
    measured = runs[1]["timings_s"]["total_s"]
    save_json(args.out, {"benchmark": "notebook_wall", "cores": os.cpu_count(), "model": args.model,
                         "parameters": shared, "roofline_ratios": ratios, "runs": runs,
                         "predicted_s": predicted, "predicted_ratio": predicted["total_s"] / runs[0]["timings_s"]["total_s"],
                         "measured_ratio": measured / runs[0]["timings_s"]["total_s"]})
    print(f"predicted {predicted['total_s'] / 60:.1f} min, measured {measured / 60:.1f} min "
          f"(fp32 base {runs[0]['timings_s']['total_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
