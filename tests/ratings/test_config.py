"""The ratings run's config: resolved once into a new frozen config, saved with the run; the stage timer."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from cinephile.io import read_json
from cinephile.ratings.config import RatingsConfig, Timer, start_run
from cinephile.ratings.scoring import ADJUSTMENT_ANSWERS, RATING_ANSWERS, RATING_SYSTEM, RESIDUAL_SYSTEM


@pytest.fixture
def cfg(tmp_path):
    return RatingsConfig(movielens_dir=str(tmp_path), movielens_alternatives=(), predictors=("bias",)).resolved()


def test_config_from_params_is_resolved_into_a_new_frozen_config():
    params = {"MAX_PER_USER": 1, "LORA_LAYERS": [1, 2], "RESIDUAL_TO": None, "SYSTEM": None, "START": 3, "np": np}
    cfg = RatingsConfig.from_params(params)
    assert cfg.max_per_user == 1 and cfg.lora_layers == (1, 2) and cfg.system == RATING_SYSTEM
    assert cfg.answers is RATING_ANSWERS and cfg.label == "LoRA-tuned"
    default = RatingsConfig()
    assert default.system is None and default.resolved().system == RESIDUAL_SYSTEM  # the default is untouched
    assert default.resolved().answers is ADJUSTMENT_ANSWERS
    assert RatingsConfig(system="Be brief.").resolved().system == "Be brief."
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.max_per_user = 3
    json.dumps(dataclasses.asdict(cfg))  # config.json


def test_timer_records_each_stage_and_the_total():
    timer = Timer()
    with timer("a_s"):
        pass
    with pytest.raises(KeyError):
        with timer("b_s"):
            raise KeyError("x")
    seconds = timer.total()
    assert set(seconds) == {"a_s", "b_s", "total_s"} and seconds["total_s"] >= seconds["a_s"] >= 0


def test_start_run_writes_the_resolved_config(cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = start_run(dataclasses.replace(cfg, run_name="r"))
    assert run_dir == Path("runs") / "r"
    saved = read_json(run_dir / "config.json")
    assert saved["system"] == RESIDUAL_SYSTEM and saved["run_name"] == "r" and saved["predictors"] == ["bias"]


@pytest.mark.parametrize("bf16, frozen, resolved", [(True, "auto", "bfloat16"), (False, "auto", "float32"),
                                                    (None, "auto", "float32"), (True, "float32", "float32"),
                                                    (False, "bfloat16", "bfloat16")])
def test_frozen_dtype_auto_follows_bf16(bf16, frozen, resolved):
    cfg = RatingsConfig(bf16=bf16, frozen_dtype=frozen).resolved()
    assert cfg.frozen_dtype == resolved and cfg.resolved().frozen_dtype == resolved


def test_an_unknown_frozen_dtype_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r'frozen_dtype must be "float32", "bfloat16" or "auto", got \'fp16\''):
        RatingsConfig(frozen_dtype="fp16").resolved()
