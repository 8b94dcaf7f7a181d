"""Both notebooks run top to bottom with tiny parameters (papermill), writing their artifacts."""

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHARED_DATA

papermill = pytest.importorskip("papermill")
pytestmark = pytest.mark.slow


def _run(name: str, tmp_path: Path, **params) -> Path:
    out = tmp_path / name
    papermill.execute_notebook(str(ROOT / name), str(out), parameters=params, cwd=str(ROOT),
                               kernel_name="python3", progress_bar=False)
    return out


def test_main_notebook_tiny(tmp_path):
    run = f"test-trivia-{tmp_path.name}"
    _run("main.ipynb", tmp_path, MAX_QUESTIONS=24, EXTERNAL_LIMIT=4, EPOCHS=1, BATCH_SIZE=4, RUN_NAME=run,
         DATA_OUT=str(tmp_path / "data"), DEMO_QUESTIONS=["Who directed Jaws?"],
         EXTERNAL_CSV=str(SHARED_DATA / "movie_qa" / "hotpotqa_movie_dev.csv"))
    run_dir = ROOT / "runs" / run
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert [r["row"] for r in metrics["results"]["validation"]][0] == "closed-book (base)"
        assert metrics["results"]["external"][0]["n"] == 4
        for f in ["processed_chunks_with_qa.jsonl", "training_data.jsonl", "validation_data.jsonl", "corpus_index.npy"]:
            assert (tmp_path / "data" / f).stat().st_size > 0
        assert (run_dir / "lora_smollm2-135m_triviaqa_weights.pth").is_file()
        assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    finally:
        import shutil
        shutil.rmtree(run_dir, ignore_errors=True)


def test_llm_notebook_tiny(tmp_path):
    run = f"test-ratings-{tmp_path.name}"
    _run("llm.ipynb", tmp_path, MOVIELENS_DIR=str(SHARED_DATA / "movielens" / "ml-latest-small"), MAX_PER_USER=1,
         N_EVAL=16, N_VAL=8, N_AGREEMENT=4, EPOCHS=1, BATCH_SIZE=8, RUN_NAME=run, DATA_OUT=str(tmp_path / "data"),
         TRAIN_LIMIT=32)
    run_dir = ROOT / "runs" / run
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        models = [r["model"] for r in metrics["test_subset"]]
        assert "user + item bias" in models and "LoRA-tuned (expected)" in models
        assert (run_dir / "adapter.gguf").stat().st_size > 0 and (run_dir / "Modelfile").is_file()
    finally:
        import shutil
        shutil.rmtree(run_dir, ignore_errors=True)
