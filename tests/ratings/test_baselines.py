"""Rating baselines, metrics and the predictions plot (tiny tables + the real data)."""

import warnings

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from cinephile.ratings.baselines import BiasBaseline, fit_many, global_mean, item_mean, recommender_predictions, surprise_predict, user_mean
from cinephile.ratings.evaluate import interval_table, paired_bootstrap, plot_predictions, rating_metrics

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


@pytest.mark.parametrize("column, value", [("rating", np.nan), ("rating", np.inf), ("rating", "four"),
                                           ("userId", np.nan), ("movieId", None)])
@pytest.mark.parametrize("fit", [lambda t: BiasBaseline().fit(t), lambda t: global_mean(t, TARGET),
                                 lambda t: user_mean(t, TARGET)])
def test_baselines_refuse_missing_values_instead_of_predicting_nan(column, value, fit):
    bad = TRAIN.astype(object)
    bad.loc[3, column] = value
    with pytest.raises(ValueError, match=r"train has 1 rows with a missing id or a rating that is not a finite number, "
                                         r"first .* \(index 3\); drop them first"):
        fit(bad)


def test_bias_baseline_beats_global_mean_on_real_test_split(shared_data):
    from cinephile.ratings.data import load_movielens, temporal_split
    df = temporal_split(load_movielens(shared_data / "movielens" / "ml-latest-small").ratings)
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


# ---------------------------------------------------------------- scikit-surprise, stacking features, intervals

@pytest.fixture(scope="module")
def real_split(shared_data):
    from cinephile.ratings.data import load_movielens, temporal_split
    return temporal_split(load_movielens(shared_data / "movielens" / "ml-latest-small").ratings)


def test_our_bias_baseline_matches_surprise_baselineonly_within_0_002(real_split):
    pytest.importorskip("surprise")
    train, test = real_split[real_split["split"] == "train"], real_split[real_split["split"] == "test"]
    ours = rating_metrics(test["rating"], BiasBaseline().fit(train).predict(test))["rmse"]
    theirs = rating_metrics(test["rating"], surprise_predict("BaselineOnly", train, test))["rmse"]
    assert abs(ours - theirs) < 0.002


def test_surprise_predict_refuses_an_unknown_model_by_name():
    with pytest.raises(ValueError, match="unknown surprise model 'KNN'; choose one of"):
        surprise_predict("KNN", TRAIN, TARGET)


def test_training_pairs_get_out_of_fold_predictions():
    train = pd.DataFrame({"userId": [1, 1, 1, 2, 2, 3, 3], "movieId": [10, 20, 30, 10, 20, 20, 30],
                          "rating": [5.0, 5.0, 5.0, 1.0, 2.0, 3.0, 3.0]})
    pairs = {"train": [(2, 10)], "test": [(2, 30)]}
    out = recommender_predictions(train, pairs, models=("bias",), folds=2)
    without = train.drop(index=3)  # the (2, 10) rating itself
    assert out["bias"][(2, 10)] == pytest.approx(BiasBaseline().fit(without).predict(pd.DataFrame(
        {"userId": [2], "movieId": [10]}))[0])
    assert out["bias"][(2, 30)] == pytest.approx(BiasBaseline().fit(train).predict(pd.DataFrame(
        {"userId": [2], "movieId": [30]}))[0])
    one_fit = recommender_predictions(train, {"train": [(2, 10), (3, 30)], "val": [(1, 30)]}, folds=1)["bias"]
    both_out = BiasBaseline().fit(train.drop(index=[3, 6]))  # one refit without both training pairs
    assert one_fit[(3, 30)] == pytest.approx(both_out.predict(pd.DataFrame({"userId": [3], "movieId": [30]}))[0])
    with pytest.raises(ValueError, match="folds must be >= 1"):
        recommender_predictions(train, pairs, folds=0)


