"""Validation sweeps: which instructions a variant trains on, and the recommender reference rows."""

import numpy as np
import pytest

from cinephile.ratings.sweeps import pick_per_user, reference_rows, train_and_validate


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
