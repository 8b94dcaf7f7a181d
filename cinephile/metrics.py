"""Answer-level metrics for open-domain trivia: exact match and token F1.

The normalisation reproduces the official TriviaQA evaluation script
(mandarjoshi90/triviaqa, evaluation/triviaqa_evaluation.py), itself extended from
the SQuAD v1.1 script: underscores become spaces, text is lower-cased, punctuation
(ASCII plus the quotes ‘ ’ ´ `) is replaced by a space, the articles a/an/the are
removed and whitespace is collapsed. A prediction is scored against every accepted
alias and the best score is kept (``metric_max_over_ground_truths``).

References:
    Joshi et al. 2017, "TriviaQA: A Large Scale Distantly Supervised Challenge
    Dataset for Reading Comprehension".
    Rajpurkar et al. 2016, "SQuAD: 100,000+ Questions for Machine Comprehension of Text".
"""

from __future__ import annotations

import logging
import re
import string
from collections import Counter
from collections.abc import Sequence

logger = logging.getLogger(__name__)

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


def _as_aliases(aliases: str | Sequence[str]) -> list[str]:
    """Accept one answer string or a sequence of aliases; refuse an empty sequence."""
    if isinstance(aliases, str):
        return [aliases]
    aliases = list(aliases)
    if not aliases:
        raise ValueError("no answer aliases given; pass at least one accepted answer")
    return aliases


def _em_one(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def _f1_one(prediction: str, truth: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    truth_tokens = normalize_answer(truth).split()
    common = Counter(pred_tokens) & Counter(truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, aliases: str | Sequence[str]) -> float:
    """Exact match after normalisation, maximised over the accepted aliases.

    Args:
        prediction: model answer.
        aliases: one accepted answer or a list of them.

    Returns:
        1.0 if the normalised prediction equals any normalised alias, else 0.0.
    """
    return max(_em_one(prediction, a) for a in _as_aliases(aliases))


def f1_score(prediction: str, aliases: str | Sequence[str]) -> float:
    """Bag-of-tokens F1 after normalisation, maximised over the accepted aliases.

    Args:
        prediction: model answer.
        aliases: one accepted answer or a list of them.

    Returns:
        The best F1 in [0, 1] over the aliases.
    """
    return max(_f1_one(prediction, a) for a in _as_aliases(aliases))


def score_predictions(preds: Sequence[str] | dict[str, str], records: Sequence[dict]) -> dict:
    """Average EM and F1 (in percent) of predictions against QA records.

    Args:
        preds: predictions aligned with ``records``, or a dict mapping record id to prediction.
        records: dicts with ``id`` and ``answer_aliases`` (falls back to ``answer``).

    Returns:
        ``{"em": float, "f1": float, "n": int}`` with em and f1 in percent.
    """
    if not records:
        raise ValueError("no records to score; pass at least one QA record")
    if isinstance(preds, dict):
        missing = [r["id"] for r in records if r["id"] not in preds]
        if missing:
            raise ValueError(f"no prediction for record ids {missing[:5]}; predict every record first")
        preds = [preds[r["id"]] for r in records]
    elif len(preds) != len(records):
        raise ValueError(
            f"got {len(preds)} predictions for {len(records)} records; pass one prediction per record"
        )
    em = f1 = 0.0
    for pred, rec in zip(preds, records):
        aliases = rec.get("answer_aliases") or [rec["answer"]]
        em += exact_match(pred, aliases)
        f1 += f1_score(pred, aliases)
    n = len(records)
    return {"em": 100.0 * em / n, "f1": 100.0 * f1 / n, "n": n}
