"""Validation sweeps: which instructions a variant trains on, and the recommender reference rows."""

import json

import numpy as np
import pytest

from cinephile.ratings.sweeps import pick_per_user, reference_rows, train_and_validate, variant_config


def test_pick_per_user_keeps_each_users_latest_instructions():
    examples = [{"user_id": u, "t": t} for u in (2, 1) for t in range(4)]  # time order within each user
    picked = pick_per_user(examples, 2)
    assert [(e["user_id"], e["t"]) for e in picked] == [(1, 2), (1, 3), (2, 2), (2, 3)]
    assert len(pick_per_user(examples, 10)) == 8


@pytest.mark.parametrize("per_user", [0, -1, 1.5, True, None])
def test_pick_per_user_refuses_a_count_below_one(per_user):
    examples = [{"user_id": 1, "t": t} for t in range(3)]
    with pytest.raises(ValueError, match=rf"per_user must be a whole number >= 1 .*got {per_user!r}"):
        pick_per_user(examples, per_user)


GOOD = {"user_id": 1, "movie_id": 5, "prompt": "Target movie: Heat (1995)", "response": "Rating: 4.0", "rating": 4.0}


@pytest.mark.parametrize("train_raw, val_raw, settings, error, message", [
    ([GOOD, {**GOOD, "response": None}], [GOOD], {}, TypeError, r"example 1: response must be a string, got None"),
    ([GOOD], [{**GOOD, "rating": "four"}], {}, TypeError, r"example 0: rating must be a number, got 'four'"),
    ([GOOD], [GOOD], {"per_user": 0}, ValueError, r"per_user must be a whole number >= 1"),
    ([GOOD], [GOOD], {"residual_to": "SVD++"}, ValueError, r"has no 'SVD\+\+' prediction"),
    ([GOOD], [GOOD], {"head": True}, ValueError, r"regression head predicts the adjustment .* set residual_to"),
])
def test_bad_examples_and_settings_are_refused_before_loading_a_model(train_raw, val_raw, settings, error, message,
                                                                      monkeypatch):
    from cinephile import models
    monkeypatch.setattr(models, "load_base_model", lambda *a, **k: pytest.fail("model loaded before checking"))
    with pytest.raises(error, match=message):
        train_and_validate(train_raw, val_raw, **settings)


def test_reference_rows_score_the_prompt_predictions():
    val = [{"rating": 4.0, "predictions": {"bias": 3.0}}, {"rating": 2.0, "predictions": {"bias": 2.0}}]
    (row,) = reference_rows(val, ("bias",))
    assert row["variant"] == "bias (recommender)" and row["val_n"] == 2
    assert row["val_rmse"] == pytest.approx(np.sqrt(0.5))


def test_unknown_setting_is_refused_before_any_work():
    with pytest.raises(ValueError, match=r"unknown settings \['rank'\]"):
        train_and_validate([], [], rank=8)


def test_variant_config_maps_the_settings_onto_the_pipeline_config():
    cfg = variant_config({"per_user": 2, "layers": [20, 21], "residual_to": "SVD++", "r": 8.0})
    assert cfg.lora_layers == (20, 21) and cfg.lora_r == 8 and cfg.residual_to == "SVD++"
    assert cfg.answers.residual and cfg.system == cfg.answers.system
    assert variant_config({}).answers.residual is False and variant_config({}).lora_layers is None


def test_train_and_validate_runs_the_pipeline_stages(monkeypatch):
    from cinephile.ratings import pipeline
    calls = []
    monkeypatch.setattr(pipeline, "load_rating_model", lambda cfg: calls.append(("load", cfg.lora_r)) or ("m", "t"))
    monkeypatch.setattr("cinephile.ratings.sweeps.chat_examples", lambda raw, tok, system: [dict(e) for e in raw])
    monkeypatch.setattr(pipeline, "train_rating_model",
                        lambda model, tok, tr, va, tc, **kw: calls.append(("train", len(tr), len(va), kw["loss"]))
                        or {"best_epoch": 1})
    monkeypatch.setattr(pipeline, "expected_ratings",
                        lambda cfg, model, tok, ex: {"expected": np.array([e["rating"] for e in ex])})
    train = [{**GOOD, "movie_id": m} for m in range(3)]
    row = train_and_validate(train, [GOOD, {**GOOD, "user_id": 2}], per_user=2, r=4)
    assert calls == [("load", 4), ("train", 2, 2, "rating")]  # the validation prompts choose the kept epoch
    assert row["n_train"] == 2 and row["val_rmse"] == 0 and row["val_n"] == 2 and row["r"] == 4
    assert row["kept_epoch"] == 1
    train_and_validate(train, [GOOD, {**GOOD, "user_id": 2}], per_user=2, r=4, select=False)
    assert calls[-1] == ("train", 2, 0, "rating")  # no selection: the trained adapter is kept


