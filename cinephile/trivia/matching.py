"""Answer matching: SQuAD answer normalisation, and whether a text holds what a question needs.

References:
    Rajpurkar et al. 2016, "SQuAD" (the official evaluation script's normalisation).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence


_PUNCTUATION = frozenset(string.punctuation + "".join(["‘", "’", "´", "`"]))


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Normalise an answer string exactly as the official TriviaQA script does.

    Args:
        s: raw answer or prediction.

    Returns:
        The lower-cased string without punctuation, articles and extra whitespace.
    """
    text = s.replace("_", " ").lower()
    text = "".join(" " if ch in _PUNCTUATION else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split()).strip()


ANSWER_KEYS = ("evidence", "answer_aliases", "answer")  # what evidence_groups reads, first non-empty one wins


def _norm_aliases(aliases: Sequence[str]) -> list[str]:
    return [f" {n} " for n in map(normalize_answer, aliases) if n]


def answer_in_text(aliases: Sequence[str], text: str) -> bool:
    """Whether any normalised alias occurs in the normalised text on word boundaries.

    Args:
        aliases: accepted answers.
        text: passage.

    Returns:
        True if some alias is found.
    """
    padded = f" {normalize_answer(text)} "
    return any(a in padded for a in _norm_aliases(aliases))


def accepted_answers(record: dict) -> list[str]:
    """Every accepted answer of ``record``: its ``answer_aliases``, or its ``answer`` alone."""
    return list(record.get("answer_aliases") or [record["answer"]])


def evidence_groups(record: dict) -> list[list[str]]:
    """What a context must hold to answer ``record``: groups of strings, each satisfied by any one of them.

    A single-hop question needs one of its answer aliases; a record with ``evidence`` (e.g. a
    comparison of two films, whose answer "yes" or a film title proves nothing) needs every
    evidence string, such as both films' release years.
    """
    if record.get("evidence"):
        return [[e] for e in record["evidence"]]
    return [accepted_answers(record)]


def covers(record: dict, text: str) -> bool:
    """Whether ``text`` holds everything ``record`` needs (every group of ``evidence_groups``)."""
    return all(answer_in_text(group, text) for group in evidence_groups(record))


def relevant(record: dict, chunk: str) -> bool:
    """Whether ``chunk`` satisfies at least one evidence group of ``record``."""
    return any(answer_in_text(g, chunk) for g in evidence_groups(record))
