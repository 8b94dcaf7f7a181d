"""Train / validation splits of the trivia questions: by question id, or film-disjoint (no film on both sides).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from cinephile.io import require_keys
from cinephile.trivia.films import (bridge_records, comparison_records, film_blocks, film_of, rebuild_context,
                                    similar_films)

_FROM_QA = "load the records with data.load_qa_csv() (the sample's contexts, not chunked yet)"


def split_train_val(records: Sequence[dict], *, val_fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """Deterministic split by hashed id: stable when records are reordered or added.

    Args:
        records: records with unique ``id``.
        val_fraction: expected share of validation records, in (0, 1).
        seed: changes the split.

    Returns:
        ``(train, val)`` lists, each in input order.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    ids = [str(r["id"]) for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError("records have duplicate ids; the split is by id, so ids must be unique")
    train, val = [], []
    for r, i in zip(records, ids):
        u = int(hashlib.md5(f"{seed}:{i}".encode()).hexdigest()[:8], 16) / 2**32
        (val if u < val_fraction else train).append(r)
    return train, val


def split_films(films: Sequence[str], *, val_fraction: float = 0.2, seed: int = 0) -> tuple[set[str], set[str]]:
    """A seeded random ``val_fraction`` of the films for validation (at least one), the rest for training."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    ordered = sorted(set(films))
    if len(ordered) < 2:
        raise ValueError(f"a film-disjoint split needs at least 2 films, got {len(ordered)}")
    random.Random(seed).shuffle(ordered)
    n_val = max(1, round(val_fraction * len(ordered)))
    return set(ordered[n_val:]), set(ordered[:n_val])


def film_disjoint_split(records: Sequence[dict], *, val_fraction: float = 0.2, seed: int = 0,
                        similar_distractors: int | None = None) -> tuple[list[dict], list[dict]]:
    """Split by film and rebuild each context from blocks of its own side only.

    Records get a ``film`` (kept when present, else ``film_of``) and a rebuilt ``context``: its film's
    block plus, with ``similar_distractors=None``, as many seeded random same-side films as the sample's
    context had; with N, the N same-side films most like the question (``films.similar_films``).

    Returns:
        (train records, validation records).
    """
    require_keys(records, ("id", "question", "context", ("answer_aliases", "answer")), what="film_disjoint_split",
                 fix=_FROM_QA)
    blocks = film_blocks(records)
    with_film = [{**r, "film": r.get("film") or film_of(r, blocks)} for r in records]
    unknown = sorted({r["film"] for r in with_film} - set(blocks))
    if unknown:
        raise ValueError(f"films {unknown[:3]} have no passage block in any context; fix the 'film' column")
    train_films, val_films = split_films([r["film"] for r in with_film], val_fraction=val_fraction, seed=seed)
    # distractors: films of the same side, including films that only ever appear as distractors
    spare = sorted(set(blocks) - train_films - val_films)
    train_pool = train_films | set(spare[len(spare) // 5:])
    val_pool = val_films | set(spare[:len(spare) // 5])
    out = ([], [])
    for r in with_film:
        side = r["film"] in val_films
        out[side].append(r)
    for side, pool in ((0, sorted(train_pool)), (1, sorted(val_pool))):
        picked = (similar_films([r["question"] for r in out[side]], [{r["film"]} for r in out[side]], pool, blocks,
                                similar_distractors) if similar_distractors is not None else [None] * len(out[side]))
        out[side][:] = [{**r, "context": rebuild_context(r, blocks, pool, seed=seed, others=others)}
                        for r, others in zip(out[side], picked, strict=True)]
    return out


def film_split_with_comparisons(records: Sequence[dict], facts: dict[str, dict], *, val_fraction: float = 0.2,
                                seed: int = 0, train_pairs: int = 36, val_pairs: int = 8,
                                distractors: int = 1, similar_distractors: int | None = None,
                                bridges: tuple[int, int] = (0, 0)) -> tuple[list[dict], list[dict]]:
    """``film_disjoint_split`` plus ``comparison_records`` and ``bridge_records`` on each side (never crossing it).

    Single-hop records get ``kind="single"``. Distractor blocks of the comparisons come from the
    same side's films, so no validation-film paragraph reaches training. ``bridges``: how many bridge
    questions (a seeded sample of ``bridge_records``) each side gets, training / validation.
    ``similar_distractors=N``: instead of random films (``distractors`` per comparison, the sample's
    count per single-hop question), a context holds the N films most like its question (HotpotQA's
    distractor setting): a single-hop question's from its side's films, a comparison's from the side's
    films with facts; a bridge question keeps its single-hop question's context. The questions
    themselves do not change.

    Returns:
        (train records, validation records), single-hop first.
    """
    train, val = film_disjoint_split(records, val_fraction=val_fraction, seed=seed,
                                     similar_distractors=similar_distractors)
    blocks = film_blocks(records)
    out = []
    for side, n_pairs, n_bridges, name in ((train, train_pairs, bridges[0], "train"),
                                           (val, val_pairs, bridges[1], "val")):
        films = sorted({r["film"] for r in side})
        extra = comparison_records(films, blocks, facts, n_pairs=n_pairs, prefix=f"cmp-{name}-",
                                   distractors=distractors, similar=similar_distractors, seed=seed) if n_pairs else []
        bridge = bridge_records(side, facts, prefix=f"br-{name}-") if n_bridges else []
        bridge = random.Random(f"{seed}-bridge-{name}").sample(bridge, min(n_bridges, len(bridge)))
        out.append([{**r, "kind": "single"} for r in side] + extra + bridge)
    return out[0], out[1]