@pytest.mark.parametrize("pairs, models, message", [
    ({"train": [(2, 10), (2, 99)]}, ("bias",), r"training pair \(user 2, movie 99\) is not a rating in train \(1 such "
                                               r"pairs\): training pairs are predicted out of fold.*under another split"),
    ({"train": [(9, 10)]}, ("bias",), r"training pair \(user 9, movie 10\) is not a rating in train"),
    ({"test": [(2, 30)]}, ("bias", "KNN"), r"unknown recommender 'KNN'; choose from \['bias', 'BaselineOnly'"),
])
def test_recommender_predictions_refuse_bad_pairs_and_names_before_fitting(pairs, models, message, monkeypatch):
    import cinephile.ratings.baselines as ratings_module

    monkeypatch.setattr(ratings_module.BiasBaseline, "fit", lambda *a: pytest.fail("fitted before checking"))
    with pytest.raises(ValueError, match=message):
        recommender_predictions(TRAIN, pairs, models=models)


def test_recommender_predictions_accept_unseen_pairs_outside_train():
    out = recommender_predictions(TRAIN, {"train": [(1, 10)], "test": [(9, 99)]})["bias"]
    assert out[(9, 99)] == pytest.approx(TRAIN["rating"].mean()) and (1, 10) in out


def test_paired_bootstrap_interval():
    rng = np.random.default_rng(0)
    y = rng.uniform(0.5, 5, 400)
    good, bad = y + rng.normal(0, 0.5, 400), y + rng.normal(0, 1.0, 400)
    res = paired_bootstrap(y, good, bad)
    assert res["lo"] <= res["diff"] <= res["hi"] < 0 and res["n"] == 400
    same = paired_bootstrap(y, good, good)
    assert same["lo"] == same["hi"] == same["diff"] == 0
    table = interval_table(y, {"good": good, "bad": bad}, "good", ["bad"])
    assert table.loc[0, "beats"] and table.loc[0, "against"] == "bad"
    with pytest.raises(ValueError, match="equal length"):
        paired_bootstrap(y, good[:3], bad)


def test_paired_bootstrap_over_users_is_wider_when_a_users_pairs_move_together():
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(120), 5)
    y = rng.uniform(0.5, 5, len(users))
    shift = rng.normal(0, 0.8, 120)[users]  # each user's error is shared by their five pairs
    a, b = y + shift + rng.normal(0, 0.2, len(y)), y + rng.normal(0, 0.8, len(y))
    by_pair, by_user = paired_bootstrap(y, a, b), paired_bootstrap(y, a, b, groups=users)
    assert by_user["diff"] == by_pair["diff"] and by_user["n_groups"] == 120 and by_pair["n_groups"] == len(y)
    assert by_user["hi"] - by_user["lo"] > 1.5 * (by_pair["hi"] - by_pair["lo"])
    singletons = paired_bootstrap(y, a, b, groups=np.arange(len(y)))  # one pair per group: the pair bootstrap
    assert (singletons["lo"], singletons["hi"]) == pytest.approx((by_pair["lo"], by_pair["hi"]))
    with pytest.raises(ValueError, match="one group per pair"):
        paired_bootstrap(y, a, b, groups=users[:10])
    with pytest.raises(ValueError, match="one group"):
        paired_bootstrap(y, a, b, groups=np.zeros(len(y)))


def test_fit_many_side_by_side_gives_the_fits_of_one_process():
    pytest.importorskip("surprise")
    tasks = [("SVD", TRAIN, TARGET, seed, {"n_factors": 2, "n_epochs": 5}) for seed in (0, 1)]
    tasks.append(("bias", TRAIN, TARGET, 0, None))
    alone, side_by_side = fit_many(tasks, n_jobs=1), fit_many(tasks, n_jobs=2)
    for (a, seconds), (b, _) in zip(alone, side_by_side):
        np.testing.assert_array_equal(a, b)
        assert seconds >= 0
    assert not np.array_equal(alone[0][0], alone[1][0])  # the seed reaches the fit
