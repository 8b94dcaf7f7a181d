"""How close a LoRA training step and a generation batch come to this CPU's matmul rate (a roofline).

Side by side in one run: the plain ``torch.matmul`` rate in fp32 and bf16 at each model's shapes, then
for each installed reader the matmul FLOPs of one training step and one generation batch counted from
the model's shapes, their measured times (generation: ``model.generate``, greedy, exactly 16 new tokens
per prompt), and the share of the bf16 matmul rate they reach. A ``torch.profiler`` trace of one
training step splits its time into matmuls, attention, dtype casts, norms, elementwise work, the
optimizer and the rest, per operator. Writes results/bench_roofline.json.

The training step is the notebook's: LoRA r=16 on q/k/v/o, batch 8 x 300 tokens, the loss on the last
8 tokens of each row (logits only there), bf16 autocast where the CPU has native bf16, AdamW on the
adapters. FLOPs counted per token: 4 x (in x out) for every frozen linear layer (forward, and backward
to the activations: frozen weights need no gradient), 6 x r x (in + out) for each adapter (its weights
do), 12 x T x (attention width) per layer for the attention scores and values, and the LM head on the
loss positions only.

The frozen base is measured in fp32 (autocast casts its weights to bf16 in every step) and, with native
bf16, held in bf16 with fp32 adapters (``lora.layer.adapter_dtype``), side by side.

    python benchmarks/roofline.py                       # SmolLM2-135M and Gemma 3 270M, 5 repeats
    python benchmarks/roofline.py --models gemma3-270m qwen2.5-coder-0.5b --repeats 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from cinephile import models  # noqa: E402
from cinephile.generate import contiguous_head_input  # noqa: E402
from cinephile.io import save_json  # noqa: E402
from lora import adapter_parameters, inject_lora, lora_layers  # noqa: E402

from benchmarks.synthetic import BATCH, LABELS, SEQ, random_batch, train_step  # noqa: E402

NEW_TOKENS = 16
CATEGORIES = [  # (category, substrings of aten operator names), first match wins
    ("loss / embedding", ("log_softmax", "cross_entropy", "nll_loss", "embedding", "index", "gather", "scatter")),
    ("matmul", ("aten::mm", "matmul", "linear", "addmm", "bmm", "baddbmm")),
    ("attention", ("attention", "softmax", "sdpa", "flash")),
    ("dtype casts", ("to_copy", "aten::to", "copy_", "type_as")),
    ("norms", ("norm", "rsqrt", "pow", "mean", "var")),
    ("optimizer", ("adam", "foreach", "lerp", "addcdiv", "addcmul", "sqrt")),
    ("elementwise", ("mul", "add", "sub", "div", "silu", "gelu", "tanh", "neg", "cat", "where", "masked",
                     "fill", "clone", "contiguous", "cos", "sin", "exp", "sum", "zero")),
]


def matmul_rate(m: int, k: int, n: int, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """GFLOP/s of ``(m, k) @ (k, n)`` in ``dtype``, the median of repeated timed calls."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * m * k * n / statistics.median(times) / 1e9


def linear_shapes(model: nn.Module) -> tuple[list[tuple[int, int]], list[tuple[int, int, int]]]:
    """(in, out) of every frozen linear layer below the LM head, and (in, out, r) of every adapter."""
    head = model.get_output_embeddings()
    frozen = [(m.in_features, m.out_features) for m in model.modules()
              if isinstance(m, nn.Linear) and m is not head
              and not any(p.requires_grad for p in m.parameters())]  # LoRA's A / B layers count as adapters
    adapters = [(layer.base.in_features, layer.base.out_features, layer.r) for _, layer in lora_layers(model)]
    return frozen, adapters


def step_flops(model: nn.Module) -> dict[str, float]:
    """Matmul FLOPs of one training step and one generation batch, counted from the model's shapes."""
    cfg = model.config
    frozen, adapters = linear_shapes(model)
    per_token_fwd = sum(2 * i * o for i, o in frozen)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    width = cfg.num_attention_heads * head_dim
    layers, hidden = cfg.num_hidden_layers, cfg.hidden_size
    vocab = model.get_output_embeddings().out_features
    tokens = BATCH * SEQ
    train = (2 * per_token_fwd * tokens  # frozen layers: forward + backward to the activations
             + sum(6 * r * (i + o) for i, o, r in adapters) * tokens
             + 12 * BATCH * SEQ * SEQ * width * layers  # QK^T and AV, forward and backward
             + 4 * vocab * hidden * BATCH * LABELS)  # LM head on the loss positions
    prompt = SEQ
    generate = BATCH * (per_token_fwd * (prompt + NEW_TOKENS)
                        + 4 * width * layers * (prompt * prompt / 2 + NEW_TOKENS * (prompt + NEW_TOKENS / 2))
                        + 2 * vocab * hidden * NEW_TOKENS)
    return {"train_step": float(train), "generate": float(generate),
            "linear_params_non_embedding": float(sum(i * o for i, o in frozen))}