def test_the_recent_ratings_variant_trains_and_scores_prompts_that_show_them(monkeypatch, tiny):
    from cinephile.ratings import pipeline
    from cinephile.ratings.data import temporal_split
    from cinephile.ratings.instructions import build_examples
    seen = {}
    monkeypatch.setattr(pipeline, "load_rating_model", lambda cfg: ("m", "t"))
    monkeypatch.setattr("cinephile.ratings.sweeps.chat_examples", lambda raw, tok, system: [dict(e) for e in raw])
    monkeypatch.setattr(pipeline, "train_rating_model",
                        lambda model, tok, tr, va, tc, **kw: seen.update(train=tr) or {"best_epoch": 1})
    monkeypatch.setattr(pipeline, "expected_ratings",
                        lambda cfg, model, tok, ex: seen.update(val=ex) or {"expected": np.array([3.0] * len(ex))})
    df = temporal_split(tiny.ratings)
    train_raw, val_raw = (build_examples(df, tiny.movies, tiny.tags, which=w) for w in ("train", "val"))
    row = train_and_validate(train_raw, val_raw, per_user=1, recent=2)
    assert row["recent"] == 2 and variant_config({"recent": 2}).recent_ratings == 2
    for e in seen["train"] + seen["val"]:
        assert "Recent ratings, newest first: " in e["prompt"] and "Liked:" not in e["prompt"]
    train_and_validate(train_raw, val_raw, per_user=1)
    assert all("Liked:" in e["prompt"] for e in seen["train"] + seen["val"])


def test_the_variants_study_trains_the_shared_history_variant_on_instructions_built_for_it(monkeypatch, tmp_path):
    from cinephile.ratings import sweeps
    from cinephile.ratings.config import RatingsConfig

    val = [{**GOOD, "predictions": {"bias": 3.5, "SVD": 3.8, "SVD++": 3.9}} for _ in range(3)]
    built, trained = [], []

    def fake_examples(cfg, split, which, params=None):
        built.append((cfg.shared_history, which))
        return {"train": [{**GOOD, "shared": cfg.shared_history}], "val": val}

    def fake_train(train_raw, val_raw, **settings):
        trained.append((train_raw[0]["shared"], bool(settings.get("shared_history"))))
        return {**settings, "val_rmse": 1.0, "val_n": len(val_raw)}

    monkeypatch.setattr(sweeps.pipeline, "rating_examples", fake_examples)
    monkeypatch.setattr(sweeps, "train_and_validate", fake_train)
    rows = sweeps.variants_study(RatingsConfig(shared_history=True), None, sweeps.VARIANTS,
                                 path=str(tmp_path / "v.json"))
    assert built == [(False, ("train", "val")), (True, ("train",))]  # built once more, only for that variant
    assert trained == [(False, False)] * 4 + [(True, True), (False, False), (False, False)]
    assert [r["variant"] for r in rows][3:] == list(sweeps.VARIANTS)
    assert variant_config({"shared_history": True}).train_config().group_by == "user_id"
    assert variant_config({}).train_config().group_by is None


def test_rerunning_some_variants_keeps_the_other_rows(monkeypatch, tmp_path):
    from cinephile import io
    from cinephile.ratings import sweeps
    from cinephile.ratings.config import RatingsConfig

    val = [{**GOOD, "predictions": {"bias": 3.5, "SVD": 3.8, "SVD++": 3.9}} for _ in range(3)]
    monkeypatch.setattr(sweeps.pipeline, "rating_examples", lambda cfg, split, which, params=None:
                        {"train": [GOOD], "val": val})
    rmse = iter([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 9.0])
    monkeypatch.setattr(sweeps, "train_and_validate", lambda tr, va, **s: {**s, "val_rmse": next(rmse), "val_n": 3})
    path = str(tmp_path / "v.json")
    sweeps.variants_study(RatingsConfig(), None, sweeps.VARIANTS, path=path)
    last = list(sweeps.VARIANTS)[-1]
    rows = sweeps.variants_study(RatingsConfig(), None, sweeps.VARIANTS, path=path, only=[last])
    assert [r["val_rmse"] for r in rows][3:] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 9.0]  # only the last variant re-ran
    assert io.read_json(path)["rows"] == rows and len(rows) == 3 + len(sweeps.VARIANTS)
    with pytest.raises(ValueError, match=r"no variants named \['nope'\]"):
        sweeps.variants_study(RatingsConfig(), None, sweeps.VARIANTS, path=path, only=["nope"])


