"""Training from the JSONL files: config checks, and 2-process data-parallel training (gloo) against one process."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from cinephile.io import write_jsonl
from cinephile.launch import load_config

ROOT = Path(__file__).resolve().parents[1]
# The README's "Scaling out" command, with this test's config file
TORCHRUN = ["torchrun", "--nproc_per_node", "2", "-m", "cinephile.launch", "--config"]


def test_config_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file .*missing.json not found"):
        load_config(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        load_config(tmp_path / "bad.json")
    (tmp_path / "extra.json").write_text(json.dumps({"modle": "gpt2"}))
    with pytest.raises(ValueError, match=r"unknown config keys \['modle'\]"):
        load_config(tmp_path / "extra.json")
    (tmp_path / "tc.json").write_text(json.dumps({"train_config": {"epoch": 2}}))
    with pytest.raises(ValueError, match=r"unknown train_config keys \['epoch'\]"):
        load_config(tmp_path / "tc.json")
    (tmp_path / "ok.json").write_text(json.dumps({"lora": {"r": 4}, "train_config": {"lr": 0.01}}))
    config = load_config(tmp_path / "ok.json")
    assert config["lora"]["r"] == 4 and config["lora"]["alpha"] == 32 and config["train_config"]["lr"] == 0.01


def test_ratings_examples_take_the_system_prompt_of_their_target(tmp_path, smol_tokenizer):
    from cinephile.launch import examples_for
    from cinephile.ratings.scoring import RATING_SYSTEM, RESIDUAL_SYSTEM

    rating = {"prompt": "Target movie: Heat (1995)", "response": "Rating: 4.0", "rating": 4.0}
    adjustment = {**rating, "response": "Adjustment: +0.5", "anchor": 3.6}
    config = {**load_config(None), "task": "ratings"}
    for rows, system in (([rating], RATING_SYSTEM), ([adjustment], RESIDUAL_SYSTEM)):
        write_jsonl(tmp_path / "rows.jsonl", rows)
        (example,) = examples_for(config, smol_tokenizer, str(tmp_path / "rows.jsonl"))
        assert system in example["prompt"] and example["response"] == rows[0]["response"]
    write_jsonl(tmp_path / "mixed.jsonl", [rating, adjustment])
    with pytest.raises(ValueError, match="mixes rating examples and adjustment examples"):
        examples_for(config, smol_tokenizer, str(tmp_path / "mixed.jsonl"))


def _records(n: int) -> list[dict]:
    """Trivia records of uneven lengths (contexts of 1 to 9 sentences)."""
    return [{"id": f"r{i}", "question": f"Who directed film number {i}?", "answer": f"Director {i % 3}",
             "retrieved_context": " ".join(["Film number %d was shot on location." % i] * (1 + i % 9))}
            for i in range(n)]


@pytest.fixture
def setup(tmp_path, smol_tokenizer):
    model_dir = tmp_path / "tiny"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                 max_position_embeddings=512)).save_pretrained(model_dir)
    smol_tokenizer.save_pretrained(model_dir)
    write_jsonl(tmp_path / "train.jsonl", _records(14))
    write_jsonl(tmp_path / "val.jsonl", _records(5))

    def config(out: str, batch_size: int) -> Path:
        path = tmp_path / f"{out}.json"
        path.write_text(json.dumps({
            "model": str(model_dir), "train": str(tmp_path / "train.jsonl"), "val": str(tmp_path / "val.jsonl"),
            "out": str(tmp_path / out), "style": "plain", "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "train_config": {"epochs": 2, "lr": 1e-2, "batch_size": batch_size, "max_len": 256,
                             "warmup_ratio": 0.0}}))
        return path
    return tmp_path, config


def _env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    return env


def test_two_gloo_processes_train_the_same_adapter_as_one_process(setup):
    tmp_path, config = setup
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torchrun (installed with torch) not found"
    logs = tmp_path / "logs"
    ddp = subprocess.run([torchrun, "--log-dir", str(logs), "--redirects", "3", *TORCHRUN[1:],
                          str(config("ddp", batch_size=2))], cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run([sys.executable, "-m", "cinephile.launch", "--config", str(config("single", batch_size=4))],
                            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]

    a = load_file(tmp_path / "ddp" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "single" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and a
    assert any(v.abs().max() > 1e-3 for k, v in a.items() if "lora_B" in k)  # trained: B starts at zero
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-4)
    ddp_history = json.loads((tmp_path / "ddp" / "history.json").read_text())
    single_history = json.loads((tmp_path / "single" / "history.json").read_text())
    assert ddp_history["world_size"] == 2 and single_history["world_size"] == 1
    assert ddp_history["epoch_val_loss"] == pytest.approx(single_history["epoch_val_loss"], rel=1e-5)
    # only rank 0 wrote: one adapter, no leftovers, and only rank 0's log reports writing it
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["adapter", "config.json", "history.json"]
    rank_logs = {p.parent.name: p.read_text() for p in logs.rglob("stderr.log")}
    assert set(rank_logs) == {"0", "1"}
    assert "adapter written to" in rank_logs["0"] and "adapter written to" not in rank_logs["1"]


@pytest.mark.parametrize("given, message", [
    ({"lora": None}, r"cfg.json: lora must be an object, got None; e.g. \"lora\": \{\"r\": 16"),
    ({"lora": {"rank": 4}}, r"cfg.json: unknown lora keys \['rank'\]; allowed: \['alpha', 'dropout'"),
    ({"lora": {"r": "4"}}, r"cfg.json: lora.r must be an integer, got '4'"),
    ({"lora": {"layers": [1, "2"]}}, r"cfg.json: lora.layers must be null or a list of block indices"),
    ({"lora": {"r": 0}}, r"cfg.json: lora: invalid LoRAConfig: r=0 must be a positive integer"),
    ({"lora": {"alpha": 0}}, r"cfg.json: lora: invalid LoRAConfig: alpha=0 must be a finite number > 0"),
    ({"lora": {"dropout": 1.0}}, r"cfg.json: lora: invalid LoRAConfig: dropout=1.0 must be a number in \[0, 1\)"),
    ({"train_config": {"epochs": "2"}}, r"cfg.json: train_config.epochs must be an integer, got '2'; e.g. "
                                        r"\"epochs\": 2"),
    ({"train_config": {"lr": None}}, r"cfg.json: train_config.lr must be a number, got None"),
    ({"train_config": {"epochs": 0}}, r"cfg.json: TrainConfig.epochs must be >= 1, got 0"),
    ({"train_config": None}, r"cfg.json: train_config must be an object, got None"),
    ({"limit": -1}, r"cfg.json: limit must be null \(every example\) or an integer >= 1, got -1"),
    ({"limit": 0}, r"cfg.json: limit must be null \(every example\) or an integer >= 1, got 0"),
    ({"limit": True}, r"cfg.json: limit must be null or an integer, got True"),
    ({"task": "chess"}, r"cfg.json: task must be one of \['ratings', 'trivia'\], got 'chess'"),
    ({"loss": "rating"}, r"cfg.json: loss 'rating' needs task 'ratings'"),
    ({"rating_lambda": "0.1"}, r"cfg.json: rating_lambda must be a number, got '0.1'"),
    ({"val": 3}, r"cfg.json: val must be null or a string, got 3"),
    ({"model": None}, r"cfg.json: model must be a string, got None"),
])
def test_config_values_of_the_wrong_type_are_refused_with_the_file_and_key(tmp_path, given, message):
    (tmp_path / "cfg.json").write_text(json.dumps(given))
    with pytest.raises(ValueError, match=message):
        load_config(tmp_path / "cfg.json")


@pytest.mark.parametrize("text", ["null", '"train.json"', "[1, 2]", "3"])
def test_a_config_that_is_not_an_object_is_refused(tmp_path, text):
    (tmp_path / "cfg.json").write_text(text)
    with pytest.raises(ValueError, match=r"cfg.json must hold a JSON object with keys from \['context_key'"):
        load_config(tmp_path / "cfg.json")


TRIVIA = {"id": "q1", "question": "Who directed Jaws?", "answer": "Steven Spielberg", "retrieved_context": "Jaws."}
RATING = {"prompt": "Target movie: Heat (1995)", "response": "Rating: 4.0", "rating": 4.0}
ADJUSTMENT = {**RATING, "response": "Adjustment: +0.5", "anchor": 3.5}


@pytest.mark.parametrize("config, train_rows, val_rows, message", [
    ({}, [TRIVIA, {k: v for k, v in TRIVIA.items() if k != "question"}], [TRIVIA],
     r"train.jsonl line 2: the record has no 'question' key; every record needs "
     r"\['id', 'question', 'answer', 'retrieved_context'\]"),
    ({}, [TRIVIA], [TRIVIA, 7], r"val.jsonl line 2: expected a JSON object"),
    ({"context_key": "context"}, [TRIVIA], [TRIVIA], r"train.jsonl line 1: the record has no 'context' key"),
    ({"task": "ratings"}, [RATING, {"prompt": "x"}], [RATING], r"train.jsonl line 2: the record has no 'response'"),
    ({"task": "ratings", "loss": "rating"}, [RATING], [{"prompt": "x", "response": "Rating: 1.0"}],
     r"val.jsonl line 1: the record has no 'rating' key"),
    ({"task": "ratings", "loss": "rating"}, [RATING], [ADJUSTMENT],
     r"train.jsonl holds rating examples but .*val.jsonl holds adjustment examples"),
    ({"task": "ratings"}, [ADJUSTMENT], [RATING],
     r"train.jsonl holds adjustment examples but .*val.jsonl holds rating examples"),
    ({}, [], [TRIVIA], r"train.jsonl holds no records"),
    ({"val": "missing.jsonl"}, [TRIVIA], [TRIVIA], r"missing.jsonl"),
])
def test_data_files_are_checked_before_any_model_loads(tmp_path, monkeypatch, config, train_rows, val_rows, message):
    from cinephile import launch

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the data files were checked")
    monkeypatch.setattr(launch.models, "load_base_model", no_model)
    write_jsonl(tmp_path / "train.jsonl", train_rows)
    write_jsonl(tmp_path / "val.jsonl", val_rows)
    full = {**load_config(None), "train": str(tmp_path / "train.jsonl"), "val": str(tmp_path / "val.jsonl"),
            "out": str(tmp_path / "out"), **config}
    if "missing" in full["val"]:
        full["val"] = str(tmp_path / "missing.jsonl")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        launch.run(full)
    assert not (tmp_path / "out").exists()


def test_limit_keeps_the_first_rows_and_a_bad_limit_is_refused_before_loading(tmp_path, monkeypatch):
    from cinephile import launch

    write_jsonl(tmp_path / "train.jsonl", [{**TRIVIA, "id": f"q{i}"} for i in range(4)])
    config = {**load_config(None), "train": str(tmp_path / "train.jsonl"), "val": None, "limit": 3}
    assert [r["id"] for r in launch.read_data(config)["train"]] == ["q0", "q1", "q2"]
    monkeypatch.setattr(launch.models, "load_base_model", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(ValueError, match=r"config: limit must be null \(every example\) or an integer >= 1, got -1"):
        launch.run({**config, "limit": -1})
