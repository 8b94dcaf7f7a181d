"""Rating baselines, metrics and the predictions plot (tiny tables + the real data)."""

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from cinephile.ratings import BiasBaseline, global_mean, item_mean, plot_predictions, rating_metrics, user_mean

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "movielens" / "ml-latest-small"


# ---------------------------------------------------------------- baselines

TRAIN = pd.DataFrame({"userId": [1, 1, 2, 2, 3], "movieId": [10, 20, 10, 30, 20], "rating": [5.0, 3.0, 4.0, 1.0, 2.0]})
TARGET = pd.DataFrame({"userId": [1, 2, 9], "movieId": [30, 20, 99]})  # user 9 and movie 99 unseen


def test_mean_baselines_fall_back_to_the_global_mean():
    mu = 15.0 / 5
    np.testing.assert_allclose(global_mean(TRAIN, TARGET), [mu, mu, mu])
    np.testing.assert_allclose(user_mean(TRAIN, TARGET), [4.0, 2.5, mu])
    np.testing.assert_allclose(item_mean(TRAIN, TARGET), [1.0, 2.5, mu])


def test_bias_baseline_recovers_biases_and_clips():
    rng = np.random.default_rng(0)
    users, items = np.repeat(np.arange(30), 40), np.tile(np.arange(40), 30)
    b_u, b_i = rng.normal(0, 0.5, 30), rng.normal(0, 0.7, 40)
    df = pd.DataFrame({"userId": users, "movieId": items, "rating": 3.5 + b_u[users] + b_i[items]})
    model = BiasBaseline(reg_user=0.01, reg_item=0.01, n_epochs=30).fit(df)
    np.testing.assert_allclose(model.predict(df), np.clip(df["rating"], 0.5, 5), atol=1e-2)
    extreme = pd.DataFrame({"userId": [0, 0], "movieId": [0, 0], "rating": [5.0, 5.0]})
    far = BiasBaseline(reg_user=0, reg_item=0).fit(pd.concat([extreme, df.assign(rating=df.rating + 3)]))
    assert far.predict(df).max() == 5.0
    unseen = model.predict(pd.DataFrame({"userId": [999], "movieId": [999]}))
    assert unseen[0] == pytest.approx(df["rating"].mean())


def test_baselines_refuse_unfitted_and_leaky_input():
    with pytest.raises(RuntimeError, match=r"not fitted; call fit\(train\) first"):
        BiasBaseline().predict(TARGET)
    leaky = TRAIN.assign(split=["train", "train", "train", "val", "test"])
    with pytest.raises(ValueError, match="train holds val/test rows; fit on split_df"):
        user_mean(leaky, TARGET)
    with pytest.raises(ValueError, match="train is missing column 'rating'"):
        BiasBaseline().fit(TRAIN.drop(columns="rating"))
    with pytest.raises(ValueError, match="train is empty"):
        global_mean(TRAIN.iloc[:0], TARGET)


@pytest.mark.skipif(not (REAL / "ratings.csv").is_file(), reason="shared MovieLens data not present")
def test_bias_baseline_beats_global_mean_on_real_test_split():
    from cinephile.movielens import load_movielens, temporal_split
    df = temporal_split(load_movielens(REAL).ratings)
    train, test = df[df["split"] == "train"], df[df["split"] == "test"]
    rmse = {name: rating_metrics(test["rating"], pred)["rmse"] for name, pred in [
        ("global", global_mean(train, test)), ("bias", BiasBaseline().fit(train).predict(test))]}
    assert rmse["bias"] < rmse["global"]


# ---------------------------------------------------------------- metrics

def test_rating_metrics_by_hand():
    m = rating_metrics([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 3.0, 5.0])
    assert m["rmse"] == pytest.approx(np.sqrt((0.25 + 1) / 4)) and m["mae"] == pytest.approx(1.5 / 4)
    assert m["n"] == 4 and m["spearman"] == pytest.approx(1.0) and 0.9 < m["pearson"] < 1.0
    assert rating_metrics([1, 2, 3], [3, 2, 1])["pearson"] == pytest.approx(-1.0)


def test_constant_predictions_give_nan_correlations_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = rating_metrics([1.0, 4.0, 5.0], [3.5, 3.5, 3.5])
    assert np.isnan(m["pearson"]) and np.isnan(m["spearman"]) and m["mae"] == pytest.approx(4.5 / 3)


def test_rating_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="1-D of equal length"):
        rating_metrics([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="y_pred has 1 missing values .* drop the failed predictions"):
        rating_metrics([1.0, 2.0], [1.0, None])
    with pytest.raises(ValueError, match="y_true is empty"):
        rating_metrics([], [])


# ---------------------------------------------------------------- plot

def test_plot_predictions_writes_a_figure_atomically(tmp_path):
    y = np.array([1.0, 3.0, 4.5, 5.0])
    fig = plot_predictions(y, {"bias": y + 0.3, "llm": [4.0, None, 4.0, 4.5]}, tmp_path / "plots" / "pred.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    scatter = fig.axes[0]
    assert [len(c.get_offsets()) for c in scatter.collections] == [4, 3]  # the failed parse is left out
    assert "bias (RMSE 0.300)" in [t.get_text() for t in scatter.get_legend().get_texts()]
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["pred.png"]
    assert (tmp_path / "plots" / "pred.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"preds\['llm'\] has 2 values but y_true has 4"):
        plot_predictions(y, {"llm": [1.0, 2.0]})
