"""Cinephile: the movie-trivia and MovieLens pipeline stages the notebooks call."""
