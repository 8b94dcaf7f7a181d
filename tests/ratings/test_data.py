"""MovieLens loading, temporal split and prompt building (tiny synthetic tables + the real data)."""

import logging

import pandas as pd
import pytest

from cinephile.ratings import instructions
from cinephile.io import read_jsonl, write_jsonl
from cinephile.ratings.download import ML_FOLDER
from cinephile.ratings.data import load_movielens, parse_title, temporal_split
from cinephile.ratings.instructions import build_examples, build_prompt, MAX_DISLIKED, MAX_LIKED

from tests.helpers import RATINGS, write_folder


@pytest.fixture(scope="module")
def real_dir(shared_data):
    return shared_data / "movielens" / "ml-latest-small"

@pytest.fixture
def tiny(tmp_path):
    return load_movielens(write_folder(tmp_path / "ml"))


def by_movie(examples):
    return {e["movie_id"]: e for e in examples}


# ---------------------------------------------------------------- loading

def test_load_parses_titles_years_genres_and_tags(tiny):
    movies = tiny.movies.set_index("movieId")
    assert movies.at[1, "name"] == "The Matrix" and movies.at[1, "year"] == 1999
    assert pd.isna(movies.at[4, "year"]) and movies.at[4, "name"] == "Babylon 5"
    assert movies.at[4, "genres"] == [] and movies.at[2, "genres"] == ["Animation", "Children", "Comedy"]
    assert sorted(tiny.tags["tag"].unique()) == ["board game", "classic", "fun", "future", "jungle"]


@pytest.mark.parametrize("title, expected", [
    ("Matrix, The (1999)", ("The Matrix", 1999)),
    ("Postman, The (Postino, Il) (1994)", ("The Postman (Postino, Il)", 1994)),
    ("Good, the Bad and the Ugly, The (1966)", ("The Good, the Bad and the Ugly", 1966)),
    ("Death Note: Desu nôto (2006–2007)", ("Death Note: Desu nôto", 2006)),
    ("Babylon 5", ("Babylon 5", None)),
    ("Ready Player One", ("Ready Player One", None)),
    ("2001: A Space Odyssey (1968) ", ("2001: A Space Odyssey", 1968)),
])
def test_parse_title(title, expected):
    assert parse_title(title) == expected


def test_load_drops_ratings_of_unknown_movies_and_logs_the_count(tmp_path, caplog):
    folder = write_folder(tmp_path, ratings=RATINGS + "1,999,4.0,80\n2,998,3.0,90\n")
    with caplog.at_level(logging.WARNING, logger="cinephile.ratings.data"):
        data = load_movielens(folder)
    assert len(data.ratings) == len(RATINGS.strip().splitlines()) - 1
    assert not data.ratings["movieId"].isin([998, 999]).any()
    assert "dropped 2 of 12 rows: {'movie missing from movies.csv': 2}" in caplog.text
    assert "movie missing from movies.csv: line 12, 13" in caplog.text  # lines of ratings.csv, header is line 1
    assert data.report == {"rows": 12, "kept": 10, "dropped": {"movie missing from movies.csv": 2},
                           "tags": {"rows": 8, "kept": 8, "dropped": {}}, "movies": {"rows": 7, "empty genres": 0}}


def test_load_drops_off_scale_ratings_and_keeps_the_latest_duplicate(tmp_path):
    extra = "1,3,9.0,31\n1,2,0.0,32\n1,5,abc,33\n1,1,2.0,75\n1,1,3.5,74\n"  # movie 1 rated 3 times by user 1
    data = load_movielens(write_folder(tmp_path, ratings=RATINGS + extra))
    assert data.report["dropped"] == {"not a number": 1, "rating outside 0.5-5": 2,
                                      "older duplicate of (userId, movieId)": 2}
    assert data.report["rows"] == 15 and data.report["kept"] == 10
    user1 = data.ratings[data.ratings["userId"] == 1]
    assert user1["movieId"].is_unique
    assert user1.set_index("movieId").loc[1, ["rating", "timestamp"]].tolist() == [2.0, 75]  # the latest one
    df = temporal_split(data.ratings)
    test = df[(df["userId"] == 1) & (df["split"] == "test")]
    assert test["movieId"].tolist() == [1]  # re-rated last: the test target, and not in its own history
    assert not ((df["userId"] == 1) & (df["movieId"] == 1) & (df["split"] != "test")).any()


