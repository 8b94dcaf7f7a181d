"""Our LoRA vs PEFT's, side by side in one run: training steps/s, peak RSS, merge time, adapter size.

Same model, batch, targets, rank and precision for both (fp32, and bf16 autocast where the CPU has native
bf16); every measurement runs in its own subprocess (so peak RSS is that run's alone), ours and PEFT
interleaved so machine noise hits both alike. Writes results/bench_lora_train_speed.json (medians, ratios,
the machine's core count).

    python benchmarks/lora_train_speed.py            # SmolLM2-135M and a GPT-2-small-shaped model
    python benchmarks/lora_train_speed.py --quick    # fewer steps, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETUPS = {  # name -> (targets, batch, seq_len)
    "smollm2-135m": (["q_proj", "k_proj", "v_proj", "o_proj"], 8, 256),
    "gpt2-small-random": (["c_attn", "c_proj", "c_fc"], 8, 256),
}


def build_model(name: str):
    import torch
    if name == "smollm2-135m":
        from cinephile.models import load_base_model
        return load_base_model(name)[0]
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config()).eval()  # gpt2-small shapes: 12 layers, 768 wide, 124M params


def worker(impl: str, name: str, steps: int, warmup: int, precision: str = "float32") -> dict:
    import torch
    targets, batch, seq = SETUPS[name]
    model = build_model(name)
    if impl == "ours":
        from lora import LoRAConfig, adapter_parameters, inject_lora, merge_lora, save_adapter
        inject_lora(model, LoRAConfig(r=16, alpha=32, target_modules=tuple(targets)))
        params = adapter_parameters(model)
    else:
        import peft
        model = peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                           target_modules=targets, fan_in_fan_out=name.startswith("gpt2")))
        params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    torch.manual_seed(1)
    x = torch.randint(0, 32000, (batch, seq))
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16_autocast"):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    steps_per_s = steps / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    merge_lora(model) if impl == "ours" else model.merge_adapter()
    merge_s = time.perf_counter() - t0
    if impl == "peft":
        model.unmerge_adapter()
    with tempfile.TemporaryDirectory() as d:
        save_adapter(model, d) if impl == "ours" else model.save_pretrained(d)
        size = (Path(d) / "adapter_model.safetensors").stat().st_size
    n_params = sum(p.numel() for p in params)
    return {"steps_per_s": steps_per_s, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "merge_s": merge_s, "adapter_bytes": size, "lora_params": n_params}


def run(impl: str, name: str, steps: int, warmup: int, precision: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", impl, name, str(steps), str(warmup), precision],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 timed steps, 1 repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_lora_train_speed.json"))
    args = ap.parse_args()
    if args.worker:
        impl, name, steps, warmup, precision = args.worker
        print(json.dumps(worker(impl, name, int(steps), int(warmup), precision)))
        return
    from cinephile.models import native_bf16
    steps, repeats = (2, 1) if args.quick else (5, args.repeats)
    precisions = ["float32"] + (["bf16_autocast"] if native_bf16() else [])
    print(f"torch threads: default | timed steps per run: {steps} after 1 warm-up | repeats: {repeats}")
    header = f"{'model':<20}{'impl':<6}{'steps/s':>9}{'peak RSS MB':>13}{'merge ms':>10}{'adapter KB':>12}{'B/param':>9}"
    print(header)
    record = {"benchmark": "lora_train_speed", "cores": os.cpu_count(), "timed_steps": steps, "warmup_steps": 1,
              "repeats": repeats, "peft_version": _peft_version(), "setups": {}}
    for name in SETUPS:
        for precision in precisions:
            res = {"ours": [], "peft": []}
            for _ in range(repeats):
                for impl in ("ours", "peft"):
                    res[impl].append(run(impl, name, steps, 1, precision))
            summary = {}
            for impl, runs in res.items():
                s = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                summary[impl] = s
                print(f"{name:<20}{impl:<6}{s['steps_per_s']:>9.3f}{s['peak_rss_mb']:>13.0f}{1000 * s['merge_s']:>10.1f}"
                      f"{s['adapter_bytes'] / 1024:>12.0f}{s['adapter_bytes'] / s['lora_params']:>9.2f}  {precision}")
            o, p = summary["ours"], summary["peft"]
            ratios = {"steps_per_s_ours_over_peft": round(o["steps_per_s"] / p["steps_per_s"], 3),
                      "peak_rss_ours_over_peft": round(o["peak_rss_mb"] / p["peak_rss_mb"], 3),
                      "merge_time_ours_over_peft": round(o["merge_s"] / p["merge_s"], 3)}
            print(f"{name:<20}ratio ours/peft ({precision}): speed {ratios['steps_per_s_ours_over_peft']:.3f}x, "
                  f"peak RSS {ratios['peak_rss_ours_over_peft']:.3f}x, merge time {ratios['merge_time_ours_over_peft']:.2f}x")
            targets, batch, seq = SETUPS[name]
            record["setups"][f"{name} {precision}"] = {"model": name, "precision": precision, "targets": targets,
                                                       "batch": batch, "seq_len": seq, "rank": 16, **summary,
                                                       "ratios": ratios}
    if not args.quick:
        from cinephile.io import save_json
        save_json(args.out, record)
        print(f"wrote {args.out}")


def _peft_version() -> str:
    import peft
    return peft.__version__


if __name__ == "__main__":
    main()
