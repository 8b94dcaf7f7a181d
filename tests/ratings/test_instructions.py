"""Instructions from MovieLens: prompts from earlier ratings only, recommender predictions, the adjustment target,
and each user's latest items as the training targets and the sweeps pick them."""

import numpy as np
import pandas as pd
import pytest

from cinephile.io import read_jsonl, write_jsonl
from cinephile.ratings import instructions
from cinephile.ratings.scoring import RESIDUAL_SYSTEM
from cinephile.ratings.data import load_movielens, temporal_split
from cinephile.ratings.instructions import MAX_DISLIKED, MAX_LIKED, build_examples, build_prompt, latest_per_user

from tests.helpers import RATINGS, write_folder


def by_movie(examples):
    return {e["movie_id"]: e for e in examples}


# user 3: seven ratings, so two users have training targets (those after their first three ratings)
RATINGS3 = RATINGS + "".join(f"3,{m},4.0,{10 + m}\n" for m in range(1, 8))


def test_latest_per_user_keeps_each_users_last_items_in_order():
    users = [5, 5, 7, 5, 7, 7, 7]
    assert latest_per_user(users, 2).tolist() == [1, 3, 5, 6]
    assert latest_per_user(users, 1).tolist() == [3, 6]
    assert latest_per_user(users, 10).tolist() == list(range(7))
    assert latest_per_user([], 1).tolist() == []


@pytest.mark.parametrize("n", [0, -1, 1.5, True, None])
def test_latest_per_user_refuses_a_count_below_one(n):
    with pytest.raises(ValueError, match=rf"per_user must be a whole number >= 1 .*got {n!r}"):
        latest_per_user([1, 2], n)


def test_build_examples_latest_picks_with_the_same_rule(tmp_path):
    ml = load_movielens(write_folder(tmp_path / "ml", ratings=RATINGS3))
    split = temporal_split(ml.ratings)
    every = build_examples(split, ml.movies, ml.tags, which="train", max_per_user=None)
    latest = build_examples(split, ml.movies, ml.tags, which="train", max_per_user=1, pick="latest")
    users = [e["user_id"] for e in every]
    assert [e["movie_id"] for e in latest] == [every[i]["movie_id"] for i in latest_per_user(users, 1)]
    assert len({e["user_id"] for e in latest}) == len(latest) == 2
    assert np.all([e["split"] == "train" for e in latest])


# ---------------------------------------------------------------- examples

def test_val_and_test_prompts_show_only_the_training_period(tiny):
    df = temporal_split(tiny.ratings)
    val, = build_examples(df, tiny.movies, tiny.tags, which="val")
    test, = build_examples(df, tiny.movies, tiny.tags, which="test")
    assert (val["movie_id"], val["n_history"], test["movie_id"], test["n_history"]) == (6, 5, 7, 5)
    assert val["liked"] == ["Heat (1995)", "The Matrix (1999)"]  # most recent first, movie 6 not yet rated
    assert val["disliked"] == ["Babylon 5", "Toy Story (1995)"]
    # the val rating (Sabrina, 5.0) is after the training period: no recommender saw it, nor does the prompt
    assert test["liked"] == val["liked"] and "Sabrina" not in test["prompt"]
    assert test["user_mean"] == pytest.approx((5 + 1 + 4 + 2 + 3) / 5, abs=1e-4)
    assert "average rating so far: 3.0\n" in test["prompt"]
    counted, = build_examples(df, tiny.movies, tiny.tags, which="test", counts=True)
    assert "average rating so far: 3.0 (5 ratings)" in counted["prompt"]
    assert test["response"] == "Rating: 4.5" and test["rating"] == 4.5