def test_optuna_study_searches_on_validation_and_keeps_the_best_trial(monkeypatch, tmp_path):
    from cinephile.ratings import sweeps
    from cinephile.ratings.config import RatingsConfig

    built = {}
    val = [{**GOOD, "predictions": {"bias": 3.5, "SVD": 3.8, "SVD++": 3.9}} for _ in range(5)]

    def fake_examples(cfg, split, which, params=None):
        built.update(max_per_user=cfg.max_per_user, which=which)
        return {"train": [GOOD] * 3, "val": val}

    seen = []

    def fake_train(train_raw, val_raw, **settings):  # a smooth validation RMSE, lowest near lr 1e-3, r 8
        seen.append(settings)
        rmse = 0.9 + abs(np.log10(settings["lr"]) + 3) + abs(settings["r"] - 8) / 100 + settings["per_user"] / 1000
        return {**settings, "val_rmse": rmse, "val_n": len(val_raw)}

    monkeypatch.setattr(sweeps.pipeline, "rating_examples", fake_examples)
    monkeypatch.setattr(sweeps, "train_and_validate", fake_train)
    cfg = RatingsConfig(predictors=("bias", "SVD", "SVD++"), residual_to="SVD++")
    record = sweeps.optuna_study(cfg, split=None, n_trials=6, path=str(tmp_path / "study.json"))
    assert built == {"max_per_user": 4, "which": ("train", "val")}  # instructions for the largest per_user
    assert record["n_trials"] == len(seen) == 6
    assert all(s["alpha"] == 2 * s["r"] and s["per_user"] in (1, 2, 4) and 1e-4 <= s["lr"] <= 2e-3 for s in seen)
    assert all(s["shared_history"] == cfg.shared_history and s["recent"] == 0 for s in seen)  # the notebook's
    assert all(s["residual_to"] == "SVD++" and s["layers"] == cfg.lora_layers for s in seen)  # the notebook's
    assert record["best"]["val_rmse"] == min(t["val_rmse"] for t in record["trials"])
    assert [r["variant"] for r in record["references"]] == ["bias (recommender)", "SVD (recommender)",
                                                            "SVD++ (recommender)"]
    saved = json.loads((tmp_path / "study.json").read_text())
    assert (saved["best"]["trial"], saved["best"]["val_rmse"]) == (record["best"]["trial"], record["best"]["val_rmse"])


def test_a_study_stopped_midway_keeps_the_trials_it_finished(monkeypatch, tmp_path):
    from cinephile.ratings import sweeps
    from cinephile.ratings.config import RatingsConfig

    val = [{**GOOD, "predictions": {"bias": 3.5, "SVD": 3.8, "SVD++": 3.9}} for _ in range(5)]
    monkeypatch.setattr(sweeps.pipeline, "rating_examples", lambda cfg, split, which, params=None:
                        {"train": [GOOD] * 3, "val": val})
    rmse = iter([0.95, 0.93])

    def fake_train(train_raw, val_raw, **settings):
        value = next(rmse, None)
        if value is None:
            raise KeyboardInterrupt  # Ctrl-C during the third trial
        return {**settings, "val_rmse": value, "val_n": len(val_raw)}

    monkeypatch.setattr(sweeps, "train_and_validate", fake_train)
    path = tmp_path / "study.json"
    with pytest.raises(KeyboardInterrupt):
        sweeps.optuna_study(RatingsConfig(residual_to="SVD++"), split=None, n_trials=8, path=str(path))
    saved = json.loads(path.read_text())
    assert saved["n_trials"] == 2 and [t["val_rmse"] for t in saved["trials"]] == [0.95, 0.93]
    assert saved["best"]["val_rmse"] == 0.93 and saved["best"]["trial"] == 1


def test_the_head_variant_trains_a_regression_head_and_scores_with_it(monkeypatch, smol_llama, smol_tokenizer, tiny):
    import copy

    from cinephile.ratings import head, pipeline
    from cinephile.ratings.data import temporal_split
    from cinephile.ratings.instructions import build_examples
    from lora import LoRAConfig, inject_lora
    model = copy.deepcopy(smol_llama)
    inject_lora(model, LoRAConfig.llama(r=4, alpha=8))
    monkeypatch.setattr(pipeline, "load_rating_model", lambda cfg: (model, smol_tokenizer))
    monkeypatch.setattr("cinephile.ratings.sweeps.chat_examples", lambda raw, tok, system: [dict(e) for e in raw])
    monkeypatch.setattr(pipeline, "expected_ratings", lambda *a, **k: pytest.fail("the answers were scored"))
    scored, real = [], head.head_ratings
    monkeypatch.setattr(head, "head_ratings", lambda *a, **k: scored.append(real(*a, **k)) or scored[-1])
    df = temporal_split(tiny.ratings)
    train_raw, val_raw = ([{**e, "predictions": {"SVD++": 3.0}} for e in build_examples(df, tiny.movies, tiny.tags,
                                                                                         which=w)]
                          for w in ("train", "val"))
    row = train_and_validate(train_raw, val_raw, per_user=4, residual_to="SVD++", head=True, lr=1e-2, select=False)
    assert row["head"] is True and row["val_n"] == len(val_raw) and row["kept_epoch"] == 1
    assert len(scored) == 1 and scored[0].shape == (len(val_raw),) and not np.allclose(scored[0], 3.0)  # trained
    truth = np.array([e["rating"] for e in val_raw])
    assert row["val_rmse"] == pytest.approx(float(np.sqrt(np.mean((scored[0] - truth) ** 2))))
