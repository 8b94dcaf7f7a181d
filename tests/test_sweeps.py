"""Validation sweeps: which instructions a variant trains on, and the recommender reference rows."""

import numpy as np
import pytest

from cinephile.sweeps import pick_per_user, reference_rows, train_and_validate


def test_pick_per_user_keeps_each_users_latest_instructions():
    examples = [{"user_id": u, "t": t} for u in (2, 1) for t in range(4)]  # time order within each user
    picked = pick_per_user(examples, 2)
    assert [(e["user_id"], e["t"]) for e in picked] == [(1, 2), (1, 3), (2, 2), (2, 3)]
    assert len(pick_per_user(examples, 10)) == 8


def test_reference_rows_score_the_prompt_predictions():
    val = [{"rating": 4.0, "predictions": {"bias": 3.0}}, {"rating": 2.0, "predictions": {"bias": 2.0}}]
    (row,) = reference_rows(val, ("bias",))
    assert row["variant"] == "bias (recommender)" and row["val_n"] == 2
    assert row["val_rmse"] == pytest.approx(np.sqrt(0.5))


def test_unknown_setting_is_refused_before_any_work():
    with pytest.raises(ValueError, match=r"unknown settings \['rank'\]"):
        train_and_validate([], [], rank=8)