def test_recent_ratings_are_shown_with_their_values_newest_first_and_only_from_the_training_period(tiny):
    df = temporal_split(tiny.ratings)
    plain, = build_examples(df, tiny.movies, tiny.tags, which="test")
    shown, = build_examples(df, tiny.movies, tiny.tags, which="test", recent=3)
    line = "Recent ratings, newest first: Casino (1995) 3.0; Babylon 5 2.0; Heat (1995) 4.0"
    assert line in shown["prompt"].splitlines() and "Liked:" not in shown["prompt"]
    assert "Sabrina" not in shown["prompt"]  # the validation rating is after the training period
    assert shown["recent"] == plain["recent"] == [["Casino (1995)", 3.0], ["Babylon 5", 2.0], ["Heat (1995)", 4.0],
                                                  ["Toy Story (1995)", 1.0], ["The Matrix (1999)", 5.0]]
    assert instructions.showing_recent([plain], 3)[0]["prompt"] == shown["prompt"]
    assert instructions.showing_recent([shown], 0)[0]["prompt"] == plain["prompt"]  # liked and disliked again
    key = (plain["user_id"], plain["movie_id"])
    predicted, = instructions.with_predictions([shown], {"SVD++": {key: 3.5}})
    assert line in predicted["prompt"] and "SVD++ 3.50" in predicted["prompt"]  # re-rendering keeps the ratings
    res, = instructions.as_residual([predicted], "SVD++")
    assert line in res["prompt"]
    with pytest.raises(ValueError, match="call showing_recent before as_residual"):
        instructions.showing_recent([res], 2)
    with pytest.raises(ValueError, match="from 0 to 8, got 9"):
        instructions.showing_recent([plain], 9)
    with pytest.raises(ValueError, match="recent must be a whole number from 0 to 8, got -1"):
        build_examples(df, tiny.movies, tiny.tags, which="test", recent=-1)
    old = {k: v for k, v in plain.items() if k != "recent"}  # an example written before it kept recent ratings
    with pytest.raises(ValueError, match="example 0 has no recent ratings; build the examples again"):
        instructions.showing_recent([old], 2)


def test_shared_history_shows_a_users_training_targets_the_ratings_before_the_earliest(tiny):
    df = temporal_split(tiny.ratings)  # user 1: train movies 1-5 (positions 0-4); targets need 3 earlier ratings
    own = by_movie(build_examples(df, tiny.movies, tiny.tags, which="train", max_per_user=None))
    shared = by_movie(build_examples(df, tiny.movies, tiny.tags, which="train", max_per_user=None,
                                     shared_history=True))
    assert sorted(shared) == sorted(own) == [4, 5]
    assert (own[4]["n_history"], own[5]["n_history"]) == (3, 4)  # each target its own past
    assert shared[4]["n_history"] == shared[5]["n_history"] == 3  # both: the ratings before movie 4
    assert shared[5]["liked"] == own[4]["liked"] and "Babylon 5" not in shared[5]["prompt"].split("Target movie")[0]
    head = [e["prompt"].split("Target movie:")[0] for e in shared.values()]
    assert head[0] == head[1]  # one beginning: RatingLoss runs it once
    assert shared[5]["rating"] == own[5]["rating"] and shared[5]["item_mean"] == own[5]["item_mean"]
    test_plain, = build_examples(df, tiny.movies, tiny.tags, which="test")
    test_shared, = build_examples(df, tiny.movies, tiny.tags, which="test", shared_history=True)
    assert test_shared == test_plain  # val / test targets already share the training period


def test_features_genres_item_mean_and_tags(tiny):
    df = temporal_split(tiny.ratings)
    test, = build_examples(df, tiny.movies, tiny.tags, which="test")
    # train period: Action 5,4 (4.5 vs the user's 3.0) and Crime 4,3 (3.5) preferred; Comedy seen once
    assert (test["preferred_genres"], test["avoided_genres"]) == (["Action", "Crime"], [])
    assert test["item_mean"] == 1.0  # only user 2's train rating of Jumanji
    assert test["tags"] == ["classic", "board game", "fun"]  # "future" (3 times) is tagged after the rating
    assert "Tags: classic, board game, fun" in test["prompt"] and "Target movie: Jumanji (1995)" in test["prompt"]


def test_train_targets_exclude_their_own_rating_from_the_item_mean(tiny):
    df = temporal_split(tiny.ratings)
    train = build_examples(df, tiny.movies, tiny.tags, which="train", max_per_user=None)
    assert {(e["user_id"], e["movie_id"]) for e in train} == {(1, 4), (1, 5)}  # >= 3 earlier, train only
    casino = by_movie(train)[5]
    assert casino["item_mean"] == 4.0 and casino["item_count"] == 1  # user 2's 4.0, not user 1's own 3.0
    assert by_movie(train)[4]["item_mean"] is None and "Movie's average rating: unknown" in by_movie(train)[4]["prompt"]


