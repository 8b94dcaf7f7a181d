"""A LoRA-tuned instruct reader against the same model read off the shelf, on validation and HotpotQA.

Takes the retrieval settings main.ipynb saved (``runs/<run>/config.json``: BM25 weight, chunk size, k, LoRA
rank) and swaps in ``--model`` (default Qwen2.5-Coder-1.5B-Instruct) with the chat prompt, which is the
prompt the off-the-shelf rows read; its frozen base is held in bf16 where the CPU has native bf16. The
contexts are cut with the model's own tokenizer; the tuned reader and, zero-shot, each ``--off-the-shelf``
model read the same retrieved contexts, and the tuned row is paired with the best off-the-shelf row
(chosen on validation) question by question. Training data: ``--max-train`` prompts sampled from the
film-disjoint training side (single-hop, comparison and ``--bridges`` bridge questions), one epoch.
HotpotQA is only scored, never used to choose anything. About 25-35 minutes per configuration on 2 cores
with native bf16; without it the base runs in fp32 and a configuration takes hours (the --keep-read filter
answers 8 prompts in 55-60 s on 2 AVX2 cores, against 6-8 with native bf16; it reads only the non-comparison
prompts, which it may drop). The untuned model's replies (off the shelf and the filter's) are stored in
``--reply-cache`` (runs/replies): a second seed or another recipe on the same contexts reads them back.

Appends (or replaces) the row ``--name`` in results/trivia_instruct.json, with both readers' per-question EM / F1
(so later rows pair with it), and rewrites the file's ablation (``cinephile.trivia.instruct_ablation``: what each
change added on validation, row against row); the per-question answers of both readers go to
runs/instruct-reader/<name>-seed<seed>/predictions_{validation,external}.jsonl. ``--refresh-ablation`` only
rewrites the ablation.

    python benchmarks/instruct_reader.py --name "1.5B, 240 prompts" [--model qwen2.5-coder-1.5b]
        [--max-train 240] [--lr 2e-4] [--bridges 0 0] [--generated 0 0] [--train-kinds generated,comparison]
        [--keep-read] [--answer-format answer|quote] [--shelf-formats answer [quote]] [--top-k 6]
        [--chunk-tokens 48] [--similar-distractors N] [--lora-layers 14 28] [--batch-size 8] [--grad-accum 1] [--seed 0]
        [--reply-cache runs/replies]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> None:
    import dataclasses

    from cinephile import embedding, io, models
    from cinephile.trivia import evaluate, pipeline
    from cinephile.trivia.config import TriviaConfig, with_reader
    from cinephile.trivia.instruct_ablation import compact_scores

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", help="the row's name in the results file")
    parser.add_argument("--run", default=str(ROOT / "runs" / "trivia"), help="run folder of main.ipynb")
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--off-the-shelf", nargs="+", default=None, help="default: --model itself")
    parser.add_argument("--max-train", type=int, default=240, help="training prompts (a seeded sample)")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--epochs", type=int, default=1, help="passes over the training prompts (the adapter of "
                        "the epoch with the lowest validation loss is kept)")
    parser.add_argument("--bridges", type=int, nargs=2, default=(0, 0), metavar=("TRAIN", "VAL"))
    parser.add_argument("--generated", type=int, nargs=2, default=(0, 0), metavar=("TRAIN", "VAL"),
                        help="written questions (Data/generated_questions.jsonl) per side")
    parser.add_argument("--train-kinds", default="", help="train only on these kinds, e.g. generated,comparison "
                        "(default: every kind of the training side)")
    parser.add_argument("--keep-read", action="store_true", help="train only on prompts the untuned model "
                        "already reads (TriviaConfig.keep_read)")
    parser.add_argument("--answer-format", default="answer", choices=("answer", "quote"),
                        help='the tuned reader\'s reply: the answer, or "quote": the evidence, then the answer')
    parser.add_argument("--shelf-formats", nargs="+", default=["answer"], choices=("answer", "quote"),
                        help="the prompts the off-the-shelf model reads (each its own row)")
    parser.add_argument("--top-k", type=int, default=None, help="chunks fed to both readers (default: the run's)")
    parser.add_argument("--chunk-tokens", type=int, default=None, help="chunk size in the model's tokens "
                        "(default: the run's)")
    parser.add_argument("--similar-distractors", type=int, default=None, metavar="N",
                        help="training and validation contexts hold the N films of their side most like the "
                        "question (TriviaConfig.similar_distractors; default: the sample's random ones)")
    parser.add_argument("--lora-layers", type=int, nargs=2, default=None, metavar=("FIRST", "STOP"),
                        help="adapt only blocks FIRST..STOP-1, e.g. 14 28: the top half of the 1.5B model's 28 "
                        "(default: every block); backpropagation stops below FIRST, so a step is cheaper")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per forward pass")
    parser.add_argument("--grad-accum", type=int, default=1, help="forward passes per step (batch 4 x 2 holds "
                        "10 chunks of 48 tokens in 24 GiB; batch 8 x 1 runs out of memory there)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-questions", type=int, default=None, help="a quick check: only the first N questions")
    parser.add_argument("--external-limit", type=int, default=None, help="a quick check: only N HotpotQA questions")
    parser.add_argument("--external", default=str(ROOT.parent / "shared" / "data" / "movie_qa" /
                                                  "hotpotqa_movie_dev.csv"))
    parser.add_argument("--reply-cache", default=str(ROOT / "runs" / "replies"), help="folder of the untuned "
                        "model's stored replies (off the shelf and the keep-read filter), reused by later runs on "
                        "the same prompts; '' generates every reply")
    parser.add_argument("--out", default=str(ROOT / "results" / "trivia_instruct.json"))
    parser.add_argument("--refresh-ablation", action="store_true", help="measure nothing: rewrite the file's "
                        "ablation (instruct_ablation.STEPS) from the rows it holds")
    args = parser.parse_args(argv)
    if args.refresh_ablation:
        save(args.out, io.read_json(args.out)["rows"])
        return
    if not args.name:
        parser.error("--name is required: the row's name in the results file (or pass --refresh-ablation)")

    saved = TriviaConfig.load(Path(args.run) / "config.json")
    cfg = with_reader(
        saved, args.model, prompt_style="chat", epochs=args.epochs, lr=args.lr, max_train_examples=args.max_train,
        bridges=tuple(args.bridges), generated=tuple(args.generated), seed=args.seed, keep_read=args.keep_read,
        answer_format=args.answer_format, top_k=args.top_k or saved.top_k,
        chunk_tokens=args.chunk_tokens or saved.chunk_tokens, batch_size=args.batch_size, grad_accum=args.grad_accum,
        similar_distractors=args.similar_distractors,
        lora_layers=tuple(range(*args.lora_layers)) if args.lora_layers else None,
        external_csv=args.external, external_limit=args.external_limit, max_questions=args.max_questions,
        off_the_shelf=tuple(args.off_the_shelf or [args.model]), reply_cache=args.reply_cache or None)
    t0 = time.time()
    embed_fn = embedding.cached_embedder(embedding.sentence_transformer_embedder(models.load_retriever()))
    split = pipeline.load_and_split(cfg)
    model, tokenizer, _ = pipeline.load_reader(cfg)
    retrieved = pipeline.chunk_and_retrieve(cfg, split, tokenizer, embed_fn, compare=False)
    if args.train_kinds:
        kinds = set(args.train_kinds.split(","))
        retrieved = dataclasses.replace(retrieved, train=[r for r in retrieved.train if r["kind"] in kinds])
    trained = pipeline.train_reader(cfg, model, tokenizer, retrieved)
    print(trained.describe().split("\nlast training example")[0], flush=True)
    rows = [pipeline.TUNED_ROW]
    t1 = time.time()
    validation = pipeline.evaluate_reader(cfg, model, tokenizer, retrieved, rows=rows)
    external = pipeline.evaluate_external(cfg, model, tokenizer, embed_fn, rows=rows)
    eval_s = time.time() - t1
    del model
    gc.collect()
    shelf = pipeline.evaluate_off_the_shelf(cfg, validation, external, context_keys=["retrieved_context"],
                                            formats=args.shelf_formats)
    print(shelf.paired_text(), flush=True)
    tables = {"validation": validation.table, "external": external.table}
    slug = "".join(c if c.isalnum() else "-" for c in args.name.lower()).strip("-")
    for name, ev in (("validation", validation), ("external", external)):
        io.write_jsonl(ROOT / "runs" / "instruct-reader" / f"{slug}-seed{cfg.seed}" / f"predictions_{name}.jsonl",
                       ev.lines + shelf.lines[name])
    steps = trained.history["step"][-1]  # optimizer steps over every epoch, as the trainer counted them
    row = {"name": args.name, "model": cfg.model_name, "frozen_dtype": cfg.frozen_dtype, "bf16": cfg.bf16,
           "chunk_tokens": cfg.chunk_tokens, "top_k": cfg.top_k, "batch": [cfg.batch_size, cfg.grad_accum],
           "similar_distractors": cfg.similar_distractors,
           "lora_layers": None if cfg.lora_layers is None else [min(cfg.lora_layers), max(cfg.lora_layers) + 1],
           "lr": cfg.lr, "epochs": cfg.epochs, "seed": cfg.seed,
           "answer_format": cfg.answer_format, "shelf_formats": list(args.shelf_formats),
           "bridges": list(cfg.bridges), "generated": list(cfg.generated),
           "train_kinds_kept": args.train_kinds or "all", "n_train": len(trained.examples),
           "read_filter": trained.read_filter,
           "train_kinds": {k: sum(1 for r in retrieved.train if r["kind"] == k)
                           for k in dict.fromkeys(r["kind"] for r in retrieved.train)},
           "results": {name: [*t.to_dict("records"), *shelf.tables[name].to_dict("records")]
                       for name, t in tables.items()},
           "validation_em_by_kind": evaluate.em_by_kind(validation.lines + shelf.lines["validation"],
                                                        validation.records).reset_index().to_dict("records"),
           "best_off_the_shelf": shelf.best_row, "paired_tuned_vs_best": shelf.paired,
           "scores": {name: compact_scores(ev.lines + shelf.lines[name])
                      for name, ev in (("validation", validation), ("external", external))},
           "history": {k: v for k, v in trained.history.items() if "loss" in k},
           "seconds": {"training": trained.seconds, "per_step": trained.seconds / steps, "tuned_eval": eval_s,
                       "off_the_shelf": shelf.seconds, "total": time.time() - t0}}
    previous = io.read_json(args.out)["rows"] if Path(args.out).is_file() else []
    save(args.out, [r for r in previous if r["name"] != args.name] + [row])
    print(f"wrote {args.out}: {args.name}", flush=True)


def save(path: str, rows: list[dict]) -> None:
    """The results file: the rows and the ablation read from them (each step whose two rows are present)."""
    from cinephile import io
    from cinephile.trivia.instruct_ablation import ablation

    io.save_json(path, {"rows": rows, "ablation": ablation(rows)})


if __name__ == "__main__":
    main()
