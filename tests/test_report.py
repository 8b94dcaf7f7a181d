"""README tables from results files: a file missing a key or holding a wrong value names itself and its writer."""

import json

import pytest

from cinephile.report import render_all, RENDERERS, WRITERS


def write(folder, name, record):
    (folder / name).write_text(json.dumps(record), encoding="utf-8")


INDEX = {"rows": [{"backend": "numpy exact", "build_s": 1.0, "memory_added_mb": 10.0, "query_ms_median": 0.5,
                   "batch_queries_per_s": 900.0, "recall_at_10": 1.0}]}


def test_every_results_file_has_a_writer():
    assert set(WRITERS) == set(RENDERERS)


def test_render_all_renders_the_files_present(tmp_path):
    write(tmp_path, "bench_index.json", INDEX)
    assert render_all(tmp_path) == {"bench_index.json": RENDERERS["bench_index.json"](INDEX)}
    assert "| numpy exact | 1.0 s | 10 MB | 0.50 ms | 900 queries/s | 1.000 |" in render_all(tmp_path)["bench_index.json"]


@pytest.mark.parametrize("name, record, message", [
    ("ratings.json", {"models": []}, r"ratings\.json has no key 'intervals', which its table needs; regenerate the "
                                     r"file with llm\.ipynb"),
    ("bench_index.json", {"rows": [{k: v for k, v in INDEX["rows"][0].items() if k != "build_s"}]},
     r"bench_index\.json has no key 'build_s'.*with benchmarks/index_scale\.py"),
    ("ratings_variants.json", {}, r"ratings_variants\.json has no key 'rows'.*python -m cinephile\.ratings\.sweeps --variants"),
    ("bench_index.json", {"rows": [{**INDEX["rows"][0], "build_s": "fast"}]},
     r"bench_index\.json holds a value its table cannot show \(ValueError: .+\); regenerate the file with "
     r"benchmarks/index_scale\.py"),
    ("bench_trainer.json", [1, 2], r"bench_trainer\.json holds a value its table cannot show \(TypeError"),
])
def test_render_all_names_the_file_the_key_and_its_writer(tmp_path, name, record, message):
    write(tmp_path, name, record)
    with pytest.raises(ValueError, match=message):
        render_all(tmp_path)


def test_render_all_reports_invalid_json_as_such(tmp_path):
    (tmp_path / "ratings.json").write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match=r"ratings\.json: invalid JSON .* regenerate the file"):
        render_all(tmp_path)


def test_roofline_table_shows_each_reader_against_the_matmul_rate():
    from cinephile.report import roofline_table

    model = {"model": "m", "flops": {"train_step": 1.5e12}, "step_s": 3.0, "train_gflops": 500.0,
             "matmul_gflops_at_model_shapes": {"bfloat16": 1000.0, "float32": 250.0},
             "train_share_of_matmul_rate": 0.5, "generate_share_of_matmul_rate": 0.25, "generate_s": 2.0,
             "generate_without_head_fix_s": 5.25, "profile_share": {"matmul": 0.6, "dtype casts": 0.2, "attention": 0.1, "norms": 0.05, "other": 0.05}}
    lines = roofline_table({"bf16": True, "batch": 8, "seq_len": 300, "new_tokens": 16, "models": [model]}).splitlines()
    assert lines[0].startswith("| reader (batch 8 x 300 tokens, bfloat16) |")
    assert lines[2] == ("| m | 1.50 TFLOP | 3.00 s | 500 / 1000 | **50%** | 25% | 2.00 s (5.25 s) | matmul 60%, "
                        "dtype casts 20%, attention 10%, norms 5% |")
    fp32 = roofline_table({"bf16": False, "batch": 8, "seq_len": 300, "new_tokens": 16,
                           "models": [model]}).splitlines()[2]
    assert "| 500 / 250 |" in fp32


def test_trivia_table_pairs_the_tuned_reader_with_the_best_off_the_shelf_row():
    from cinephile.report import trivia_tables

    interval = lambda d, lo, hi: {"diff": d, "lo": lo, "hi": hi, "n": 53, "beats": lo > 0}  # noqa: E731
    record = {"results": {"external": [{"row": "tuned + retrieved context", "em": 50.0, "f1": 60.0, "n": 53},
                                       {"row": "Q, zero-shot + retrieved context", "em": 41.5, "f1": 56.5, "n": 53}]},
              "paired_em_tuned_vs_base": {"external": interval(20.0, 10.0, 30.0)},
              "off_the_shelf": {"best_row": "Q, zero-shot + retrieved context",
                                "paired_tuned_vs_best": {"external": {"em": interval(-8.5, -15.0, -1.2),
                                                                      "f1": interval(3.5, -2.0, 9.0)}}},
              "retrieval": {"validation_split": {"context_recall": 0.9}}, "settings": {"top_k": 6, "chunk_tokens": 48,
                                                                                       "lexical_weight": 0.75},
              "wall_time_min": 20.0}
    text = trivia_tables(record)
    assert "| HotpotQA film questions (external test) | Q, zero-shot + retrieved context | 41.5 | 56.5 | 53 |" in text
    assert "| -8.5 [-15.0, -1.2] | +3.5 [-2.0, +9.0] | no: behind (EM interval below 0) |" in text
    record["off_the_shelf"] = None
    assert "best off-the-shelf" not in trivia_tables(record)