def test_real_train_examples_are_capped_deterministic_and_use_only_the_past(real_dir):
    data = load_movielens(real_dir)
    df = temporal_split(data.ratings[data.ratings["userId"] <= 20])
    examples = build_examples(df, data.movies, data.tags, which="train", max_per_user=4, seed=1)
    per_user = pd.Series([e["user_id"] for e in examples]).value_counts()
    assert per_user.max() == 4 and per_user.index.nunique() == 20
    assert examples == build_examples(df, data.movies, data.tags, which="train", max_per_user=4, seed=1)
    other = build_examples(df, data.movies, data.tags, which="train", max_per_user=4, seed=2)
    assert [e["movie_id"] for e in other] != [e["movie_id"] for e in examples]
    latest = build_examples(df, data.movies, data.tags, which="train", max_per_user=2, pick="latest")
    for user, g in df[df["split"] == "train"].groupby("userId"):  # each user's two most recent train ratings
        ordered = g.sort_values(["timestamp", "movieId"], kind="stable")
        assert [e["movie_id"] for e in latest if e["user_id"] == user] == ordered["movieId"].tolist()[-2:]
    with pytest.raises(ValueError, match="pick must be 'random' or 'latest'"):
        build_examples(df, data.movies, data.tags, which="train", pick="oldest")
    rows = df.set_index(["userId", "movieId"])
    shown = {m.movieId: m.name if pd.isna(m.year) else f"{m.name} ({m.year})" for m in data.movies.itertuples()}
    for e in examples:
        row = rows.loc[(e["user_id"], e["movie_id"])]
        assert row["split"] == "train" and e["n_history"] >= 3
        user = df[df["userId"] == e["user_id"]].reset_index(drop=True)
        k = user.index[user["movieId"] == e["movie_id"]][0]
        assert k == e["n_history"]
        assert e["user_mean"] == pytest.approx(user["rating"][:k].mean(), abs=1e-4)
        window = user.iloc[max(0, k - 20):k].iloc[::-1]  # default history_size, most recent first
        assert e["liked"] == [shown[m] for m in window.loc[window["rating"] >= 4.0, "movieId"]][:instructions.MAX_LIKED]
        assert e["disliked"] == [shown[m] for m in window.loc[window["rating"] <= 2.0, "movieId"]][:instructions.MAX_DISLIKED]
        assert e["prompt"] == e["prompt"].strip() and e["response"] == f"Rating: {e['rating']:.1f}"


def test_build_examples_rejects_bad_arguments(tiny):
    df = temporal_split(tiny.ratings)
    with pytest.raises(ValueError, match="which must be one of"):
        build_examples(df, tiny.movies, tiny.tags, which="dev")
    with pytest.raises(ValueError, match="no 'split' column; pass the output of temporal_split"):
        build_examples(tiny.ratings, tiny.movies, tiny.tags)
    with pytest.raises(ValueError, match="split_df has 1 ratings of movies missing from movies; load both"):
        build_examples(df, tiny.movies[tiny.movies["movieId"] != 3], tiny.tags)
    with pytest.raises(ValueError, match="like must be greater than dislike"):
        build_examples(df, tiny.movies, tiny.tags, like=2.0, dislike=3.0)


def test_build_prompt_is_compact_and_complete():
    liked = [f"Movie {k} (2000)" for k in range(12)]
    prompt = build_prompt(liked, ["Bad (1990)"] * 9, ["Drama"], [], "Heat", 1995, ["Action", "Crime"], [],
                          3.84, None)
    lines = prompt.split("\n")
    assert prompt == prompt.strip() and lines[0].startswith("Predict how this user rates")
    assert lines[1] == "Liked: " + "; ".join(liked[:MAX_LIKED])
    assert lines[2].count("Bad (1990)") == MAX_DISLIKED
    assert "Avoided genres: none" in lines and "Tags: none" in lines and "Preferred genres: Drama" in lines
    assert "Target movie: Heat (1995)" in lines and "Genres: Action, Crime" in lines
    assert "User's average rating so far: 3.8" in lines and "Movie's average rating: unknown" in lines
    assert "answer 'Rating: x.x'" in lines[0] and lines[-1].startswith("Movie's average rating")
    assert "Target movie: Babylon 5" in build_prompt([], [], [], [], "Babylon 5", None, [], [], None, None)


