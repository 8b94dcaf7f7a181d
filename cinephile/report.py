"""Markdown tables rendered from the committed ``results/*.json`` files, for the README.

The README's result tables are pasted from ``python -m cinephile.report`` and a test checks that
each rendered table appears in the README verbatim, so a figure there can never be typed by hand.
The trivia and rating tables live beside their wings (``cinephile.trivia.tables``,
``cinephile.ratings.tables``); this module holds the benchmarks' tables and names the renderer and the
writer of every results file.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from cinephile.io import read_json
from cinephile.markdown import num, table
from cinephile.ratings.tables import (large_run_table, rating_speed_table, ratings_tables, study_table,
                                      variants_table)
from cinephile.trivia.tables import contexts_table, instruct_reader_table, trivia_ablation_table, trivia_tables

RESULTS = Path(__file__).resolve().parents[1] / "results"


def index_table(record: dict) -> str:
    """``results/bench_index.json``: numpy exact vs FAISS flat vs FAISS IVF."""
    return table(["backend", "build", "memory added", "query latency (1 query, k=10)", "batch throughput",
                  "recall@10 vs exact"],
                 [[r["backend"], f"{r['build_s']:.1f} s", f"{r['memory_added_mb']:.0f} MB",
                   f"{r['query_ms_median']:.2f} ms", f"{r['batch_queries_per_s']:.0f} queries/s",
                   num(r["recall_at_10"])] for r in record["rows"]])


def trainer_table(record: dict) -> str:
    """``results/bench_trainer.json``: our train() vs transformers.Trainer + PEFT."""
    names = {"ours": "ours (`cinephile.train.train`, `lora`)", "trainer": "transformers.Trainer + PEFT"}
    rows = [[names[k], f"{r['wall_s']:.1f} s", f"{r['tokens_per_s']:.0f}", f"{r['peak_rss_mb']:.0f} MB",
             f"{r['val_loss']:.4f}"] for k, r in record["results"].items()]
    ratios = record["ratios"]
    rows.append(["ratio ours / Trainer", "", f"**{ratios['tokens_per_s_ours_over_trainer']:.2f}x**",
                 f"{ratios['peak_rss_ours_over_trainer']:.2f}x",
                 f"{100 * ratios['val_loss_relative_difference']:+.2f}%"])
    best = record.get("best_settings")
    if best and best.get("trainer_bf16_autocast"):
        r = best["trainer_bf16_autocast"]
        rows.append(["transformers.Trainer + PEFT, `bf16=True` (CPU autocast)", f"{r['wall_s']:.1f} s",
                     f"{r['tokens_per_s']:.0f}", f"{r['peak_rss_mb']:.0f} MB", f"{r['val_loss']:.4f}"])
    main = table(["training run", "wall time", "non-pad tokens/s", "peak RSS", "validation loss"], rows)
    if best:
        settings = {"plain": "fp32", "bf16_autocast": "bf16 autocast", "fused_adamw": "fused AdamW", "compile": "compile",
                    "bf16_base": "bf16 base"}
        main += (f"\n\nEach side at its fastest setting whose validation loss stays within "
                 f"{100 * best['tolerance']:.0f}% of its own fp32 run: ours ({settings.get(best['ours'], best['ours'])}) "
                 f"/ Trainer ({settings.get(best['trainer'], best['trainer'])}) = "
                 f"**{best['tokens_per_s_ours_over_trainer']:.2f}x** non-pad tokens/s, validation loss "
                 f"{100 * best['val_loss_relative_difference']:+.2f}%.")
        ours_bf16, trainer_bf16 = record.get("tried", {}).get("bf16_autocast"), best.get("trainer_bf16_autocast")
        if ours_bf16 and trainer_bf16 and "error" not in ours_bf16:
            main += (f" Both under bf16 autocast: **{ours_bf16['tokens_per_s'] / trainer_bf16['tokens_per_s']:.2f}x**, "
                     f"validation loss {100 * (ours_bf16['val_loss'] / trainer_bf16['val_loss'] - 1):+.2f}%.")
    spread = record.get("seed_spread")
    if spread:
        def spread_text(losses: list[float]) -> str:
            return f"{statistics.mean(losses):.4f} ± {statistics.stdev(losses):.4f} ({', '.join(f'{x:.4f}' for x in losses)})"
        main += (f"\n\nValidation loss of the fp32 runs over seeds {', '.join(map(str, spread['seeds']))} (adapter "
                 f"initial values and batch order): ours {spread_text(spread['ours'])}, Trainer "
                 f"{spread_text(spread['trainer'])}; mean difference "
                 f"{100 * (statistics.mean(spread['ours']) / statistics.mean(spread['trainer']) - 1):+.2f}%.")
    if not record.get("tried"):
        return main
    names = {"fused_adamw": "fused AdamW (`fused=True`)", "compile": "`torch.compile` (dynamic shapes, compile time included)",
             "bf16_autocast": "bf16 autocast (CPU with native bf16)",
             "bf16_base": "bf16 autocast, frozen base held in bf16, fp32 adapters"}
    tried = table(["tried on our side", "wall time", "non-pad tokens/s", "speed vs ours as shipped",
                   "validation loss vs ours"],
                  [[names.get(k, k), f"failed: {r['error']}", "", "", ""] if "error" in r else
                   [names.get(k, k), f"{r['wall_s']:.1f} s", f"{r['tokens_per_s']:.0f}", f"{r['speed_over_plain']:.2f}x",
                    f"{100 * r['val_loss_relative_to_plain']:+.2f}%"] for k, r in record["tried"].items()])
    return (main + "\n\n" + tried + f"\n\nPadding in our length-grouped batches: {100 * record['padding_share']:.1f}% of "
            f"the tokens (the most sequence packing could remove); native bf16 on this CPU: "
            f"{'yes' if record['native_bf16'] else 'no'}.")


def lora_speed_table(record: dict) -> str:
    """``results/bench_lora_train_speed.json``: our LoRA vs PEFT, training steps/s, memory, merge, file size."""
    labels = {"smollm2-135m": "SmolLM2-135M", "gpt2-small-random": "GPT-2-small-shaped, random"}
    rows = []
    precisions = {"float32": "fp32", "bf16_autocast": "bf16 autocast"}
    for name, r in record["setups"].items():
        o, p, ratio = r["ours"], r["peft"], r["ratios"]
        model, precision = r.get("model", name), r.get("precision", "float32")
        rows.append([f"{labels.get(model, model)} ({', '.join(r['targets'])}), {precisions.get(precision, precision)}",
                     f"{o['steps_per_s']:.3f}", f"{p['steps_per_s']:.3f}", f"{ratio['steps_per_s_ours_over_peft']:.2f}x",
                     f"{o['peak_rss_mb']:.0f} / {p['peak_rss_mb']:.0f} MB ({ratio['peak_rss_ours_over_peft']:.2f}x)",
                     f"{1000 * o['merge_s']:.0f} / {1000 * p['merge_s']:.0f} ms",
                     f"{o['adapter_bytes'] / 1e6:.1f} MB, {o['adapter_bytes'] / o['lora_params']:.2f} B/param"])
    return table(["model (targets)", "ours steps/s", "PEFT steps/s", "speed ratio", "peak RSS ours / PEFT",
                  "merge ours / PEFT", "adapter file"], rows)


def pipeline_speed_table(record: dict) -> str:
    """``results/bench_pipeline_speed.json``: one epoch and retrieval against the toy recipe."""
    e, r = record["epoch"], record["retrieval"]
    return table(["measurement", "ours", "toy recipe", "ratio"], [
        [f"(a) one training epoch, {e['examples']} trivia examples ({e['mean_tokens']:.0f} tokens on average), "
         f"batch {e['batch']}",
         f"{e['ours_s']:.1f} s measured: dynamic padding, length-grouped batches, loss and LM-head logits on response "
         "tokens only, LoRA q/k/v/o",
         f"{e['toy_s']:.1f} s: every example padded to 1024, loss on every token, LoRA on every `nn.Linear` of the blocks "
         f"({e['toy_step_s']:.1f} s/step over {e['toy_steps_measured']} measured steps x {e['toy_epoch_steps']} steps)",
         f"**{e['speedup']:.1f}x**"],
        [f"(b) retrieval over {r['records']} records",
         f"{r['batched_s']:.1f} s: questions and distinct chunks encoded in 2 batched calls "
         f"({r['texts_encoded_batched']:,} texts)",
         f"{r['per_record_s']:.1f} s: one `encode` call per record, its question and chunks "
         f"({r['texts_encoded_per_record']:,} texts)",
         f"**{r['speedup']:.1f}x**"]])


def span_decoding_table(record: dict) -> str:
    """``results/bench_span_decoding.json``: free vs span-constrained decoding on validation."""
    rows = [[r["row"], f"{r['em']:.1f}", f"{r['f1']:.1f}", str(r["n"])] for r in record["rows"]]
    for key in ("em_diff", "f1_diff"):
        d = record[key]
        rows.append([f"difference ({key[:2].upper()}), paired bootstrap 95% interval", "", "",
                     f"{d['diff']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}]"])
    return table(["decoding (film-disjoint validation)", "EM", "F1", "n"], rows)


def attention_table(record: dict) -> str:
    """``results/bench_attention.json``: eager vs SDPA attention, one training step and one generation batch."""
    med, speed = record["median_s"], record["speedup_eager_vs_sdpa"]
    rows = [[kernel, f"{med[kernel]['train_step_s']:.2f} s", f"{med[kernel]['generate_s']:.2f} s"]
            for kernel in ("sdpa", "eager")]
    rows.append(["speed-up eager / SDPA", f"**{speed['train_step_s']:.2f}x**", f"**{speed['generate_s']:.2f}x**"])
    return table([f"attention ({record['model']}, batch {record['batch']} x {record['seq_len']} tokens)",
                  "training step", "generate 16 tokens"], rows)


def roofline_table(record: dict) -> str:
    """``results/bench_roofline.json``: each reader's training step and generation against the matmul rate."""
    dtype = "bfloat16" if record["bf16"] else "float32"
    rows = []
    for m in record["models"]:
        top = ", ".join(f"{k} {v:.0%}" for k, v in list(m["profile_share"].items())[:4])
        rows.append([m["model"], f"{m['flops']['train_step'] / 1e12:.2f} TFLOP", f"{m['step_s']:.2f} s",
                     f"{m['train_gflops']:.0f} / {m['matmul_gflops_at_model_shapes'][dtype]:.0f}",
                     f"**{m['train_share_of_matmul_rate']:.0%}**", f"{m['generate_share_of_matmul_rate']:.0%}",
                     f"{m['generate_s']:.2f} s" + (f" ({m['generate_without_head_fix_s']:.2f} s)"
                                                   if "generate_without_head_fix_s" in m else ""), top])
    return table([f"reader (batch {record['batch']} x {record['seq_len']} tokens, {dtype})", "matmul work per step",
                  "step", "GFLOP/s: step / plain matmul", "share of the matmul rate", "generation's share",
                  f"generation, {record['new_tokens']} tokens (without the contiguous head input)",
                  "step profile (self time)"], rows)


