"""Factor models tuned on validation and fitted with several seeds (synthetic low-rank ratings)."""

import numpy as np
import pandas as pd
import pytest

from cinephile.ratings import tuning
from cinephile.ratings.evaluate import rating_metrics

pytest.importorskip("surprise")


@pytest.fixture(scope="module")
def low_rank():
    """Ratings 3 + u.v (rank 2) of 40 users x 30 movies, 60% observed: train, val and test disjoint."""
    rng = np.random.default_rng(0)
    u, v = rng.normal(0, 0.8, (40, 2)), rng.normal(0, 0.8, (30, 2))
    users, items = np.meshgrid(np.arange(40), np.arange(30), indexing="ij")
    df = pd.DataFrame({"userId": users.ravel(), "movieId": items.ravel()})
    df["rating"] = np.clip(3 + (u[df.userId] * v[df.movieId]).sum(1), 0.5, 5)
    df = df.sample(frac=0.6, random_state=0).reset_index(drop=True)
    return df.iloc[:500], df.iloc[500:600], df.iloc[600:]


def test_grid_is_every_combination():
    assert tuning.grid(a=[1, 2], b=["x"]) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    assert all(tuning.GRIDS[name] for name in ("SVD", "SVD++"))


def test_tune_keeps_the_setting_with_the_lowest_validation_rmse(low_rank):
    train, val, _ = low_rank
    settings = [{"n_factors": 2, "n_epochs": 60, "reg_all": 5.0}, {"n_factors": 2, "n_epochs": 60, "reg_all": 0.02}]
    best, rows = tuning.tune("SVD", train, val, settings, progress=False)
    assert best == settings[1] and [r["params"] for r in rows] == settings
    assert rows[1]["val_rmse"] < rows[0]["val_rmse"] and all(r["fit_s"] >= 0 for r in rows)
    with pytest.raises(ValueError, match="no settings to try for SVD"):
        tuning.tune("SVD", train, val, [])
    with pytest.raises(ValueError, match="no validation ratings"):
        tuning.tune("SVD", train, val.iloc[:0], settings)


def test_tuned_models_fit_every_seed_on_the_target_pairs(low_rank):
    train, val, test = low_rank
    grids = {"SVD": [{"n_factors": 2, "n_epochs": 30}]}
    out = tuning.tuned_models(train, val, test, ("SVD",), seeds=3, grids=grids, progress=False)["SVD"]
    assert out.preds.shape == (3, len(test)) and out.seeds == (0, 1, 2) and out.params == grids["SVD"][0]
    assert not np.allclose(out.preds[0], out.preds[1])  # another seed, another fit
    rmse = out.rmse_by_seed(test["rating"])
    assert rmse[0] == pytest.approx(rating_metrics(test["rating"], out.preds[0])["rmse"])
    untuned = tuning.tuned_models(train, val, test, ("SVD",), seeds=1, grids={}, progress=False)["SVD"]
    assert untuned.params == {} and untuned.grid == []  # surprise's defaults
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        tuning.tuned_models(train, val, test, ("SVD",), seeds=0)
