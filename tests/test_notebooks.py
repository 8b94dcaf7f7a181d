"""Both notebooks run top to bottom with tiny parameters, as the README's headless command runs them."""

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from cinephile import io
from cinephile.notebooks import parse_value, run_notebook
from tests.conftest import ROOT

pytest.importorskip("papermill")


def _run(name: str, tmp_path: Path, **params) -> nbformat.NotebookNode:
    out = run_notebook(ROOT / name, tmp_path / name, parameters=params, cwd=ROOT, progress=False)
    nb = nbformat.read(out, as_version=4)
    streams = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream"]
    assert streams and not any("\r" in o.text for o in streams)  # progress bars left one line each
    assert not any("TqdmWarning" in o.text for o in streams)  # no stray warnings
    return nb


def test_the_output_folder_is_created(tmp_path, monkeypatch):
    """`-o runs/x.ipynb` works on a fresh clone, before any run has made runs/."""
    import papermill

    calls = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda src, out, **kw: calls.append(Path(out).parent.is_dir()))
    nb = tmp_path / "a.ipynb"
    nb.write_text("{}")
    assert run_notebook(nb, tmp_path / "runs" / "deep" / "a.ipynb") == tmp_path / "runs" / "deep" / "a.ipynb"
    assert calls == [True]


def test_parse_value():
    values = ["3", "0.5", "None", "['a']", "('a', 'b')", "smollm2-135m"]
    assert [parse_value(v) for v in values] == [3, 0.5, None, ["a"], ["a", "b"], "smollm2-135m"]


@pytest.mark.slow
def test_main_notebook_tiny(tmp_path, shared_data):
    run = f"test-trivia-{tmp_path.name}"
    _run("main.ipynb", tmp_path, MAX_QUESTIONS=30, EXTERNAL_LIMIT=4, EPOCHS=1, BATCH_SIZE=4, RUN_NAME=run,
         COMPARISON_PAIRS=[4, 1], CHUNK_CHOICES=[128], K_CHOICES=[1, 2], MAX_LEN=384,
         DATA_OUT=str(tmp_path / "data"), DEMO_QUESTIONS=[["Who directed Jaws?", "Steven Spielberg"]], RESULTS_JSON="",
         EXTERNAL_CSV=str(shared_data / "movie_qa" / "hotpotqa_movie_dev.csv"), OFF_THE_SHELF=["smollm2-135m"])
    run_dir = ROOT / "runs" / run
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert [r["row"] for r in metrics["results"]["validation"]][0] == "closed-book (base)"
        assert metrics["results"]["external"][0]["n"] == 4
        shelf_rows = [r["row"] for r in metrics["results"]["external"] if "zero-shot" in r["row"]]
        assert shelf_rows == ["SmolLM2-135M-Instruct, zero-shot + retrieved context",
                              "SmolLM2-135M-Instruct, zero-shot + gold context"]
        assert metrics["off_the_shelf"]["paired_tuned_vs_best"]["external"]["f1"]["n"] == 4
        n_val = metrics["results"]["validation"][0]["n"]
        assert metrics["paired_em_tuned_vs_base"]["validation"]["n"] == n_val
        assert sum(e["n"] for e in metrics["errors"]["validation"]) <= n_val
        assert metrics["settings"]["top_k"] in (1, 2) and metrics["settings"]["chunk_tokens"] <= 128
        kinds = {r["kind"] for r in io.read_jsonl(tmp_path / "data" / "training_data.jsonl")}
        assert kinds == {"single", "comparison"}
        for f in ["processed_chunks_with_qa.jsonl", "training_data.jsonl", "validation_data.jsonl", "corpus_index.npy"]:
            assert (tmp_path / "data" / f).stat().st_size > 0
        assert (run_dir / "lora_gemma3-270m_triviaqa_weights.pth").is_file()  # the default reader
        assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.slow
def test_llm_notebook_tiny(tmp_path, shared_data):
    run = f"test-ratings-{tmp_path.name}"
    _run("llm.ipynb", tmp_path, MOVIELENS_DIR=str(shared_data / "movielens" / "ml-latest-small"), MAX_PER_USER=1,
         N_EVAL=4, N_ZERO_SHOT=2, N_VAL=8, N_AGREEMENT=4, EPOCHS=1, BATCH_SIZE=8, RUN_NAME=run,
         DATA_OUT=str(tmp_path / "data"), TRAIN_LIMIT=32, SURPRISE_BASELINES=["SVD"], PREDICTORS=["bias", "SVD"],
         RESIDUAL_TO="SVD", BASELINE_SEEDS=2, RESULTS_JSON="")
    run_dir = ROOT / "runs" / run
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        models = {r["model"]: r for r in metrics["models"]}
        assert {"user + item bias", "SVD (surprise, tuned)", "LoRA-tuned, adjusting SVD (expected value)"} <= set(models)
        assert models["SVD (surprise, tuned)"]["n_seeds"] == 2 and metrics["baselines"]["SVD"]["grid"]
        assert {r["against"] for r in metrics["intervals"]} == {"user + item bias", "SVD (surprise, tuned)"}
        assert {r["n_users"] for r in metrics["intervals"]} == {4} and metrics["n_test_pairs"] == 20  # 4 users x 5
        last = metrics["slices"]["each user's last rating"]
        greedy = next(r for r in last["models"] if "greedy" in r["model"])
        assert last["n"] == 4 and greedy["n"] + metrics["greedy_parse_failures"] == 4 == metrics["greedy_pairs"]
        assert (run_dir / "adapter.gguf").stat().st_size > 0 and (run_dir / "Modelfile").is_file()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
