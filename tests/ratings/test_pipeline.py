"""The ratings stages on tiny inputs: the config, instructions, baselines, training, scoring and the record."""

import copy
import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from cinephile import models
from cinephile.io import read_json, read_jsonl
from cinephile.ratings import pipeline
from cinephile.ratings.config import RatingsConfig
from cinephile.ratings.scoring import ADJUSTMENT_ANSWERS, RATING_ANSWERS, RATING_SYSTEM, RESIDUAL_SYSTEM, RatingLoss
from cinephile.train import TrainConfig

from tests.helpers import RATINGS, write_folder

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run faster on one thread than on two contended ones

ROOT = Path(__file__).resolve().parents[2]
# user 3: seven ratings (val = movie 7, test = movie 1), so two users have a test pair
RATINGS3 = RATINGS + "".join(f"3,{m},{r},{t}\n" for m, r, t in
                             [(2, 3.0, 11), (3, 4.0, 12), (4, 2.0, 13), (5, 5.0, 14), (6, 3.0, 15), (7, 4.0, 16),
                              (1, 2.0, 17)])


@pytest.fixture
def cfg(tmp_path):
    folder = write_folder(tmp_path / "ml", ratings=RATINGS3)
    return RatingsConfig(movielens_dir=str(folder), movielens_alternatives=(), predictors=("bias",),
                                  residual_to="bias", surprise_baselines=(), lora_layers=None, lora_r=4,
                                  lora_alpha=8, data_out=str(tmp_path / "data"), batch_size=2, max_len=256,
                                  n_zero_shot=1, test_per_user=1, val_per_user=1,
                                  shared_history=False).resolved()  # two users: grouped batches would alternate them


@pytest.fixture
def staged(cfg):
    split = pipeline.load_and_split(cfg)
    return split, pipeline.build_instructions(cfg, split)


@pytest.fixture
def tiny_model(smol_tokenizer, monkeypatch):
    """``load_base_model`` returning a tiny random Llama over the SmolLM2 vocabulary."""
    def load(name, device=None, dtype=torch.float32):
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=64)
        return LlamaForCausalLM(cfg).to(dtype), smol_tokenizer
    monkeypatch.setattr(models, "load_base_model", load)


def test_build_instructions_writes_every_split_and_picks_the_subsets(cfg, staged):
    split, instr = staged
    for which in ("train", "val", "test"):
        rows = read_jsonl(Path(cfg.data_out) / f"movielens_{which}.jsonl")
        assert rows == json.loads(json.dumps(instr.raw[which]))
    assert [(e["user_id"], e["movie_id"]) for e in instr.train] == [(1, 4), (1, 5), (3, 5), (3, 6)]  # two latest
    assert [(e["user_id"], e["movie_id"]) for e in instr.eval] == [(1, 7), (3, 1)]
    e = instr.eval[0]
    assert e["response"].startswith("Adjustment: ") and e["anchor"] == e["predictions"]["bias"]
    assert instr.y_eval.tolist() == [4.5, 2.0]
    one = pipeline.build_instructions(dataclasses.replace(cfg, train_limit=1, max_per_user=1, n_eval=1), split)
    assert [(e["user_id"], e["movie_id"]) for e in one.train] == [(1, 5)] and len(one.eval) == 1


def test_rating_target_keeps_the_rating_answer(cfg):
    split = pipeline.load_and_split(cfg)
    raw = pipeline.rating_examples(dataclasses.replace(cfg, residual_to=None), split, which=("val",))
    assert raw["val"][0]["response"] == "Rating: 5.0" and "anchor" not in raw["val"][0]


def test_baselines_predict_every_test_pair_and_align_to_the_eval_pairs(cfg, staged):
    split, instr = staged
    base = pipeline.baselines(cfg, split, progress=False)
    assert list(base.preds) == ["global mean", "user mean", "item mean", "user + item bias"]
    assert all(len(p) == len(split.test_df) for p in base.preds.values()) and base.tuned == {}
    on = base.on(instr.eval[::-1])  # any order of pairs
    bias = dict(zip(zip(base.test["userId"], base.test["movieId"]), base.preds["user + item bias"]))
    assert on["user + item bias"].tolist() == [bias[(e["user_id"], e["movie_id"])] for e in instr.eval[::-1]]


