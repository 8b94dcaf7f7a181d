"""Trivia data: the QA CSV reader and the TriviaQA film-question builder.

Every stage of the trivia pipeline exchanges plain dicts with the keys of
``QA_COLUMNS``. ``load_qa_csv`` validates a CSV in that layout (the embedded sample, the
HotpotQA film CSV or the one written by ``build_triviaqa_csv``); bad rows are skipped and
counted, or raise with ``strict=True``.

References:
    Joshi et al. 2017, "TriviaQA" (rc layout: qa/wikipedia-<split>.json + evidence/wikipedia).
    Yang et al. 2018, "HotpotQA".
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pandas as pd

from cinephile.io import atomic_write

logger = logging.getLogger(__name__)

QA_COLUMNS = ("id", "question", "answer", "answer_aliases", "context")


def _parse_aliases(cell: str, answer: str) -> list[str] | None:
    """JSON list of strings -> aliases with ``answer`` first, deduplicated; None if malformed."""
    if not cell.strip():
        return [answer]
    try:
        aliases = json.loads(cell)
    except json.JSONDecodeError:
        return None
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        return None
    return list(dict.fromkeys([answer, *(a.strip() for a in aliases if a.strip())]))


def load_qa_csv(path: str | os.PathLike, *, strict: bool = False) -> tuple[list[dict], dict]:
    """Read and validate a QA CSV.

    Args:
        path: CSV with at least the columns ``QA_COLUMNS`` (extra columns are kept).
            ``answer_aliases`` is a JSON list of strings (an empty cell means no aliases).
        strict: raise on the first bad row instead of skipping it.

    Returns:
        ``(records, report)``: records are dicts with ``id`` (str), ``question``, ``answer``,
        ``answer_aliases`` (list[str] starting with the answer), ``context`` and the extra
        columns; report is ``{"rows": n, "kept": k, "skipped": {reason: count}}``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"QA CSV not found: {path}; check the path")
    try:
        df = pd.read_csv(path, dtype=str, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot parse {path} as a UTF-8 CSV: {e}") from e
    missing = [c for c in QA_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path.name} is missing columns {missing}; expected columns: {list(QA_COLUMNS)}")
    df["id"] = df["id"].str.strip()  # "q1" and "q1 " are the same id
    dups = sorted(i for i, n in Counter(df["id"]).items() if n > 1)
    if dups:
        raise ValueError(f"{path.name} has {len(dups)} duplicate ids, e.g. {dups[:5]}; ids must be unique")
    records, skipped = [], Counter()
    for row in df.to_dict("records"):
        row = {k: v.strip() if k in QA_COLUMNS else v for k, v in row.items()}
        reason = next((f"empty {c}" for c in ("id", "question", "answer", "context") if not row[c]), None)
        if reason is None:
            aliases = _parse_aliases(row["answer_aliases"], row["answer"])
            reason = "bad answer_aliases (not a JSON list of strings)" if aliases is None else None
        if reason is not None:
            if strict:
                raise ValueError(f"{path.name}: row id {row['id']!r} has {reason}; fix or remove the row")
            skipped[reason] += 1
            continue
        records.append({**row, "answer_aliases": aliases})
    if skipped:
        logger.warning("%s: skipped %d of %d rows: %s", path.name, sum(skipped.values()), len(df), dict(skipped))
    if not records:
        raise ValueError(f"{path.name}: no usable rows ({len(df)} rows, skipped {dict(skipped)})")
    return records, {"rows": len(df), "kept": len(records), "skipped": dict(skipped)}


# Question-side cues; word boundaries everywhere so "filmy" or "playoff" never match.
_MOVIE_PATTERNS = [
    r"\bfilm(?:s|ed|ing|-?makers?|ography)?\b", r"\bmovies?\b", r"\bcinema(?:s|tic)?\b",
    r"\bcinematograph\w*", r"\bactors?\b", r"\bactress(?:es)?\b", r"\bco-?star(?:s|red|ring)?\b",
    r"\bstarr(?:ed|ing)\b", r"\bportray(?:s|ed|ing|al)?\b", r"\bdirected\b",
    r"(?<!managing )(?<!musical )(?<!artistic )(?<!executive )\bdirectors?\b"
    r"(?!-general| general| of (?:the )?(?:fbi|cia|public|national|central|bank))",
    r"(?-i:\bOscars?\b(?! [A-Z]))", r"\boscar-(?:winning|nominated)\b", r"\bacademy awards?\b",
    r"\bgolden globes?\b", r"\bbafta\b", r"\bpalme d.or\b", r"\bcannes film\b", r"\bscreen(?:play|writer)s?\b",
    r"\b(?:silver|big) screen\b", r"\bbox[- ]office\b", r"\bblockbusters?\b", r"\bhollywood\b",
    r"\bbollywood\b", r"\bsequels?\b", r"\bprequels?\b", r"\bremakes?\b", r"\bbiopics?\b", r"\btalkies?\b",
    r"\bcameo\b", r"\bleading (?:man|lady)\b", r"\b(?:title|starring|screen|film) roles?\b",
    r"\b(?:pixar|dreamworks|mgm|metro-goldwyn-mayer|paramount pictures|warner bros|ealing studios)\b",
]
# "played X in" / "played by" only count when the question has no sports vocabulary.
_PLAYED_PATTERNS = [r"\bplayed (?:the )?(?:role|part|character)\b", r"(?-i:\bplayed (?:[A-Z][\w'.-]*\s){1,3}in\b)",
                    r"\bplayed by\b"]
_SPORTS = (r"\b(?:team|club|cup|final|match|league|goals?|scored?|champion\w*|olympics?|season|football"
           r"|cricket|rugby|tennis|golf|game)\b")
# Answer entity names such as "Titanic (1997 film)" or "Tom Hanks (actor)".
_ANSWER_PATTERN = r"\([^()]*\b(?:film|movie|actor|actress|filmmaker|film director)\)"
_MOVIE_RE = re.compile("|".join(f"(?:{p})" for p in _MOVIE_PATTERNS), re.IGNORECASE)
_PLAYED_RE = re.compile("|".join(f"(?:{p})" for p in _PLAYED_PATTERNS), re.IGNORECASE)
_SPORTS_RE = re.compile(_SPORTS, re.IGNORECASE)
_ANSWER_RE = re.compile(_ANSWER_PATTERN, re.IGNORECASE)


def is_movie_question(question: str, answer: str = "") -> bool:
    """Whether a trivia question is about films, judged from the question and answer name only.

    The evidence documents are not looked at: long Wikipedia pages mention films almost
    everywhere, so keyword hits there select unrelated questions.

    Args:
        question: the question text.
        answer: optional answer entity name (e.g. TriviaQA ``MatchedWikiEntityName``).

    Returns:
        True if a curated film cue matches.
    """
    if _MOVIE_RE.search(question) or (answer and _ANSWER_RE.search(answer)):
        return True
    return bool(_PLAYED_RE.search(question)) and not _SPORTS_RE.search(question)


def _entry_fields(q: object, i: int, qa_file: Path) -> tuple[str, dict]:
    """``(question id, Answer)`` of entry ``i`` of a QA file, or a ValueError naming what it lacks."""
    qid = q.get("QuestionId") if isinstance(q, dict) else None
    where = f"{qa_file}: entry {i}" + (f" (QuestionId {qid!r})" if qid is not None else "")
    if not isinstance(q, dict):
        raise ValueError(f"{where} is a {type(q).__name__}, not an object; the file is not TriviaQA rc JSON")
    missing = [key for key in ("QuestionId", "Question", "Answer") if key not in q]
    ans = q.get("Answer")
    if not missing and (not isinstance(ans, dict) or "Value" not in ans):
        missing = ["Answer.Value"]
    pages = q.get("EntityPages", [])
    if not isinstance(pages, list):
        missing.append("EntityPages list")
    else:
        missing += [f"EntityPages[{j}].{key}" for j, p in enumerate(pages) for key in ("Filename", "Title")
                    if not isinstance(p, dict) or not isinstance(p.get(key), str) or not p[key]]
    if missing:
        raise ValueError(f"{where} has no {', '.join(missing)}; every entry needs QuestionId, Question, "
                         "Answer {Value, Aliases} and EntityPages [{Filename, Title}]: use the unmodified "
                         "TriviaQA rc files")
    return qid, ans


def _evidence_text(folder: Path, name: str, qid: str, qa_file: Path) -> str | None:
    """Text of evidence file ``name`` inside ``folder`` (None when it is absent).

    A name that leads outside the folder (absolute, with ``..`` or through a symbolic link) is refused.
    """
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise ValueError(f"{qa_file}: question {qid!r} names evidence file {name!r}, which resolves to {path}, "
                         f"outside the evidence folder {folder}; evidence files must lie inside it")
    if not path.is_file():
        return None
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"evidence file {folder / name} of question {qid!r} is not UTF-8 ({e}); "
                         "re-encode it as UTF-8 (e.g. iconv -f latin1 -t utf-8) or restore the original file") from None