@pytest.mark.parametrize("row, reason", [
    ("1,1,4.0,1e30", "timestamp not a whole number of seconds"),  # beyond int64
    ("1,1,4.0,inf", "timestamp not a whole number of seconds"),
    ("1,1,4.0,-inf", "timestamp not a whole number of seconds"),
    ("1,1,4.0,80.5", "timestamp not a whole number of seconds"),
    ("2.5,1,4.0,80", "userId or movieId not a whole number"),  # would merge into user 2
    ("1,3.5,4.0,80", "userId or movieId not a whole number"),
    ("1e30,1,4.0,80", "userId or movieId not a whole number"),
    ("1,3,nan,80", "not a number"),
    ("1,3,,80", "not a number"),
    ("1,3,inf,80", "rating outside 0.5-5"),
])
def test_load_drops_and_counts_unusable_rating_rows(tmp_path, caplog, row, reason):
    with caplog.at_level(logging.WARNING, logger="cinephile.ratings.data"):
        data = load_movielens(write_folder(tmp_path, ratings=RATINGS + row + "\n"))
    assert data.report["dropped"] == {reason: 1} and data.report["kept"] == 10
    assert f"ratings.csv: dropped 1 of 11 rows: {{'{reason}': 1}} (first lines: {reason}: line 12)" in caplog.text
    assert data.ratings.equals(load_movielens(write_folder(tmp_path / "clean")).ratings)


def test_load_drops_and_counts_unusable_tags(tmp_path, caplog):
    tags = "userId,movieId,tag,timestamp\n2,7,Classic,65\n3,7,,66\n3,7,  ,67\n3,7,fun,inf\n3,7,fun,1e30\n"
    with caplog.at_level(logging.WARNING, logger="cinephile.ratings.data"):
        data = load_movielens(write_folder(tmp_path, tags=tags))
    assert data.tags["tag"].tolist() == ["classic"] and data.tags["timestamp"].tolist() == [65]
    assert data.report["tags"] == {"rows": 5, "kept": 1, "dropped": {"userId, movieId or timestamp not a whole number": 2,
                                                                     "empty tag": 2}}
    assert "tags.csv: dropped 4 of 5 rows" in caplog.text and "empty tag: line 3, 4" in caplog.text


@pytest.mark.parametrize("row, message", [
    ('3,"Heat, again (1995)",Action', r"movies\.csv lists movieId 3 twice, on lines 4 and 9; keep one of the two rows"),
    ("x,Heat (1995),Action", r"movies\.csv line 9: movieId 'x' is not a whole number; fix or remove that row"),
    ("8.5,Heat (1995),Action", r"movies\.csv line 9: movieId '8\.5' is not a whole number"),
    ("8,,Action", r"movies\.csv line 9: movie 8 has an empty title; fill it in or remove the row"),
    ('8,"  ",Action', r"movies\.csv line 9: movie 8 has an empty title"),
])
def test_load_refuses_bad_movie_rows_naming_the_line(tmp_path, row, message):
    from tests.helpers import MOVIES
    with pytest.raises(ValueError, match=message):
        load_movielens(write_folder(tmp_path, movies=MOVIES + row + "\n"))


def test_load_reads_an_empty_genres_cell_as_no_genres_and_counts_it(tmp_path, caplog):
    from tests.helpers import MOVIES
    with caplog.at_level(logging.WARNING, logger="cinephile.ratings.data"):
        data = load_movielens(write_folder(tmp_path, movies=MOVIES + "8,Ran (1985),\n"))
    assert data.movies.set_index("movieId").at[8, "genres"] == []
    assert data.report["movies"] == {"rows": 8, "empty genres": 1}
    assert "movies.csv: 1 movies have an empty genres cell (read as no genres), first on line 9" in caplog.text


@pytest.mark.parametrize("name", ["ratings.csv", "movies.csv", "tags.csv"])
def test_load_empty_file_names_it_and_the_fix(tmp_path, name):
    folder = write_folder(tmp_path)
    (folder / name).write_bytes(b"")
    with pytest.raises(ValueError, match=rf"{name.replace('.', '[.]')} is empty \(no header line '.+'\); "
                                         r"replace it with the file from https://files\.grouplens\.org"):
        load_movielens(folder)


def test_load_latin1_file_names_the_byte_and_asks_for_utf8(tmp_path):
    from tests.helpers import MOVIES
    folder = write_folder(tmp_path)
    data = (MOVIES + "8,Am\u00e9lie (2001),Comedy\n").encode("latin-1")
    (folder / "movies.csv").write_bytes(data)
    offset = data.index(b"\xe9")
    with pytest.raises(ValueError, match=rf"movies\.csv is not UTF-8: byte {offset} \(line 9\) is 0xe9; save it as UTF-8"):
        load_movielens(folder)


def test_load_malformed_csv_names_the_file(tmp_path):
    folder = write_folder(tmp_path, ratings=RATINGS + '1,2,"4.0,5\n')
    with pytest.raises(ValueError, match=r"ratings\.csv is not a valid CSV \(.+\); replace it"):
        load_movielens(folder)


