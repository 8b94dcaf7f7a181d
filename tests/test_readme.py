"""The README's result tables are copies of the committed results/*.json files, not typed by hand."""

import pytest

from cinephile.report import RENDERERS, RESULTS, WRITERS, attention_table, render_all, trainer_table
from tests.conftest import ROOT


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_readme_tables_are_rendered_from_results_json(name):
    tables = render_all()
    if name not in tables:
        pytest.skip(f"results/{name} not written yet (run the notebook or benchmark that measures it)")
    assert tables[name] in (ROOT / "README.md").read_text(encoding="utf-8"), (
        f"README's table for results/{name} differs from the file; paste `python -m cinephile.report` output")


def test_rendered_tables_follow_the_numbers():
    record = {"results": {"ours": {"wall_s": 10.0, "tokens_per_s": 300.0, "peak_rss_mb": 900.0, "val_loss": 1.0},
                          "trainer": {"wall_s": 20.0, "tokens_per_s": 150.0, "peak_rss_mb": 1000.0, "val_loss": 1.01}},
              "ratios": {"tokens_per_s_ours_over_trainer": 2.0, "peak_rss_ours_over_trainer": 0.9,
                         "val_loss_relative_difference": -0.0099}}
    text = trainer_table(record)
    assert "| ratio ours / Trainer |  | **2.00x** | 0.90x | -0.99% |" in text
    assert text.count("\n") == 4
    record["seed_spread"] = {"seeds": [0, 1, 2], "ours": [1.0, 1.1, 0.9], "trainer": [1.01, 1.02, 1.03]}
    assert ("over seeds 0, 1, 2 (adapter initial values and batch order): ours 1.0000 ± 0.1000 (1.0000, 1.1000, "
            "0.9000), Trainer 1.0200 ± 0.0100 (1.0100, 1.0200, 1.0300); mean difference -1.96%.") in trainer_table(record)


def test_attention_table_shows_both_kernels_and_the_ratio():
    record = {"model": "m", "batch": 8, "seq_len": 450,
              "median_s": {"sdpa": {"train_step_s": 9.0, "generate_s": 4.0}, "eager": {"train_step_s": 6.0, "generate_s": 5.0}},
              "speedup_eager_vs_sdpa": {"train_step_s": 1.5, "generate_s": 0.8}}
    lines = attention_table(record).splitlines()
    assert lines[2:] == ["| sdpa | 9.00 s | 4.00 s |", "| eager | 6.00 s | 5.00 s |",
                         "| speed-up eager / SDPA | **1.50x** | **0.80x** |"]


def test_every_results_file_has_a_renderer_and_a_writer():
    """A results file nobody renders would never reach the README; one nobody writes would never be refreshed."""
    names = sorted(p.name for p in RESULTS.glob("*.json"))
    assert names, f"no results files in {RESULTS}"
    assert [n for n in names if n not in RENDERERS] == []
    assert sorted(RENDERERS) == sorted(WRITERS)


def test_notebook_wall_table_shows_both_runs_the_prediction_and_the_ratio():
    from cinephile.report import notebook_wall_table
    record = {"runs": [{"label": "fp32 base", "timings_s": {"training_s": 600.0, "total_s": 1200.0}},
                       {"label": "bf16 base", "timings_s": {"training_s": 480.0, "total_s": 1020.0}}],
              "predicted_s": {"training_s": 504.0, "total_s": 1104.0}}
    lines = notebook_wall_table(record).splitlines()
    assert lines[2:] == ["| training | 10.00 | 8.40 | 8.00 | 0.80x |",
                         "| **total** | **20.00** | **18.40** | **17.00** | **0.85x** |"]


def test_study_table_lists_trials_best_first_then_the_references():
    from cinephile.report import study_table
    trial = {"r": 8, "lr": 1e-3, "per_user": 2, "rating_lambda": 0.1, "n_train": 1220, "train_s": 300.0, "val_n": 240}
    record = {"trials": [{**trial, "trial": 0, "val_rmse": 0.95}, {**trial, "trial": 1, "val_rmse": 0.91}],
              "best": {"trial": 1}, "references": [{"variant": "SVD++ (recommender)", "val_rmse": 0.9, "val_n": 240}]}
    lines = study_table(record).splitlines()
    assert lines[2].startswith("| trial 1 (best) | 8 | 0.001 | 2 | 0.1 | 1220 | 5.0 min | 0.9100 | 240 |")
    assert lines[3].startswith("| trial 0 | ") and lines[4].startswith("| SVD++ (recommender) | – |")


def test_rating_speed_table_shows_both_ways_and_the_ratios():
    from cinephile.report import rating_speed_table
    record = {"scoring": {"prompts": 320, "users": 64, "mean_prompt_tokens": 240.0, "mean_shared_tokens": 150.0,
                          "tokens_run_ratio": 0.5, "whole_s": 40.0, "shared_s": 22.0, "ratio": 0.55},
              "training": {"per_user": 8, "ratio": 0.6,
                           "own history": {"instructions": 256, "users": 32, "seconds": 80.0,
                                           "per_instruction_s": 0.3125, "mean_prompt_tokens": 240.0},
                           "shared history": {"instructions": 256, "users": 32, "seconds": 48.0,
                                              "per_instruction_s": 0.1875, "mean_prompt_tokens": 236.0}}}
    lines = rating_speed_table(record).splitlines()
    assert lines[2] == ("| (a) scoring 320 test prompts of 64 users (240 tokens; the shared history 150; tokens run "
                        "0.50x) | 40.0 s | 22.0 s | **0.55x** |")
    assert lines[3] == ("| (b) one training epoch, 256 instructions of 32 users (8 per user; 240 / 236 tokens) | "
                        "80.0 s (0.312 s each) | 48.0 s (0.188 s each) | **0.60x** |")


def test_large_run_table_compares_each_slice_with_svdpp():
    from cinephile.report import large_run_table

    def part(ours, svdpp, diff, lo, hi, n):
        return {"models": [{"model": "LoRA", "rmse": ours}, {"model": "SVD++ (surprise, tuned)", "rmse": svdpp}],
                "intervals": [{"against": "user + item bias", "n": n, "rmse_diff": -0.5, "ci95_lo": -0.6,
                               "ci95_hi": -0.4, "beats": True},
                              {"against": "SVD++ (surprise, tuned)", "n": n, "rmse_diff": diff, "ci95_lo": lo,
                               "ci95_hi": hi, "beats": hi < 0}]}
    record = {**part(0.93, 0.94, -0.01, -0.02, -0.001, 3050), "reported": "LoRA", "n_train_examples": 20174,
              "n_test_pairs": 3050, "n_users": 610, "timings_s": {"training_s": 3000.0},
              "slices": {"cold": {**part(1.1, 1.0, 0.1, -0.05, 0.2, 460), "n": 460}}}
    lines = large_run_table(record).splitlines()
    assert lines[0] == "20,174 training instructions, trained in 50.0 min; 3,050 test pairs of 610 users"
    assert lines[2].startswith("| slice | n pairs | LoRA | SVD++ (surprise, tuned) | difference |")
    assert lines[4] == "| all test pairs | 3050 | 0.9300 | 0.9400 | -0.0100 | [-0.0200, -0.0010] | **yes** |"
    assert lines[5] == "| cold | 460 | 1.1000 | 1.0000 | +0.1000 | [-0.0500, +0.2000] | no |"