def categorize(name: str) -> str:
    low = name.lower()
    for category, keys in CATEGORIES:
        if any(k in low for k in keys):
            return category
    return "other"


def measure(name: str, repeats: int, bf16: bool, frozen: str = "float32") -> dict:
    model, tok = models.load_base_model(name, dtype=getattr(torch, frozen))
    torch.manual_seed(0)
    inject_lora(model, models.lora_preset(name, r=16, alpha=32, dropout=0.0))
    params = adapter_parameters(model)
    opt = torch.optim.AdamW(params, lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    vocab = len(tok)
    batch = random_batch(tok.pad_token_id, vocab - 1, gen, low=1000)
    prompt_ids = torch.randint(1000, vocab - 1, (BATCH, SEQ), generator=gen)

    def step():
        train_step(model, batch, bf16, opt)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def generate(head_fix: bool = True):  # exactly NEW_TOKENS greedy tokens for each of BATCH prompts of SEQ tokens
        model.eval()
        fix = contiguous_head_input(model) if head_fix else contextlib.nullcontext()
        with torch.no_grad(), models.autocast(torch.device("cpu"), bf16), fix:
            model.generate(input_ids=prompt_ids, attention_mask=torch.ones_like(prompt_ids), do_sample=False,
                           min_new_tokens=NEW_TOKENS, max_new_tokens=NEW_TOKENS, pad_token_id=tok.pad_token_id)

    step()  # warm-up: first calls allocate and pick kernels
    step_s = statistics.median(timed(step) for _ in range(repeats))
    generate()
    gen_s = statistics.median(timed(generate) for _ in range(max(2, repeats // 2)))
    # as generate_answers ran before it handed the LM head a contiguous input (cinephile.generate)
    gen_plain_s = statistics.median(timed(lambda: generate(head_fix=False)) for _ in range(max(2, repeats // 2)))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    ops = [(e.key, e.self_cpu_time_total / 1e6) for e in prof.key_averages()]
    total = sum(s for _, s in ops)
    by_cat: dict[str, float] = {}
    for key, s in ops:
        by_cat[categorize(key)] = by_cat.get(categorize(key), 0.0) + s
    cfg = model.config
    shapes = sorted({(cfg.hidden_size, cfg.hidden_size), (cfg.hidden_size, cfg.intermediate_size)})
    return {"model": name if frozen == "float32" else f"{name} ({frozen} base)", "frozen_dtype": frozen,
            "step_s": step_s, "generate_s": gen_s, "generate_without_head_fix_s": gen_plain_s, "flops": step_flops(model),
            "shapes": [list(s) for s in shapes],
            "profile_share": {k: v / total for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])},
            "profile_top_ops": [{"op": k, "self_s": s, "share": s / total}
                                for k, s in sorted(ops, key=lambda kv: -kv[1])[:15]],
            "profile_total_s": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frozen", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"],
                    help="dtypes of the frozen base measured side by side (bfloat16: only with native bf16)")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_roofline.json"))
    args = ap.parse_args()
    bf16 = models.native_bf16()
    frozen = [d for d in args.frozen if bf16 or d == "float32"]
    rows = [measure(name, args.repeats, bf16, dtype) for name in args.models for dtype in frozen]
    shapes = sorted({tuple(s) for row in rows for s in row["shapes"]} | {(640, 1280), (2048, 2048)})
    rates = {dtype: {f"2400x{k}@{k}x{n}": matmul_rate(2400, k, n, getattr(torch, dtype)) for k, n in shapes}
             for dtype in ("float32", "bfloat16")}
    for row in rows:
        keys = [f"2400x{k}@{k}x{n}" for k, n in row["shapes"]]
        peak = {dtype: statistics.mean(rates[dtype][k] for k in keys) for dtype in rates}
        rate_key = "bfloat16" if bf16 else "float32"
        row["matmul_gflops_at_model_shapes"] = peak
        row["train_gflops"] = row["flops"]["train_step"] / row["step_s"] / 1e9
        row["generate_gflops"] = row["flops"]["generate"] / row["generate_s"] / 1e9
        row["train_share_of_matmul_rate"] = row["train_gflops"] / peak[rate_key]
        row["generate_share_of_matmul_rate"] = row["generate_gflops"] / peak[rate_key]
    result = {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "bf16": bf16,
              "batch": BATCH, "seq_len": SEQ, "loss_positions": LABELS, "new_tokens": NEW_TOKENS,
              "repeats": args.repeats, "matmul_gflops": rates, "models": rows}
    save_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "models"}, indent=1))
    for row in rows:
        print(f"{row['model']}: step {row['step_s']:.2f} s = {row['train_gflops']:.0f} GFLOP/s "
              f"({row['train_share_of_matmul_rate']:.0%} of the matmul rate); generate {row['generate_s']:.2f} s "
              f"({row['generate_share_of_matmul_rate']:.0%}); profile: "
              + ", ".join(f"{k} {v:.0%}" for k, v in row["profile_share"].items()))


if __name__ == "__main__":
    main()