def test_examples_round_trip_through_jsonl(tiny, tmp_path):
    examples = build_examples(temporal_split(tiny.ratings), tiny.movies, tiny.tags, which="test")
    path = write_jsonl(tmp_path / "out" / "test.jsonl", examples)
    assert read_jsonl(path) == examples
    assert [p.name for p in path.parent.iterdir()] == ["test.jsonl"]


def test_build_examples_on_an_empty_split_names_the_problem(tiny):
    df = temporal_split(tiny.ratings, n_val=0)
    with pytest.raises(ValueError, match="no 'val' examples: split_df has 0 val ratings"):
        build_examples(df, tiny.movies, tiny.tags, which="val")


def test_residual_examples_ask_for_the_adjustment_to_the_recommender(tiny):
    df = temporal_split(tiny.ratings)
    test, = build_examples(df, tiny.movies, tiny.tags, which="test")  # true rating 4.5
    key = (test["user_id"], test["movie_id"])
    shown, = instructions.with_predictions([test], {"bias": {key: 3.0}, "SVD++": {key: 3.79}})
    res, = instructions.as_residual([shown], "SVD++")
    assert res["anchor"] == 3.79 and res["rating"] == 4.5 and res["response"] == "Adjustment: +0.5"  # 0.71 -> +0.5
    first, rest = res["prompt"].split("\n", 1)
    assert first == "Adjust the SVD++ prediction."  # the system prompt (RESIDUAL_SYSTEM) states the answer format
    assert "'Adjustment: +x.x'" in RESIDUAL_SYSTEM
    assert rest == shown["prompt"].split("\n", 1)[1] and "SVD++ 3.79" in rest  # same features, prediction shown
    assert [instructions.nearest_adjustment(r) for r in (-3.1, -0.26, 0.24, 2.7)] == [-2.0, -0.5, 0.0, 2.0]
    assert instructions.nearest_index([0.0, 0.5, 1.0], [0.25, 0.26, -4.0, 9.0]).tolist() == [0, 1, 0, 2]  # a tie: the first
    with pytest.raises(ValueError, match="has no 'SVD' prediction .* add it with with_predictions"):
        instructions.as_residual([shown], "SVD")


@pytest.mark.parametrize("bad, error, message", [
    ({"response": None}, TypeError, r"example 1: response must be a string, got None; build examples"),
    ({"prompt": 3}, TypeError, r"example 1: prompt must be a string, got 3"),
    ({"response": ""}, ValueError, r"example 1: response is empty"),
    ({"rating": "four"}, TypeError, r"example 1: rating must be a number, got 'four'"),
    ({"rating": float("nan")}, ValueError, r"example 1: rating nan is not a rating on the 0\.5-5 scale"),
    ({"rating": 0.0}, ValueError, r"example 1: rating 0\.0 is not a rating on the 0\.5-5 scale"),
])
def test_examples_are_checked_before_use_naming_index_and_field(tiny, bad, error, message):
    test, = build_examples(temporal_split(tiny.ratings), tiny.movies, tiny.tags, which="test")
    assert instructions.check_rating_examples([test, test]) == [test, test]
    key = (test["user_id"], test["movie_id"])
    shown, = instructions.with_predictions([test], {"SVD++": {key: 3.79}})
    with pytest.raises(error, match=message):
        instructions.check_rating_examples([test, {**test, **bad}])
    with pytest.raises(error, match=message):
        instructions.with_predictions([test, {**test, **bad}], {"SVD++": {key: 3.79}})
    with pytest.raises(error, match=message):
        instructions.as_residual([shown, {**shown, **bad}], "SVD++")
    with pytest.raises(TypeError, match="example 0 is a str, not a dict"):
        instructions.check_rating_examples(["Rating: 4.0"])