def test_tuned_factor_models_are_named_and_their_settings_reach_the_prompts(cfg, monkeypatch):
    pytest.importorskip("surprise")
    monkeypatch.setitem(pipeline.tuning.GRIDS, "SVD", [{"n_factors": 2, "n_epochs": 5}, {"n_factors": 3, "n_epochs": 5}])
    cfg = dataclasses.replace(cfg, surprise_baselines=("SVD",), baseline_seeds=2, predictors=("bias", "SVD"))
    split = pipeline.load_and_split(cfg)
    base = pipeline.baselines(cfg, split, progress=False)
    assert "SVD (surprise, tuned)" in base.preds and base.tuned["SVD"].preds.shape == (2, len(split.test_df))
    assert base.params["SVD"] in pipeline.tuning.GRIDS["SVD"] and len(base.tuned["SVD"].grid) == 2
    seen = []
    real = pipeline.recommenders.fit_many

    def fit_many(tasks, **kwargs):  # (name, train, target, seed, params) per fit
        seen.extend((name, params) for name, _, _, _, params in tasks)
        return real(tasks, n_jobs=1)
    monkeypatch.setattr(pipeline.recommenders, "fit_many", fit_many)
    pipeline.build_instructions(cfg, split, base.params)
    svd = [params for name, params in seen if name == "SVD"]
    assert svd and all(params == base.params["SVD"] for params in svd)


def test_train_and_score_stages_on_a_tiny_model(cfg, staged, tiny_model, tmp_path):
    split, instr = staged
    model, tokenizer = pipeline.load_rating_model(cfg)
    ex = pipeline.chat(cfg, tokenizer, instr)
    assert RESIDUAL_SYSTEM in ex.train[0]["prompt"]
    zero = pipeline.zero_shot(cfg, model, tokenizer, ex)
    assert len(zero["expected"]) == 1
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_config = dataclasses.replace(cfg.train_config(), epochs=4, lr=2e-2, warmup_ratio=0.0)
    history = pipeline.train_rating_model(model, tokenizer, ex.train, ex.train, train_config,
                                          answers=cfg.answers, loss="rating", rating_lambda=0.1)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert history["best_val_loss"] < history["initial_val_loss"]
    base = pipeline.baselines(cfg, split, progress=False)
    scores = pipeline.score(cfg, model, tokenizer, instr, ex, base, zero)
    rows = list(scores.table["model"])
    assert {"LoRA-tuned, adjusting bias (expected value)", "LoRA-tuned, adjusting bias (argmax)",
            "user + item bias"} <= set(rows)
    last = list(scores.slices["each user's last rating"][0]["model"])
    assert last[-2:] == ["LoRA-tuned, adjusting bias (greedy, parsed answers only)",
                         "zero-shot SmolLM2 (expected value, last rating of the first 1 users)"]
    expected = scores.preds["LoRA-tuned, adjusting bias (expected value)"]
    assert all(abs(p - e["anchor"]) <= 2 for p, e in zip(expected, instr.eval))  # anchor + an adjustment in [-2, 2]
    assert list(scores.intervals["against"]) == ["user + item bias"] and len(scores.greedy_texts) == 2
    assert set(scores.intervals["n_users"]) == {2}