def notebook_wall_table(record: dict) -> str:
    """``results/bench_notebook_wall.json``: main.ipynb's stages with an fp32 and a bf16 base, and the prediction."""
    (old, new), predicted = record["runs"], record["predicted_s"]
    stages = list(old["timings_s"])
    rows = [[k.removesuffix("_s").replace("_", " "), f"{old['timings_s'][k] / 60:.2f}", f"{predicted[k] / 60:.2f}",
             f"{new['timings_s'][k] / 60:.2f}", f"{new['timings_s'][k] / old['timings_s'][k]:.2f}x"] for k in stages]
    rows[-1] = [f"**{c}**" for c in rows[-1]]
    return table(["main.ipynb stage (minutes)", old["label"], "predicted from the roofline", new["label"],
                  "measured ratio"], rows)


def lora_layers_table(record: dict) -> str:
    """``results/bench_lora_layers.json``: a reader's training step with adapters on every block or the top ones."""
    rows = [[label, f"{s['layers'][0]}-{s['layers'][1] - 1}", f"{s['lora_params'] / 1e6:.2f} M",
             f"{s['step_s']:.1f} s", f"**{s['speedup_vs_every_block']:.2f}x**",
             f"{s['peak_rss_mb'] / 1024:.1f} GiB ({s['rss_vs_every_block']:.2f}x)"]
            for label, s in record["settings"].items()]
    precision = "bf16 base, bf16 autocast" if record["bf16"] else "fp32"
    return table([f"adapters on ({record['model']}, batch {record['batch']} x {record['seq_len']} tokens, {precision}, "
                  f"{record['cores']} cores)", "blocks", "adapter parameters", "training step", "speed-up",
                  "peak RSS"], rows)


