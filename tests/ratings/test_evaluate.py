"""Reading ratings and adjustments out of generated text; the record of a run."""

import math

import numpy as np

import pandas as pd
import pytest

from cinephile.ratings.evaluate import parse_adjustment, parse_rating, results_record, results_table, slices


@pytest.mark.parametrize("text, expected", [
    ("Rating: 3.5", 3.5), ("rating 4", 4.0), ("I'd say 4.5/5", 4.5), ("Rating: 3.3", 3.5),
    ("RATING=2.74 because", 2.5), ("5 stars", 5.0), ("Rating: 0.5", 0.5),
    ("Rating: 6", None), ("Rating: 0.2", None), ("Rating: -1", None), ("no idea", None), ("", None), (None, None),
    ("4,5", None), ("Rating: .5", 0.5), ("on a scale of 1 to 5 I'd say 3", 3.0), ("Rating: 4.5.", 4.5),
    ("I rate it 4.5 out of 5.0", 4.5), ("3 or 4", None), ("-2", None), ("Rating: 4.5.1", None),
    ("Rating: 4, I think", 4.0), ("Rating: 4.5/5", 4.5), ("Rating: +4", 4.0), ("rating:5.0", 5.0),
])
def test_parse_rating(text, expected):
    assert parse_rating(text) == expected


@pytest.mark.parametrize("text", [
    "Rating: \u22121", "Rating: \u22120.5", "\u22122", "Rating: \uff0d1",  # Unicode minus signs keep the sign
    "Rating: 1e1", "1e1", "Rating: 1e-1", "Rating: 2E0", "I'd say 1e1",  # exponents are not ratings
    "Rating: 4.5.2", "4.5.2", "Rating: 4,5", "Rating: 4.5stars", "Rating: 0x4",  # partial numbers
])
def test_parse_rating_refuses_numbers_it_cannot_read_whole(text):
    assert parse_rating(text) is None


@pytest.mark.parametrize("text, expected", [
    ("Adjustment: +0.5", 0.5), ("Adjustment: -1.5", -1.5), ("adjustment 0", 0.0), ("Adjustment: +0.3", 0.5),
    ("Adjustment: -2.0", -2.0), ("Adjustment: +2.5", None), ("Adjustment: -3", None), ("Rating: 4.5", None),
    ("", None), (None, None), ("Adjustment: +0,5", None), ("Adjustment: -.5", -0.5),
    ("Adjustment: \u22120.5", -0.5), ("Adjustment: \u22121.5", -1.5), ("Adjustment: \u22123", None),
    ("Adjustment: +1e0", None), ("Adjustment: 1e-1", None), ("Adjustment: 0.5.1", None), ("Adjustment: +0.5.", 0.5),
])
def test_parse_adjustment(text, expected):
    assert parse_adjustment(text) == expected


def test_results_record_writes_missing_correlations_as_null():
    table = pd.DataFrame([{"model": "a", "rmse": 1.0, "pearson": float("nan"), "n": 2}])
    intervals = pd.DataFrame([{"model": "a", "against": "b", "rmse_diff": -0.1, "beats": True}])
    record = results_record(table, intervals, n_test_pairs=2)
    assert record["models"] == [{"model": "a", "rmse": 1.0, "pearson": None, "n": 2}]
    assert record["intervals"][0]["against"] == "b" and record["n_test_pairs"] == 2
    assert not any(isinstance(v, float) and math.isnan(v) for v in record["models"][0].values())


def test_slices_split_cold_and_warm_movies_and_mark_each_users_last_pair():
    examples = [{"user_id": u, "item_count": c} for u, c in [(1, 0), (1, 5), (1, 6), (2, 40), (2, 3), (3, 7)]]
    parts = slices(examples, cold_max=5)
    assert list(parts) == ["all", "cold movies (<= 5 training ratings)", "warm movies (> 5 training ratings)",
                           "each user's last rating"]
    assert parts["all"].all()
    assert parts["cold movies (<= 5 training ratings)"].tolist() == [True, True, False, False, True, False]
    assert parts["warm movies (> 5 training ratings)"].tolist() == [False, False, True, True, False, True]
    assert parts["each user's last rating"].tolist() == [False, False, True, False, True, True]


def test_results_table_adds_the_spread_over_seeds():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    seeds = np.stack([y + 0.1, y + 0.3, y - 0.2])  # RMSE 0.1, 0.3, 0.2
    table = results_table(y, {"model": seeds[0], "other": y + 1}, {"model": seeds})
    row = table.set_index("model").loc["model"]
    assert row["rmse"] == pytest.approx(0.1) and row["n_seeds"] == 3
    assert row["rmse_seeds_mean"] == pytest.approx(0.2) and row["rmse_seeds_sd"] == pytest.approx(0.1)
    assert math.isnan(table.set_index("model").loc["other", "rmse_seeds_mean"])


def test_results_record_keeps_each_slice_with_its_count():
    table = pd.DataFrame([{"model": "a", "rmse": 1.0, "n": 3}])
    intervals = pd.DataFrame([{"model": "a", "against": "b", "rmse_diff": -0.1}])
    record = results_record(table, intervals, {"cold": (table, intervals)}, n_test_pairs=3)
    assert record["slices"]["cold"] == {"n": 3, "models": record["models"], "intervals": record["intervals"]}
    assert record["n_test_pairs"] == 3
