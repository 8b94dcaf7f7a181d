"""Pipeline speed, side by side in one run, on the bundled SmolLM2 and MiniLM with the embedded sample.

(a) One epoch over the same 256 trivia examples:
    ours: dynamic padding, length-grouped batches, loss (and LM-head logits) on response tokens only,
          LoRA on q/k/v/o;
    toy recipe: every example padded to 1024 tokens, loss on every token, LoRA on every nn.Linear of the
          blocks (the LM head is tied to the embedding, which our injector refuses to adapt).
    The toy epoch is long, so it is timed over ``--toy-steps`` optimizer steps and scaled to the epoch.
(b) Retrieval over the same records: batched encoding of questions and distinct chunks vs one
    ``encode`` call per record (its question and its chunks).

Writes results/bench_pipeline_speed.json (the figures printed, the ratios, the machine's core count).

    python benchmarks/pipeline_speed.py [--examples 256] [--toy-steps 2]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cinephile import embedding, models  # noqa: E402
from cinephile.trivia import chunking, data, reader, retrieval  # noqa: E402
from cinephile.batching import batches, tokenize_example  # noqa: E402
from cinephile.train import response_loss  # noqa: E402
from lora import LoRAConfig, adapter_parameters, inject_lora  # noqa: E402


def epoch_ours(examples, batch_size: int) -> float:
    model, tok = models.load_base_model()
    inject_lora(model, LoRAConfig.llama(r=16, alpha=32))
    items = [tokenize_example(tok, e["prompt"], e["response"], 1024) for e in examples]
    opt = torch.optim.AdamW(adapter_parameters(model), lr=1e-4)
    model.train()
    t0 = time.perf_counter()
    for batch in batches(items, batch_size, tok.pad_token_id, shuffle=True):
        response_loss(model, batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def epoch_toy(examples, batch_size: int, steps: int, micro: int) -> tuple[float, float]:
    """Returns (seconds per step, scaled epoch seconds).

    A step of 8 x 1024 tokens with full-vocabulary logits and eager attention needs more than 24 GB,
    so the toy step runs as micro-batches of ``micro`` examples with gradient accumulation.
    """
    model, tok = models.load_base_model()
    inject_lora(model, LoRAConfig(r=16, alpha=32, target_modules=r".*proj"))  # every nn.Linear of the blocks (lm_head is tied)
    texts = [e["prompt"] + e["response"] + tok.eos_token for e in examples]
    opt = torch.optim.AdamW(adapter_parameters(model), lr=1e-4)
    model.train()
    times = []
    for s in range(steps + 1):  # the first step is a warm-up
        enc = tok(texts[s * batch_size:(s + 1) * batch_size], padding="max_length", max_length=1024,
                  truncation=True, return_tensors="pt", add_special_tokens=False)
        t0 = time.perf_counter()
        for m in range(0, batch_size, micro):
            ids, mask = enc["input_ids"][m:m + micro], enc["attention_mask"][m:m + micro]
            (model(input_ids=ids, attention_mask=mask, labels=ids).loss * micro / batch_size).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    per_step = float(np.median(times[1:]))
    return per_step, per_step * math.ceil(len(examples) / batch_size)


def retrieval_speed(chunked, embedder) -> tuple[float, float]:
    """Seconds for batched retrieval and for one encode call per record."""
    embed_fn = embedding.sentence_transformer_embedder(embedder, batch_size=64)
    t0 = time.perf_counter()
    retrieval.retrieve(chunked, embed_fn, k=1)
    batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    for r in chunked:  # the per-record recipe: one encode call with the question and its chunks
        emb = embedder.encode([r["question"]] + r["chunks"], normalize_embeddings=True)
        int(np.argmax(emb[1:] @ emb[0]))
    return batched, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--toy-steps", type=int, default=2)
    ap.add_argument("--toy-micro-batch", type=int, default=2, help="toy micro-batch (8 x 1024 at once needs > 24 GB)")
    ap.add_argument("--csv", default=str(ROOT / "Data" / "movie_trivia_qa.csv"))
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_pipeline_speed.json"))
    args = ap.parse_args()

    records, _ = data.load_qa_csv(args.csv)
    _, tok = models.load_base_model()
    chunked = chunking.chunk_records(records, tok, 192)
    embedder = models.load_retriever()
    batched_s, per_record_s = retrieval_speed(chunked, embedder)
    retrieved = retrieval.retrieve(chunked, embedding.sentence_transformer_embedder(embedder), k=1)
    examples = reader.trivia_examples(retrieved[: args.examples], tok, "chat")
    n_tokens = [len(tokenize_example(tok, e["prompt"], e["response"], 1024)["input_ids"]) for e in examples]
    print(f"{len(examples)} examples, {np.mean(n_tokens):.0f} tokens on average (max {max(n_tokens)})")

    print(f"(b) retrieval over {len(chunked)} records:")
    print(f"    batched (distinct chunks, 2 encode calls): {batched_s:6.2f} s | one encode call per record: "
          f"{per_record_s:6.2f} s | speed-up: {per_record_s / batched_s:.1f}x", flush=True)
    ours_s = epoch_ours(examples, args.batch_size)
    print(f"(a) ours: one epoch in {ours_s:.1f} s", flush=True)
    toy_step_s, toy_s = epoch_toy(examples, args.batch_size, args.toy_steps, args.toy_micro_batch)
    print(f"(a) one epoch, {len(examples)} examples, batch {args.batch_size}:")
    print(f"    ours (dynamic padding, response-only loss, LoRA q/k/v/o): {ours_s:8.1f} s (measured)")
    print(f"    toy (pad to 1024, loss on all tokens, LoRA on every Linear of the blocks): {toy_s:8.1f} s "
          f"({toy_step_s:.1f} s/step in micro-batches of {args.toy_micro_batch}, measured over {args.toy_steps} steps, x {math.ceil(len(examples) / args.batch_size)} steps)")
    print(f"    speed-up: {toy_s / ours_s:.1f}x")
    texts_per_record = sum(1 + len(r["chunks"]) for r in chunked)
    texts_batched = len(chunked) + len({c for r in chunked for c in r["chunks"]})
    from cinephile.io import save_json
    save_json(args.out, {
        "benchmark": "pipeline_speed", "cores": os.cpu_count(),
        "epoch": {"examples": len(examples), "mean_tokens": float(np.mean(n_tokens)), "batch": args.batch_size,
                  "ours_s": ours_s, "toy_s": toy_s, "toy_step_s": toy_step_s, "toy_steps_measured": args.toy_steps,
                  "toy_micro_batch": args.toy_micro_batch, "toy_epoch_steps": math.ceil(len(examples) / args.batch_size),
                  "speedup": round(toy_s / ours_s, 2)},
        "retrieval": {"records": len(chunked), "batched_s": batched_s, "per_record_s": per_record_s,
                      "texts_encoded_batched": texts_batched, "texts_encoded_per_record": texts_per_record,
                      "speedup": round(per_record_s / batched_s, 2)}})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