RENDERERS = {"trivia.json": trivia_tables, "trivia_ablation.json": trivia_ablation_table,
             "bench_attention.json": attention_table, "bench_span_decoding.json": span_decoding_table,
             "ratings.json": ratings_tables, "ratings_variants.json": variants_table, "bench_index.json": index_table,
             "bench_trainer.json": trainer_table, "bench_lora_train_speed.json": lora_speed_table,
             "bench_pipeline_speed.json": pipeline_speed_table, "bench_roofline.json": roofline_table,
             "trivia_instruct.json": instruct_reader_table, "ratings_study.json": study_table,
             "bench_notebook_wall.json": notebook_wall_table, "bench_rating_speed.json": rating_speed_table,
             "ratings_large.json": large_run_table, "trivia_contexts.json": contexts_table,
             "bench_lora_layers.json": lora_layers_table}


WRITERS = {"trivia.json": "main.ipynb", "trivia_ablation.json": "benchmarks/trivia_ablation.py",
           "bench_attention.json": "benchmarks/attention_speed.py",
           "bench_span_decoding.json": "benchmarks/span_decoding.py",
           "ratings.json": "llm.ipynb", "ratings_variants.json": "python -m cinephile.ratings.sweeps --variants",
           "bench_index.json": "benchmarks/index_scale.py", "bench_trainer.json": "benchmarks/trainer_vs_ours.py",
           "bench_lora_train_speed.json": "benchmarks/lora_train_speed.py",
           "bench_pipeline_speed.json": "benchmarks/pipeline_speed.py",
           "bench_roofline.json": "benchmarks/roofline.py",
           "trivia_instruct.json": "benchmarks/instruct_reader.py",
           "ratings_study.json": "python -m cinephile.ratings.sweeps",
           "bench_notebook_wall.json": "benchmarks/notebook_wall.py",
           "bench_rating_speed.json": "benchmarks/rating_speed.py",
           "ratings_large.json": "benchmarks/rating_large.py",
           "trivia_contexts.json": "benchmarks/context_difficulty.py",
           "bench_lora_layers.json": "benchmarks/lora_layers_speed.py"}  # what writes each results file


def render_all(folder: Path = RESULTS) -> dict[str, str]:
    """Every table whose results file exists: file name -> markdown.

    A file that lacks a key its table needs (or holds a value of the wrong kind) raises a ValueError
    naming the file, the key and what writes the file.
    """
    tables = {}
    for name, render in RENDERERS.items():
        path = folder / name
        if not path.is_file():
            continue
        record = read_json(path)
        try:
            tables[name] = render(record)
        except KeyError as err:
            raise ValueError(f"{path} has no key {err.args[0]!r}, which its table needs; regenerate the file "
                             f"with {WRITERS[name]}") from None
        except (TypeError, ValueError, AttributeError, IndexError) as err:
            raise ValueError(f"{path} holds a value its table cannot show ({type(err).__name__}: {err}); "
                             f"regenerate the file with {WRITERS[name]}") from None
    return tables


if __name__ == "__main__":
    for name, text in render_all().items():
        print(f"<!-- results/{name} -->\n{text}\n")
