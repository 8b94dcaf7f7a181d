"""Fixtures of the ratings tests: MovieLens folders, real and tiny."""

import pytest

from cinephile.ratings.data import load_movielens
from tests.helpers import write_folder


@pytest.fixture(scope="module")
def real_dir(shared_data):
    """The real ml-latest-small beside the project (skipped when absent)."""
    return shared_data / "movielens" / "ml-latest-small"


@pytest.fixture
def tiny(tmp_path):
    """A tiny MovieLens folder (tests/helpers.py) loaded with ``load_movielens``."""
    return load_movielens(write_folder(tmp_path / "ml"))
