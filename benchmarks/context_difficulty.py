"""How hard the trivia contexts are: the sample's random distractor films against the films most like the question.

HotpotQA's distractor setting puts the two supporting paragraphs among eight that share the question's words
(bigram TF-IDF); the embedded sample puts a film's passages beside zero to three random films of its side. For each
distractor setting (the sample's, and ``--similar`` films most like the question, ``TriviaConfig.similar_distractors``)
and each number of chunks fed (``--top-k``), this measures in the reader's tokens:

- fed-context recall (the evidence is in the chunks fed) on the training and the validation questions, and on the
  HotpotQA film questions for reference (only measured: nothing is chosen with them);
- the validation EM / F1 of the off-the-shelf reader (``--model``, default Qwen2.5-Coder-1.5B-Instruct) reading those
  contexts zero-shot, and the paired difference between the largest and the smallest ``--top-k`` on the same
  questions (bootstrap 95% interval).

Retrieval and the reader's settings come from main.ipynb's run (``runs/<run>/config.json``). Writes
results/trivia_contexts.json. About 10 minutes per setting and k on 2 cores without native bf16.

    python benchmarks/context_difficulty.py [--similar 3] [--top-k 6 10] [--model qwen2.5-coder-1.5b]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> None:
    import torch

    from cinephile import embedding, io, models
    from cinephile.trivia import chunking, data, evaluate, pipeline, retrieval, zero_shot
    from cinephile.trivia.config import TriviaConfig, with_reader

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "runs" / "trivia"), help="run folder of main.ipynb")
    parser.add_argument("--model", default="qwen2.5-coder-1.5b", help="the off-the-shelf reader")
    parser.add_argument("--similar", type=int, default=3, help="distractor films most like the question")
    parser.add_argument("--top-k", type=int, nargs="+", default=[6, 10], help="chunks fed")
    parser.add_argument("--max-questions", type=int, default=None, help="a quick check: only the first N questions")
    parser.add_argument("--external", default=str(ROOT.parent / "shared" / "data" / "movie_qa" /
                                                  "hotpotqa_movie_dev.csv"))
    parser.add_argument("--out", default=str(ROOT / "results" / "trivia_contexts.json"))
    args = parser.parse_args(argv)

    saved = TriviaConfig.load(Path(args.run) / "config.json")
    cfg = with_reader(saved, args.model, max_questions=args.max_questions)
    t0 = time.time()
    embed_fn = embedding.cached_embedder(embedding.sentence_transformer_embedder(models.load_retriever()))
    model, tokenizer = models.load_base_model(cfg.model_name, dtype=cfg.base_dtype(),
                                              device=models.pick_device(cfg.device))
    external_recall = {}  # k -> HotpotQA fed-context recall (the same for every distractor setting)
    if args.external:
        external = data.load_qa_csv(args.external)[0]
        chunked = chunking.chunk_records([r for r in external if r], tokenizer, cfg.chunk_tokens)
        external_recall = {k: _mean(r["context_recall"] for r in retrieval.with_gold_context(retrieval.retrieve(
            chunked, embed_fn, k=k, lexical_weight=cfg.lexical_weight))) for k in args.top_k}
    display = zero_shot.display_name(cfg.model_name)
    settings = {"the sample's (random films)": None, f"{args.similar} films most like the question": args.similar}
    rows, lines = [], []
    for label, similar in settings.items():
        split = pipeline.load_and_split(dataclasses.replace(cfg, similar_distractors=similar))
        for k in args.top_k:
            t1 = time.time()
            run = dataclasses.replace(cfg, similar_distractors=similar, top_k=k)
            retrieved = pipeline.chunk_and_retrieve(run, split, tokenizer, embed_fn, compare=False)
            table, mine = zero_shot.evaluate_zero_shot(model, tokenizer, retrieved.val, cfg.model_name,
                                                       context_keys=["retrieved_context"], bf16=bool(cfg.bf16))
            name = f"{display}, {label}, {k} chunks"
            mine = [{**x, "row": name} for x in mine]
            lines += mine
            recall = {"training": _mean(r["context_recall"] for r in retrieved.train),
                      "validation": _mean(r["context_recall"] for r in retrieved.val)}
            if k in external_recall:
                recall["external"] = external_recall[k]
            by_kind = evaluate.em_by_kind(mine, retrieved.val).iloc[0].to_dict()
            rows.append({"row": name, "distractors": label, "similar_distractors": similar, "top_k": k,
                         "chunk_tokens": cfg.chunk_tokens, "recall": recall,
                         "validation_tokens": _mean(len(tokenizer(r["retrieved_context"])["input_ids"])
                                                    for r in retrieved.val),
                         "validation": {**{c: float(table.iloc[0][c]) for c in ("em", "f1")},
                                        "n": int(table.iloc[0]["n"]), "em_by_kind": by_kind},
                         "seconds": time.time() - t1})
            print(f"{name}: recall {recall}, validation EM {rows[-1]['validation']['em']:.1f} "
                  f"F1 {rows[-1]['validation']['f1']:.1f} ({rows[-1]['seconds'] / 60:.1f} min)", flush=True)
    lo, hi = min(args.top_k), max(args.top_k)
    paired = {}
    for label in settings:
        if lo != hi:
            a, b = (f"{display}, {label}, {n} chunks" for n in (hi, lo))
            paired[label] = {key: evaluate.paired_difference(lines, a, b, key=key) for key in ("em", "f1")}
    io.write_jsonl(ROOT / "runs" / "context-difficulty" / "predictions_validation.jsonl", lines)
    io.save_json(args.out, {"model": cfg.model_name, "bf16": cfg.bf16, "lexical_weight": cfg.lexical_weight,
                            "rows": rows, "paired_most_vs_fewest_chunks": {"more": hi, "fewer": lo, **paired},
                            "torch_threads": torch.get_num_threads(), "seconds": time.time() - t0})
    print(f"wrote {args.out}", flush=True)


def _mean(values) -> float:
    return float(statistics.mean(values))


if __name__ == "__main__":
    main()
