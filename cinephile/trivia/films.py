"""Films of the trivia sample: passage blocks, the film each question is about, film-disjoint splits.

A context of the embedded sample is a sequence of film blocks, each opening with a paragraph of
the form "<Title> is a <year> ..." and followed by that film's other paragraphs; one block is the
question's film, the others are distractors. Splitting by question id leaves a validation film's
passages in training contexts (the same block appears in several contexts), so validation measures
recall of seen films. ``film_disjoint_split`` holds out whole films and rebuilds every context from
blocks of its own side of the split, so no validation-film paragraph reaches training.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from cinephile.io import require_keys
from cinephile.trivia.matching import accepted_answers

_FROM_QA = "load the records with data.load_qa_csv() (the sample's contexts, not chunked yet)"
BLOCK_START = re.compile(r"^(?P<title>[^\n]+?)(?:, whose [^\n]*?,)? is an? (?P<year>\d{4}) ")


def paragraphs(context: str) -> list[str]:
    """Paragraphs of a context (separated by blank lines), stripped, empty ones dropped."""
    return [p.strip() for p in re.split(r"\n\s*\n", context) if p.strip()]


def film_blocks(records: Sequence[dict]) -> dict[str, list[str]]:
    """Film title -> its paragraphs in order, read from every context of ``records``.

    Raises:
        ValueError: when a context does not open with a block start ("<Title> is a <year> ...").
    """
    require_keys(records, ("id", "context"), what="film_blocks", fix=_FROM_QA)
    blocks: dict[str, list[str]] = {}
    for r in records:
        current = None
        for p in paragraphs(r["context"]):
            match = BLOCK_START.match(p)
            if match:
                current = match["title"]
                blocks.setdefault(current, [])
            if current is None:
                raise ValueError(f"record {r['id']}: the context does not open with a film block "
                                 f"('<Title> is a <year> ...'), it starts {p[:60]!r}; film_blocks needs the "
                                 "sample's layout")
            if p not in blocks[current]:
                blocks[current].append(p)
    return blocks


def film_of(record: dict, blocks: dict[str, list[str]]) -> str:
    """The film a question is about: the longest block title the question names, else the block holding the answer."""
    named = [t for t in blocks if t.lower() in record["question"].lower()]
    if named:
        return max(named, key=len)
    answers = [a.lower() for a in accepted_answers(record)]
    holding = [t for t in blocks if any(a in " ".join(blocks[t]).lower() for a in answers)
               and any(blocks[t][0] in p for p in paragraphs(record["context"]))]
    if len(holding) != 1:
        raise ValueError(f"record {record['id']}: cannot tell which film the question is about "
                         f"({len(holding)} candidate blocks); add a 'film' column")
    return holding[0]


def rebuild_context(record: dict, blocks: dict[str, list[str]], pool: Sequence[str], *, seed: int = 0,
                    others: Sequence[str] | None = None) -> str:
    """The record's own film block plus distractor blocks, shuffled.

    The distractors are ``others`` when given, else as many films as the record's context had, a seeded
    sample of ``pool``.
    """
    own = record["film"]
    rng = random.Random(f"{seed}-{record['id']}")
    if others is None:
        n_other = sum(1 for p in paragraphs(record["context"]) if BLOCK_START.match(p)) - 1
        candidates = sorted(f for f in pool if f != own)
        others = rng.sample(candidates, min(max(n_other, 0), len(candidates)))
    return _shuffled_blocks([*others, own], blocks, rng)


def similar_films(questions: Sequence[str], exclude: Sequence[Collection[str]], pool: Sequence[str],
                  blocks: dict[str, list[str]], n: int) -> list[list[str]]:
    """For each question, the ``n`` films of ``pool`` whose passages are most like it, its ``exclude`` films left out.

    Similarity is the cosine of TF-IDF vectors over words and word pairs, the way HotpotQA's distractor
    setting chose the paragraphs beside the gold ones: distractors that share the question's words make
    retrieval and reading harder than random films do. Ties keep ``pool``'s sorted order; ``n=0``: none.

    Raises:
        ValueError: a negative ``n``, or not one ``exclude`` set per question.
    """
    if n < 0:
        raise ValueError(f"the number of distractor films must be 0 or more, got {n}")
    if len(exclude) != len(questions):
        raise ValueError(f"{len(questions)} questions but {len(exclude)} sets of films to leave out; pass one per "
                         "question")
    pool = sorted(pool)
    if not questions or n == 0:
        return [[] for _ in questions]
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, stop_words="english")
    docs = vectorizer.fit_transform([" ".join(blocks[f]) for f in pool])
    scores = (vectorizer.transform(list(questions)) @ docs.T).toarray()
    out = []
    for row, skip in zip(scores, exclude, strict=True):
        ranked = [pool[i] for i in np.argsort(-row, kind="stable") if pool[i] not in skip]
        out.append(ranked[:n])
    return out


def read_facts(path) -> dict[str, dict]:
    """``film -> {"year": int, "director": str}`` from a CSV with columns film, year, director.

    An empty director means the film's passages do not name one: no director question is asked about it.

    Raises:
        ValueError: missing columns, a year that is not four digits, or a film listed twice.
    """
    import pandas as pd

    df = pd.read_csv(path, dtype=str, na_filter=False)
    missing = [c for c in ("film", "year", "director") if c not in df.columns]
    if missing:
        raise ValueError(f"{path} is missing columns {missing}; expected film, year, director")
    bad = df[~df["year"].str.fullmatch(r"\d{4}")]
    if len(bad):
        raise ValueError(f"{path}: year must be four digits, got {bad['year'].tolist()[:3]} "
                         f"for {bad['film'].tolist()[:3]}")
    lines = {}  # film -> line numbers in the file (the header is line 1)
    for i, film in enumerate(df["film"]):
        lines.setdefault(film, []).append(i + 2)
    dups = {film: n for film, n in lines.items() if len(n) > 1}
    if dups:
        film, n = next(iter(dups.items()))
        raise ValueError(f"{path}: film {film!r} is listed on lines {n[0]} and {n[1]} ({len(dups)} film(s) listed "
                         "more than once); keep one row per film")
    return {r.film: {"year": int(r.year), "director": r.director.strip()} for r in df.itertuples()}


def _pair_questions(a: str, b: str, facts: dict[str, dict]) -> list[tuple[str, str, list[str], list[str]]]:
    """(question, answer, aliases, evidence) about films ``a`` and ``b``, answerable from their two blocks only.

    The evidence strings are what a context must state to answer: both years and/or directors.
    """
    fa, fb = facts[a], facts[b]
    years = [str(fa["year"]), str(fb["year"])]
    out = []
    if fa["year"] == fb["year"]:
        out.append((f"Were {a} and {b} released in the same year?", "yes", ["yes"], years[:1]))
    else:
        early, late = (a, b) if fa["year"] < fb["year"] else (b, a)
        gap = abs(fa["year"] - fb["year"])
        out += [(f"Which film came out first, {a} or {b}?", early, [early], years),
                (f"Which film was released more recently, {b} or {a}?", late, [late], years),
                (f"How many years apart were {a} and {b} released?", str(gap), [str(gap), f"{gap} years"], years)]
        if facts[early]["director"]:
            out.append((f"Who directed the earlier film, {a} or {b}?", facts[early]["director"],
                        [facts[early]["director"]], years + [facts[early]["director"]]))
    if fa["director"] and fb["director"]:
        same = "yes" if fa["director"] == fb["director"] else "no"
        out.append((f"Were {a} and {b} directed by the same person?", same, [same],
                    sorted({fa["director"], fb["director"]})))
    return out


def comparison_records(films: Sequence[str], blocks: dict[str, list[str]], facts: dict[str, dict], *,
                       n_pairs: int, prefix: str, pool: Sequence[str] | None = None, distractors: int = 1,
                       similar: int | None = None, seed: int = 0) -> list[dict]:
    """Two-hop and comparison questions over pairs of ``films`` (one side of a split), with their contexts.

    Pairs that share a director come first (so "same person?" is not always "no"), then seeded random
    pairs; each question's context holds both films' blocks plus ``distractors`` blocks from ``pool``
    (the same side's films, a seeded sample), shuffled; ``similar=N``: the N films of ``pool`` most like the
    question instead (``similar_films``), with the same questions. Answers come from ``facts``, whose values
    the blocks state.

    Returns:
        QA records (id, question, answer, answer_aliases, evidence, context, film, films, kind="comparison").
    """
    films = sorted(f for f in films if f in facts and f in blocks)
    rng = random.Random(f"{seed}-{prefix}")
    by_director: dict[str, list[str]] = {}
    for f in films:
        if facts[f]["director"]:
            by_director.setdefault(facts[f]["director"], []).append(f)
    pairs = [(g[i], g[i + 1]) for g in by_director.values() for i in range(len(g) - 1)]
    rng.shuffle(pairs)
    seen = set(pairs)
    candidates = [(a, b) for i, a in enumerate(films) for b in films[i + 1:] if (a, b) not in seen]
    rng.shuffle(candidates)
    pairs = (pairs[:n_pairs // 3] + candidates)[:n_pairs]
    pool = sorted(pool or films)
    records = []
    for k, (a, b) in enumerate(pairs):
        if rng.random() < 0.5:
            a, b = b, a
        for j, (question, answer, aliases, evidence) in enumerate(_pair_questions(a, b, facts)):
            others = [f for f in pool if f not in (a, b)]
            # drawn in either mode, so the questions (pair order) do not depend on ``similar``
            context = _shuffled_blocks(rng.sample(others, min(distractors, len(others))) + [a, b], blocks, rng)
            records.append({"id": f"{prefix}{k:03d}-{j}", "question": question, "answer": answer,
                            "answer_aliases": aliases, "evidence": evidence, "film": a, "films": [a, b],
                            "kind": "comparison", "context": context})
    if similar is not None:
        picked = similar_films([r["question"] for r in records], [r["films"] for r in records], pool, blocks,
                               similar)
        order = random.Random(f"{seed}-{prefix}-similar")
        for r, others in zip(records, picked, strict=True):
            r["context"] = _shuffled_blocks([*others, *r["films"]], blocks, order)
    return records


def _shuffled_blocks(films: list[str], blocks: dict[str, list[str]], rng: random.Random) -> str:
    """The films' blocks in a shuffled order (``films`` is shuffled in place), as one context."""
    rng.shuffle(films)
    return "\n\n".join(p for f in films for p in blocks[f])


ROLE_QUESTION = re.compile(r"^(?:Which actor|Which actress|Who) (?:plays|played|voices|voiced) "
                           r"(?P<role>[^?]+?) in (?P<film>[^?]+)\?$")


def _description(film: str, facts: dict[str, dict]) -> str | None:
    """"the 1975 film directed by Steven Spielberg" when no other film of ``facts`` shares year and director."""
    f = facts.get(film)
    if not f or not f["director"]:
        return None
    twins = [g for g, x in facts.items() if (x["year"], x["director"]) == (f["year"], f["director"])]
    return f"the {f['year']} film directed by {f['director']}" if twins == [film] else None


def bridge_records(records: Sequence[dict], facts: dict[str, dict], *, prefix: str) -> list[dict]:
    """Two-hop questions that reach a film through other facts first (HotpotQA's bridge kind), from single-hop records.

    - description -> film -> fact: the title of a single-hop question replaced by "the <year> film
      directed by <director>" (only where that pair names one film), e.g. "Who composed the score for the
      1975 film directed by Steven Spielberg?";
    - person -> film -> fact: from a role question ("Which actor plays Rick Blaine in Casablanca?" ->
      Humphrey Bogart), "Who directed the film in which Humphrey Bogart plays Rick Blaine?" and "In what
      year was ... released?".

    Each keeps the single-hop record's context (its film's block and same-side distractors) and lists
    the strings a context must state as ``evidence``. Pass one side of a split: nothing crosses it.
    """
    out = []
    for r in records:
        film = r.get("film")
        if not film or film not in facts:
            continue
        f, base = facts[film], {k: r[k] for k in ("context", "film") if k in r}
        described = _description(film, facts)
        if described and film in r["question"]:
            out.append({**base, "id": f"{prefix}{r['id']}-d", "question": r["question"].replace(film, described, 1),
                        "answer": r["answer"], "answer_aliases": accepted_answers(r),
                        "evidence": [str(f["year"]), f["director"], r["answer"]], "kind": "bridge"})
        match = ROLE_QUESTION.match(r["question"].strip())
        if match and match["film"].strip() == film:
            via = f"the film in which {r['answer']} plays {match['role']}"
            asks = [("y", f"In what year was {via} released?", str(f["year"]))]
            if f["director"]:
                asks.append(("p", f"Who directed {via}?", f["director"]))
            out += [{**base, "id": f"{prefix}{r['id']}-{tag}", "question": question, "answer": answer,
                     "answer_aliases": [answer], "evidence": [r["answer"], answer], "kind": "bridge"}
                    for tag, question, answer in asks]
    return out


def title_of(text: str, blocks: dict[str, list[str]]) -> str | None:
    """The film whose passages contain the start of ``text`` (e.g. a retrieved chunk), or None."""
    head = text.strip()[:80]
    for title, ps in blocks.items():
        if any(head in p for p in ps):
            return title
    return None
