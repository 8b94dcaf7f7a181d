"""MovieLens loading and the temporal split (tiny synthetic tables + the real data)."""

import logging

import pandas as pd
import pytest

from cinephile.ratings.download import ML_FOLDER
from cinephile.ratings.data import load_movielens, parse_title, temporal_split

from tests.helpers import RATINGS, write_folder


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
