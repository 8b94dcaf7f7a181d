"""Dense retrieval of context chunks, a BM25 baseline and retrieval metrics.

The embedding function is passed in (``EmbedFn``: list of texts -> L2-normalised rows),
so cosine similarity is a dot product, tests use a deterministic fake and notebooks use
sentence-transformers (all-MiniLM-L6-v2). Each question is matched against the chunks
of its own record; ``cinephile.index.CorpusIndex`` searches every chunk of the corpus
for the demo.

References:
    Karpukhin et al. 2020, "Dense Passage Retrieval for Open-Domain Question Answering".
    Reimers & Gurevych 2019, "Sentence-BERT".
    Robertson & Zaragoza 2009, "The Probabilistic Relevance Framework: BM25 and Beyond".
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from rank_bm25 import BM25Okapi
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from cinephile.embedding import EmbedFn, embed_texts
from cinephile.io import require_keys, save_figure, write_jsonl
from cinephile.trivia.matching import ANSWER_KEYS, answer_in_text, covers, evidence_groups, relevant
from cinephile.trivia.splits import split_train_val

logger = logging.getLogger(__name__)

_FROM_QA = "load them with data.load_qa_csv() and chunk them with chunking.chunk_records()"


def _merge(a: str, b: str) -> str:
    """Join consecutive chunks, writing the sentences they share only once."""
    for k in range(min(len(a), len(b)), 0, -1):
        if (k == len(b) or b[k] in " \n") and a.endswith(b[:k]) and (k == len(a) or a[-k - 1] in " \n"):
            return a + b[k:]
    return a + " " + b


def window_text(chunks: Sequence[str], picked: Sequence[int], window: int) -> str:
    """Selected chunks widened by +-window neighbours, merged, in document order."""
    keep = sorted({j for i in picked for j in range(max(0, i - window), min(len(chunks), i + window + 1))})
    runs, prev = [], None
    for j in keep:
        if prev is not None and j == prev + 1:
            runs[-1] = _merge(runs[-1], chunks[j])
        else:
            runs.append(chunks[j])
        prev = j
    return "\n\n".join(runs)


def top_k_context(record: dict, k: int) -> str:
    """The context of ``record``'s best ``k`` retrieved chunks (a prefix of ``retrieve``'s ranking), in document order."""
    return window_text(record["chunks"], [hit["chunk"] for hit in record["retrieved"][:k]], 0)


def fuse_scores(dense: Sequence[float], lexical: Sequence[float], lexical_weight: float) -> np.ndarray:
    """Hybrid retrieval: ``(1 - w) * dense + w * lexical`` after min-max scaling each to [0, 1].

    Scaling per question makes cosine similarities and BM25 scores comparable; with ``w = 0``
    the ranking is the dense one, with ``w = 1`` the BM25 one.

    Args:
        dense, lexical: one score per chunk from each retriever.
        lexical_weight: ``w`` in [0, 1].

    Returns:
        Fused scores, float array of the same length.
    """
    if not 0.0 <= lexical_weight <= 1.0:
        raise ValueError(f"lexical_weight must be in [0, 1], got {lexical_weight}")
    dense, lexical = np.asarray(dense, dtype=float), np.asarray(lexical, dtype=float)
    if dense.shape != lexical.shape:
        raise ValueError(f"need one score per chunk from both retrievers, got {dense.shape} and {lexical.shape}")

    def scaled(x):
        span = np.ptp(x) if len(x) else 0.0
        return (x - x.min()) / span if span > 0 else np.zeros_like(x)
    return (1.0 - lexical_weight) * scaled(dense) + lexical_weight * scaled(lexical)


def retrieve(records: Sequence[dict], embed_fn: EmbedFn, *, k: int = 1, window: int = 0,
             lexical_weight: float = 0.0) -> list[dict]:
    """Pick the top-k chunks of each record for its question: cosine similarity, optionally fused with BM25.

    Args:
        records: records with ``id``, ``question`` and ``chunks`` (see ``chunk_records``).
        embed_fn: ``EmbedFn``; called once for all questions and once for all distinct chunks.
        k: chunks kept per question.
        window: neighbouring chunks added on each side of a selected chunk.
        lexical_weight: weight of BM25 in ``fuse_scores`` (0: dense only, 1: BM25 only).

    Returns:
        New records with ``retrieved_context`` (str), ``retrieved`` ([{"chunk", "score"}], best
        first) and ``chunk_scores`` (one float per chunk).
    """
    if k < 1 or window < 0:
        raise ValueError(f"need k >= 1 and window >= 0, got k={k}, window={window}")
    if not 0.0 <= lexical_weight <= 1.0:
        raise ValueError(f"lexical_weight must be in [0, 1], got {lexical_weight}")
    require_keys(records, ("id", "question"), what="retrieve", fix=_FROM_QA)
    for r in records:
        if not r.get("chunks"):
            raise ValueError(f"record {r.get('id')!r} has no chunks; run chunk_records() and drop empty contexts")
    q_emb = embed_texts(embed_fn, [r["question"] for r in records])  # (R, D)
    texts = list(dict.fromkeys(c for r in records for c in r["chunks"]))
    row = {t: i for i, t in enumerate(texts)}
    c_emb = embed_texts(embed_fn, texts)  # (C, D)
    out = []
    for r, q in zip(records, q_emb):
        scores = c_emb[[row[c] for c in r["chunks"]]] @ q  # (n_chunks,)
        if lexical_weight > 0:
            scores = fuse_scores(scores, lexical_scores(r["question"], r["chunks"]), lexical_weight)
        top = np.argsort(-scores, kind="stable")[:k]
        out.append({**r, "retrieved_context": window_text(r["chunks"], top.tolist(), window),
                    "retrieved": [{"chunk": int(i), "score": float(scores[i])} for i in top],
                    "chunk_scores": scores.astype(float).tolist()})
    return out


def bm25_words(text: str) -> list[str]:
    """The BM25 tokenizer: lower-cased words, English stop words dropped (scikit-learn's list).

    Within one question's handful of chunks, words such as "the", "who" or "was" occur in most of
    them and only add noise to the ranking; dropping them raised recall@1 of the hybrid on the
    training questions (0.843 to 0.851 at 192-token chunks, BM25 weight 0.75).
    """
    return [w for w in re.findall(r"\w+", text.lower()) if w not in ENGLISH_STOP_WORDS]


def lexical_scores(question: str, chunks: Sequence[str]) -> np.ndarray:
    """BM25 (Okapi) scores of ``question`` against each chunk, the lexical baseline.

    Args:
        question: query text.
        chunks: candidate passages.

    Returns:
        float array of shape (len(chunks),).
    """
    if not chunks:
        raise ValueError("lexical_scores needs at least one chunk")
    return np.asarray(BM25Okapi([bm25_words(c) for c in chunks]).get_scores(bm25_words(question)), dtype=float)


def _ranked_relevance(record: dict, score_fn, scores_key: str) -> np.ndarray:
    """Whether each chunk satisfies an evidence group (an answer alias), ordered from best to worst score."""
    if score_fn is not None:
        scores = score_fn(record["question"], record["chunks"])
    elif scores_key in record:
        scores = record[scores_key]
    else:
        raise ValueError(f"record {record.get('id')!r} has no {scores_key!r}; run retrieve() first or pass score_fn")
    rel = np.array([relevant(record, c) for c in record["chunks"]], dtype=bool)
    return rel[np.argsort(-np.asarray(scores, dtype=float), kind="stable")]


def recall_at_k(records: Sequence[dict], k: int, *, scores_key: str = "chunk_scores") -> float:
    """Fraction of records whose k best-scored chunks together hold what they need (``covers``).

    For a single-hop question: some top-k chunk contains an answer alias. For a record with
    ``evidence`` (a comparison): every evidence string occurs in the top-k chunks.

    Args:
        records: retrieved records (``chunks``, ``answer_aliases`` and ``scores_key``).
        k: cut-off.
        scores_key: key holding one score per chunk.

    Returns:
        Recall@k in [0, 1] over all records.
    """
    if not records:
        raise ValueError("recall_at_k needs at least one record")
    _check_ks([k])
    require_keys(records, ("chunks", ANSWER_KEYS), what="recall_at_k", fix=_FROM_QA)
    hits = []
    for r in records:
        if scores_key not in r:
            raise ValueError(f"record {r.get('id')!r} has no {scores_key!r}; run retrieve() first")
        hits.append(covers(r, "\n\n".join(r["chunks"][i] for i in score_order(r, scores_key)[:k])))
    return float(np.mean(hits))


def precision_recall_at_k(records: Sequence[dict], ks: Sequence[int],
                          score_fn: Callable[[str, Sequence[str]], np.ndarray] | None = None) -> pd.DataFrame:
    """Precision@k and recall@k over the records that have at least one relevant chunk.

    A chunk is relevant when it contains an answer alias. Precision@k divides the relevant
    chunks among the top k by k; recall@k is the fraction with a relevant chunk in the top k.

    Args:
        records: records with ``question``, ``chunks``, ``answer_aliases`` (and ``chunk_scores``).
        ks: cut-offs.
        score_fn: ``score_fn(question, chunks)``, e.g. ``lexical_scores``; default ``chunk_scores``.

    Returns:
        DataFrame with columns k, precision, recall, n (records used), n_excluded (no relevant chunk).
    """
    _check_ks(ks)
    require_keys(records, ("chunks", ANSWER_KEYS, *(("question",) if score_fn else ())), what="precision_recall_at_k",
                 fix=_FROM_QA)
    ranked = [rel for r in records if (rel := _ranked_relevance(r, score_fn, "chunk_scores")).any()]
    excluded = len(records) - len(ranked)
    if not ranked:
        raise ValueError(f"none of the {len(records)} records has a chunk containing its answer; cannot score")
    if excluded:
        logger.info("precision/recall: %d of %d records have no chunk with the answer", excluded, len(records))
    rows = [{"k": k, "precision": float(np.mean([rel[:k].sum() / k for rel in ranked])),
             "recall": float(np.mean([rel[:k].any() for rel in ranked])), "n": len(ranked),
             "n_excluded": excluded} for k in ks]
    return pd.DataFrame(rows)


def _check_ks(ks: Sequence[int]) -> None:
    """Refuse an empty list of cut-offs or one below 1 (k=0 would score nothing and divide by zero)."""
    if len(ks) == 0 or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise ValueError(f"cut-offs k must be positive integers, got {list(ks)}")


def plot_precision_recall(df_by_method: dict[str, pd.DataFrame], path: str | os.PathLike | None = None) -> Figure:
    """Two panels, P@k and R@k against k, one line per retrieval method (e.g. MiniLM vs BM25).

    Args:
        df_by_method: method name -> output of ``precision_recall_at_k``.
        path: optional image file (format from its suffix), written atomically.

    Returns:
        The matplotlib Figure.
    """
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    axes = fig.subplots(1, 2)
    for name, df in df_by_method.items():
        for ax, col in zip(axes, ("precision", "recall")):
            ax.plot(df["k"], df[col], marker="o", label=name)
    for ax, title in zip(axes, ("precision@k", "recall@k")):
        ax.set(title=title, xlabel="k", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend()
    if path is not None:
        save_figure(fig, path)
    return fig


def choose_lexical_weight(records: Sequence[dict], embed_fn: EmbedFn, *,
                          weights: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
                          k: int = 1) -> tuple[float, pd.DataFrame]:
    """Recall@k of ``retrieve`` for each BM25 weight; pass *training* questions only.

    Returns:
        ``(best weight, table)``; ties go to the smaller weight.
    """
    rows = [{"lexical_weight": w, f"recall@{k}": recall_at_k(retrieve(records, embed_fn, k=k, lexical_weight=w), k)}
            for w in weights]
    table = pd.DataFrame(rows)
    return float(table.loc[table[f"recall@{k}"].idxmax(), "lexical_weight"]), table


def score_order(record: dict, scores_key: str = "chunk_scores") -> list[int]:
    """Chunk indices from best to worst score (ties keep chunk order)."""
    return sorted(range(len(record["chunks"])), key=lambda i: -record[scores_key][i])


def gold_chunks(record: dict) -> list[int]:
    """Per evidence group, the best-scoring chunk that satisfies it (duplicates removed; may be empty)."""
    order = score_order(record)
    picked = []
    for group in evidence_groups(record):
        hit = next((i for i in order if answer_in_text(group, record["chunks"][i])), None)
        if hit is not None and hit not in picked:
            picked.append(hit)
    return picked


def with_gold_context(records: list[dict]) -> list[dict]:
    """Add ``gold_context`` (an upper bound) and ``context_recall``.

    ``gold_context`` joins, per evidence group (``evidence_groups``), the best-scoring chunk that
    satisfies it, in document order: for a single-hop question the best chunk containing an answer
    alias. It falls back to the top retrieved chunk when nothing satisfies a group (``has_gold``
    False). ``context_recall`` says whether the retrieved context holds everything needed (``covers``).
    """
    require_keys(records, ("chunks", "chunk_scores", ANSWER_KEYS), what="with_gold_context",
                 fix="pass the output of retrieve()")
    out = []
    for r in records:
        gold = gold_chunks(r)
        text = window_text(r["chunks"], gold or score_order(r)[:1], 0)
        has_gold = len(gold) == len(evidence_groups(r)) and covers(r, text)
        out.append({**r, "gold_context": text, "has_gold": has_gold,
                    "context_recall": covers(r, r.get("retrieved_context", ""))})
    return out


def retrieve_and_split(chunked: Sequence[dict], embed_fn: EmbedFn, *, k: int = 1, window: int = 0,
                       val_fraction: float = 0.2, seed: int = 0, lexical_weight: float = 0.0,
                       val_ids: set[str] | None = None,
                       out_dir: str | os.PathLike | None = None) -> tuple[list[dict], list[dict], dict]:
    """Retrieve the context of every question, add the gold chunk, split, and write the JSONL files.

    Args:
        chunked: output of ``chunk_records``.
        embed_fn: the retriever's ``EmbedFn``.
        k, window, lexical_weight: see ``retrieve``.
        val_fraction, seed: see ``split_train_val`` (used when ``val_ids`` is None).
        val_ids: ids of the validation questions (e.g. a film-disjoint split); the rest is training.
        out_dir: where ``training_data.jsonl`` and ``validation_data.jsonl`` go (None: not written).

    Returns:
        ``(train, val, recall)`` with ``recall = {"recall@1", "recall@2", "recall@3", "context_recall"}``
        over all questions (``context_recall``: the fed context holds the evidence, ``covers``).
    """
    retrieved = with_gold_context(retrieve(chunked, embed_fn, k=k, window=window, lexical_weight=lexical_weight))
    if val_ids is None:
        train, val = split_train_val(retrieved, val_fraction=val_fraction, seed=seed)
    else:
        val_ids = {str(i) for i in val_ids}
        train = [r for r in retrieved if str(r["id"]) not in val_ids]
        val = [r for r in retrieved if str(r["id"]) in val_ids]
    if not train or not val:
        raise ValueError(f"the split gave {len(train)} training and {len(val)} validation questions; "
                         "use more questions or another val_fraction")
    if out_dir is not None:
        write_jsonl(Path(out_dir) / "training_data.jsonl", train)
        write_jsonl(Path(out_dir) / "validation_data.jsonl", val)
    recall = {f"recall@{n}": recall_at_k(retrieved, n) for n in (1, 2, 3)}
    recall["context_recall"] = float(np.mean([r["context_recall"] for r in retrieved]))
    return train, val, recall


def compare_retrievers(records: Sequence[dict], embed_fn: EmbedFn, weights: dict[str, float], *,
                       ks: Sequence[int] = (1, 2, 3, 5)) -> dict[str, pd.DataFrame]:
    """``precision_recall_at_k`` of ``retrieve`` at each named BM25 weight (0: MiniLM, 1: BM25, else hybrid)."""
    return {name: precision_recall_at_k(retrieve(records, embed_fn, lexical_weight=w), ks)
            for name, w in weights.items()}


def recall_by_retriever(records: Sequence[dict], embed_fn: EmbedFn, weights: dict[str, float], *,
                        ks: Sequence[int] = (1, 2, 3)) -> dict[str, dict[str, float]]:
    """``recall_at_k`` of ``retrieve`` at each named BM25 weight; every record counts (unlike ``compare_retrievers``)."""
    return {name: {f"recall@{k}": recall_at_k(got, k) for k in ks}
            for name, w in weights.items() for got in [retrieve(records, embed_fn, lexical_weight=w)]}