def test_a_bf16_base_trains_fp32_adapters_only(cfg, staged, tiny_model):
    _, instr = staged
    cfg = dataclasses.replace(cfg, bf16=True, frozen_dtype="bfloat16")
    model, tokenizer = pipeline.load_rating_model(cfg)
    dtypes = {("lora_" in n, p.dtype) for n, p in model.named_parameters()}
    assert dtypes == {(False, torch.bfloat16), (True, torch.float32)}  # base in bf16, adapters in fp32
    ex = pipeline.chat(cfg, tokenizer, instr)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_config = dataclasses.replace(cfg.train_config(), epochs=2, lr=2e-2, warmup_ratio=0.0)
    pipeline.train_rating_model(model, tokenizer, ex.train, ex.train, train_config, answers=cfg.answers,
                                loss="rating", rating_lambda=0.1)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "lora_" in n)


def test_train_rating_model_refuses_an_unknown_loss(cfg):
    with pytest.raises(ValueError, match="loss must be 'rating' or 'token', got 'mse'"):
        pipeline.train_rating_model(None, None, [], [], TrainConfig(), answers=cfg.answers, loss="mse")


def test_answer_format_builds_the_loss_it_trains():
    class Tok:
        def __call__(self, text, add_special_tokens=False):
            return type("Enc", (), {"input_ids": [ord(c) for c in text]})()
        pad_token_id, eos_token_id = 0, 0
    loss = ADJUSTMENT_ANSWERS.loss(Tok(), 0.3)
    assert isinstance(loss, RatingLoss) and loss.residual and loss.lam == 0.3
    assert not RATING_ANSWERS.loss(Tok()).residual


def test_launch_examples_detect_the_target_from_the_rows(smol_tokenizer):
    rating = {"prompt": "Target movie: Heat (1995)", "response": "Rating: 4.0", "rating": 4.0}
    adjustment = {**rating, "response": "Adjustment: +0.5", "anchor": 3.6}
    (ex,), answers = pipeline.launch_examples([rating], smol_tokenizer)
    assert answers is RATING_ANSWERS and RATING_SYSTEM in ex["prompt"]
    (ex,), answers = pipeline.launch_examples([adjustment], smol_tokenizer)
    assert answers is ADJUSTMENT_ANSWERS and RESIDUAL_SYSTEM in ex["prompt"] and ex["anchor"] == 3.6
    with pytest.raises(ValueError, match="train.jsonl mixes rating examples and adjustment examples"):
        pipeline.launch_examples([rating, adjustment], smol_tokenizer, "train.jsonl")


def test_summary_keeps_the_structure_of_the_committed_record(cfg, staged, tmp_path):
    committed = read_json(ROOT / "results" / "ratings.json")
    split, instr = staged
    table, intervals = (copy.deepcopy(x) for x in (committed["models"], committed["intervals"]))
    scores = pipeline.Scores(pd.DataFrame(table), pd.DataFrame(intervals), {}, ["Adjustment: +0.0"], 0)
    ex = pipeline.Examples(instr.train, instr.val, instr.eval)
    exported = pipeline.Export(Path("a"), Path("b"), Path("c"), "", 1.0, None)
    cfg = dataclasses.replace(cfg, results_json=str(tmp_path / "results.json"))
    record = pipeline.summary(cfg, instr, ex, scores, exported, {"best_epoch": 1}, {"total_s": 2.0}, tmp_path)
    assert set(record) == set(committed) and set(record["config"]) == set(committed["config"])
    assert set(record["config"]["lora"]) == set(committed["config"]["lora"])
    assert set(record["config"]["train"]) == set(committed["config"]["train"])
    assert record["n_test_pairs"] == 2 and record["llama_cpp_agreement"] == 1.0
    assert record["config"]["residual_to"] == "bias"
    assert read_json(tmp_path / "results.json") == record
    metrics = read_json(tmp_path / "metrics.json")
    assert metrics["timings_s"] == {"total_s": 2.0} and metrics["history"] == {"best_epoch": 1}


def test_adjusts_reads_the_target_from_the_rows():
    assert pipeline.adjusts([{"anchor": 3.0}]) and not pipeline.adjusts([{"rating": 3.0}])
    with pytest.raises(ValueError, match="val.jsonl mixes"):
        pipeline.adjusts([{"anchor": 3.0}, {}], "val.jsonl")