def test_instruct_reader_table_shows_tuned_against_off_the_shelf_per_row():
    from cinephile.report import instruct_reader_table

    interval = lambda d, lo, hi: {"diff": d, "lo": lo, "hi": hi, "n": 53, "beats": lo > 0}  # noqa: E731
    shelf = "Q, zero-shot + retrieved context"
    row = {"name": "1.5B, 240 prompts", "n_train": 240, "lr": 2e-4, "seed": 0, "best_off_the_shelf": shelf,
           "top_k": 10, "chunk_tokens": 48,
           "results": {"validation": [{"row": "tuned + retrieved context", "em": 76.2, "f1": 76.2},
                                      {"row": shelf, "em": 70.0, "f1": 72.0}],
                       "external": [{"row": "tuned + retrieved context", "em": 35.8, "f1": 50.5},
                                    {"row": shelf, "em": 41.5, "f1": 56.5}]},
           "paired_tuned_vs_best": {"external": {"em": interval(-5.7, -13.2, 1.9), "f1": interval(-6.0, -12.0, 0.1)}},
           "seconds": {"per_step": 22.4}}
    line = instruct_reader_table({"rows": [row]}).splitlines()[2]
    assert line == ("| 1.5B, 240 prompts | 240 (0.0002, seed 0) | 10 x 48 tokens | answer | answer only | 76.2 / 70.0 | "
                    "– | 35.8 / 50.5 | 41.5 / 56.5 | -5.7 [-13.2, +1.9] | -6.0 [-12.0, +0.1] | 22 s |")
    quoted = {**row, "answer_format": "quote", "best_off_the_shelf": "Q, zero-shot, evidence first + retrieved context"}
    quoted["results"] = {k: [{**x, "row": quoted["best_off_the_shelf"]} if x["row"] == shelf else x for x in v]
                         for k, v in row["results"].items()}
    assert "| 240 (0.0002, seed 0) | 10 x 48 tokens | evidence, then answer | evidence first | 76.2 / 70.0 |" in \
        instruct_reader_table({"rows": [quoted]})
    row["validation_em_by_kind"] = [{"row": "tuned + retrieved context", "single": 80.0, "generated": 61.5},
                                    {"row": shelf, "single": 75.0, "generated": 58.25}]
    assert "| 76.2 / 70.0 | 61.5 / 58.2 |" in instruct_reader_table({"rows": [row]})


def test_ratings_tables_show_the_seed_spread_and_each_slice():
    from cinephile.report import ratings_tables
    row = {"model": "SVD++ (surprise, tuned)", "rmse": 0.9, "mae": 0.7, "pearson": 0.5, "spearman": 0.5, "n": 10,
           "rmse_seeds_mean": 0.91, "rmse_seeds_sd": 0.004, "n_seeds": 5}
    interval = {"model": "m", "against": "SVD++ (surprise, tuned)", "rmse_diff": 0.01, "ci95_lo": -0.01,
                "ci95_hi": 0.03, "n": 10, "n_users": 2, "beats": False}
    text = ratings_tables({"models": [row], "intervals": [interval],
                           "slices": {"cold movies": {"n": 4, "models": [{**row, "n": 4}], "intervals": []}}})
    assert "| SVD++ (surprise, tuned) | 0.9000 | 0.700 | 0.500 | 0.500 | 10 | 0.9100 ± 0.0040 (5 seeds) |" in text
    assert "paired bootstrap 95% interval (users resampled)" in text
    assert "Slice: cold movies (4 pairs)" in text and "| 4 | 0.9100 ± 0.0040 (5 seeds) |" in text


def test_contexts_table_shows_recall_and_the_reader_per_setting_and_the_paired_k_difference():
    from cinephile.report import contexts_table

    def row(label, k, recall_val, em):
        return {"distractors": label, "top_k": k, "chunk_tokens": 48, "validation_tokens": 36.4 * k,
                "recall": {"training": 0.9, "validation": recall_val, "external": 0.71},
                "validation": {"em": em, "f1": em + 1, "n": 105, "em_by_kind": {"single": em + 2, "comparison": em - 5}}}
    interval = {"diff": 2.9, "lo": -1.0, "hi": 6.7, "n": 105, "beats": False}
    record = {"rows": [row("random", 6, 0.87, 70.5), row("similar", 10, 0.962, 66.0)],
              "paired_most_vs_fewest_chunks": {"more": 10, "fewer": 6, "similar": {"em": interval, "f1": interval}}}
    text = contexts_table(record)
    assert "| random | 6 x 48 | 218 | 0.90 | 0.87 | 0.71 | 70.5 / 71.5 | 72.5 / 65.5 |" in text
    assert "| similar | 10 x 48 | 364 | 0.90 | 0.96 | 0.71 | 66.0 / 67.0 | 68.0 / 61.0 |" in text
    assert "| off the shelf, validation EM: 10 − 6 chunks [95%] |" in text
    assert "| similar | +2.9 [-1.0, +6.7] | +2.9 [-1.0, +6.7] |" in text
    del record["paired_most_vs_fewest_chunks"]
    assert "chunks [95%]" not in contexts_table(record)