def _iter_official(root: Path, splits: Iterable[str]) -> Iterator[dict]:
    """Questions of the official rc layout, with evidence text (None when the file is missing)."""
    evidence = root / "evidence" / "wikipedia"
    for split in splits:
        qa_file = root / "qa" / f"wikipedia-{split}.json"
        if not qa_file.is_file():
            raise FileNotFoundError(f"{qa_file} not found; expected the TriviaQA rc layout "
                                    "qa/wikipedia-<split>.json")
        try:
            data = json.loads(qa_file.read_text(encoding="utf-8"))["Data"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{qa_file} is not a TriviaQA file with a 'Data' list: {e}") from e
        if not isinstance(data, list):
            raise ValueError(f"{qa_file} is not a TriviaQA file with a 'Data' list: 'Data' is a {type(data).__name__}")
        for i, q in enumerate(data):
            qid, ans = _entry_fields(q, i, qa_file)
            pages = [(p["Title"], _evidence_text(evidence, p["Filename"], qid, qa_file))
                     for p in q.get("EntityPages", [])]
            yield {"id": qid, "question": q["Question"], "value": ans["Value"],
                   "aliases": ans.get("Aliases", []), "entity": ans.get("MatchedWikiEntityName") or ans["Value"],
                   "pages": pages, "split": split}


def _iter_hf(splits: Iterable[str]) -> Iterator[dict]:
    """Same records from the Hugging Face copy of TriviaQA rc.wikipedia (streamed)."""
    try:
        import datasets
    except ImportError as e:
        raise ImportError("building from 'hf' needs the datasets package: pip install datasets") from e
    for split in splits:
        hf_split = {"dev": "validation"}.get(split, split)
        for q in datasets.load_dataset("mandarjoshi/trivia_qa", "rc.wikipedia", split=hf_split, streaming=True):
            ans, ep = q["answer"], q["entity_pages"]
            yield {"id": q["question_id"], "question": q["question"], "value": ans["value"],
                   "aliases": ans["aliases"], "entity": ans.get("matched_wiki_entity_name") or ans["value"],
                   "pages": list(zip(ep["title"], ep["wiki_context"])), "split": split}


def build_triviaqa_csv(
    source: str | os.PathLike,
    out_csv: str | os.PathLike,
    *,
    splits: Iterable[str] = ("train", "dev"),
    max_questions: int | None = None,
    select: Callable[[str, str], bool] | None = None,
) -> dict:
    """Write the film questions of TriviaQA rc as a QA CSV readable by ``load_qa_csv``.

    Args:
        source: directory in the official layout (``qa/wikipedia-<split>.json`` and
            ``evidence/wikipedia/<Filename>``) or ``"hf"`` for the Hugging Face copy.
        out_csv: destination CSV (columns ``QA_COLUMNS`` + ``supporting_titles``, ``split``).
        splits: splits to read, in order.
        max_questions: stop after this many questions are kept.
        select: ``select(question, answer_entity) -> bool``; defaults to ``is_movie_question``.

    Returns:
        ``{"questions_seen", "selected", "kept", "skipped": {reason: count}, "out_csv"}``; a question
        whose evidence file is absent is skipped and counted.

    Raises:
        ValueError: a QA entry lacking QuestionId, Question, Answer.Value or an entity page's Filename /
            Title; an evidence file outside ``evidence/wikipedia`` (absolute, ``..``, symbolic link) or
            not UTF-8; no question kept. Nothing is written then.
    """
    if max_questions is not None and max_questions < 1:
        raise ValueError(f"max_questions must be a positive integer or None, got {max_questions}")
    select = select or is_movie_question
    if str(source) == "hf":
        questions = _iter_hf(splits)
    else:
        root = Path(source)
        if not root.is_dir():
            raise FileNotFoundError(f"TriviaQA directory not found: {root}; pass the rc folder or 'hf'")
        questions = _iter_official(root, splits)
    rows, ids, seen, selected, skipped = [], set(), 0, 0, Counter()
    for q in questions:
        if max_questions is not None and len(rows) >= max_questions:
            break
        seen += 1
        if not select(q["question"], q["entity"]):
            skipped["not selected"] += 1
            continue
        selected += 1
        texts = [t for _, t in q["pages"]]
        reason = "no evidence pages" if not texts else "missing evidence file" if None in texts else None
        reason = reason or ("duplicate id" if q["id"] in ids else None)
        if reason:
            skipped[reason] += 1
            continue
        ids.add(q["id"])
        aliases = list(dict.fromkeys([q["value"], *q["aliases"]]))
        rows.append({"id": q["id"], "question": q["question"], "answer": q["value"],
                     "answer_aliases": json.dumps(aliases, ensure_ascii=False),
                     "context": "\n\n".join(t.strip() for t in texts),
                     "supporting_titles": "|".join(title for title, _ in q["pages"]), "split": q["split"]})
    report = {"questions_seen": seen, "selected": selected, "kept": len(rows), "skipped": dict(skipped),
              "out_csv": str(out_csv)}
    if not rows:
        raise ValueError(f"no questions kept from {source}: {report}; widen `select` or check the evidence files")
    with atomic_write(out_csv) as f:
        pd.DataFrame(rows).to_csv(f, index=False)
    logger.info("wrote %d TriviaQA questions to %s (%s)", len(rows), out_csv, report["skipped"])
    return report