def test_load_finds_the_folder_under_its_parent(tmp_path):
    write_folder(tmp_path / ML_FOLDER)
    assert len(load_movielens(tmp_path).movies) == 7


def test_load_missing_file_names_it_and_the_expected_files(tmp_path):
    folder = write_folder(tmp_path, tags=None)
    with pytest.raises(FileNotFoundError, match=r"missing tags\.csv; expected files: ratings\.csv, movies\.csv, tags\.csv"):
        load_movielens(folder)


def test_load_missing_column_names_it_and_the_expected_columns(tmp_path):
    folder = write_folder(tmp_path, movies="movieId,title\n1,Heat (1995)\n")
    with pytest.raises(ValueError, match=r"movies\.csv is missing column 'genres'; expected columns: movieId, title, genres"):
        load_movielens(folder)


def test_load_real_data_matches_its_readme_counts(real_dir):
    data = load_movielens(real_dir)
    assert (len(data.ratings), data.ratings["userId"].nunique(), len(data.movies)) == (100_836, 610, 9_742)
    raw = pd.read_csv(real_dir / "movies.csv").set_index("movieId")
    no_genre = raw.index[raw["genres"] == "(no genres listed)"][0]
    movies = data.movies.set_index("movieId")
    assert movies.at[no_genre, "genres"] == []
    assert movies.at[1, "year"] == 1995 and movies.at[1, "name"] == "Toy Story"


# ---------------------------------------------------------------- split

def test_split_leaves_last_out_and_keeps_small_users_in_train(tiny, caplog):
    with caplog.at_level(logging.INFO, logger="cinephile.ratings.data"):
        df = temporal_split(tiny.ratings)
    got = df.set_index(["userId", "movieId"])["split"]
    assert got[(1, 7)] == "test" and got[(1, 6)] == "val"
    assert (got.loc[1].drop([6, 7]) == "train").all()
    assert (got.loc[2] == "train").all()  # 3 ratings < 5 + 1 + 1
    assert "1 users with < 7 ratings" in caplog.text
    assert (temporal_split(tiny.ratings, min_train=6)["split"] == "train").all()


def test_split_rejects_bad_arguments(tiny):
    with pytest.raises(ValueError, match="need n_test >= 0"):
        temporal_split(tiny.ratings, n_test=-1)
    with pytest.raises(ValueError, match="ratings is missing column 'timestamp'"):
        temporal_split(tiny.ratings.drop(columns="timestamp"))


def test_split_real_users_has_no_temporal_leakage(real_dir):
    ratings = load_movielens(real_dir).ratings
    ratings = ratings[ratings["userId"] <= 20]
    df = temporal_split(ratings, n_test=2, n_val=3)
    for _, g in df.groupby("userId"):
        train, later = g[g["split"] == "train"], g[g["split"] != "train"]
        assert later.empty or later["timestamp"].min() >= train["timestamp"].max()
        test, val = g[g["split"] == "test"], g[g["split"] == "val"]
        assert (len(test), len(val)) == (2, 3)
        assert test["timestamp"].min() >= val["timestamp"].max()
    assert len(df) == len(ratings)


# ---------------------------------------------------------------- examples

def test_val_and_test_history_is_strictly_earlier(tiny):
    df = temporal_split(tiny.ratings)
    val, = build_examples(df, tiny.movies, tiny.tags, which="val")
    test, = build_examples(df, tiny.movies, tiny.tags, which="test")
    assert (val["movie_id"], val["n_history"], test["movie_id"], test["n_history"]) == (6, 5, 7, 6)
    assert val["liked"] == ["Heat (1995)", "The Matrix (1999)"]  # most recent first, movie 6 not yet rated
    assert val["disliked"] == ["Babylon 5", "Toy Story (1995)"]
    assert test["liked"] == ["Sabrina (1995)", "Heat (1995)", "The Matrix (1999)"]  # the val rating is history
    assert test["user_mean"] == pytest.approx((5 + 1 + 4 + 2 + 3 + 5) / 6, abs=1e-4)
    assert test["response"] == "Rating: 4.5" and test["rating"] == 4.5


def test_features_genres_item_mean_and_tags(tiny):
    df = temporal_split(tiny.ratings)
    test, = build_examples(df, tiny.movies, tiny.tags, which="test")
    # earlier: Action 5,4 (mean 4.5 vs 3.33) preferred; Comedy 1,5 (3.0) avoided; others seen once
    assert (test["preferred_genres"], test["avoided_genres"]) == (["Action"], ["Comedy"])
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
    assert "from the SVD++ prediction" in first and "'Adjustment: +x.x' (-2.0 to +2.0)" in first
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
