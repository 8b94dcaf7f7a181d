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

import hashlib
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

from cinephile.chunking import require_keys
from cinephile.index import EmbedFn, embed_texts
from cinephile.io import save_figure, write_jsonl
from cinephile.metrics import normalize_answer

logger = logging.getLogger(__name__)

_ANSWERS = ("evidence", "answer_aliases", "answer")  # what evidence_groups reads, first non-empty one wins
_FROM_QA = "load them with trivia.load_qa_csv() and chunk them with chunking.chunk_records()"


def sentence_transformer_embedder(model, *, batch_size: int = 64, show_progress: bool = False) -> EmbedFn:
    """Wrap a ``SentenceTransformer`` as an ``EmbedFn`` returning normalised float32 rows.

    Args:
        model: a loaded ``sentence_transformers.SentenceTransformer``.
        batch_size: encoding batch size.
        show_progress: show the encoder's progress bar.

    Returns:
        ``embed(texts) -> np.ndarray`` of shape (len(texts), dim); ``embed.name`` names the model.
    """
    def embed(texts: list[str]) -> np.ndarray:
        return model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                            convert_to_numpy=True, show_progress_bar=show_progress).astype(np.float32)

    tok = getattr(model, "tokenizer", None)
    embed.name = str(getattr(tok, "name_or_path", "") or type(model).__name__)
    return embed


def _merge(a: str, b: str) -> str:
    """Join consecutive chunks, writing the sentences they share only once."""
    for k in range(min(len(a), len(b)), 0, -1):
        if (k == len(b) or b[k] in " \n") and a.endswith(b[:k]) and (k == len(a) or a[-k - 1] in " \n"):
            return a + b[k:]
    return a + " " + b


def _window_text(chunks: Sequence[str], picked: Sequence[int], window: int) -> str:
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
    return _window_text(record["chunks"], [hit["chunk"] for hit in record["retrieved"][:k]], 0)


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
        out.append({**r, "retrieved_context": _window_text(r["chunks"], top.tolist(), window),
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


def _ranked_relevance(record: dict, score_fn, scores_key: str) -> np.ndarray:
    """Whether each chunk satisfies an evidence group (an answer alias), ordered from best to worst score."""
    if score_fn is not None:
        scores = score_fn(record["question"], record["chunks"])
    elif scores_key in record:
        scores = record[scores_key]
    else:
        raise ValueError(f"record {record.get('id')!r} has no {scores_key!r}; run retrieve() first or pass score_fn")
    rel = np.array([_relevant(record, c) for c in record["chunks"]], dtype=bool)
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
    require_keys(records, ("chunks", _ANSWERS), what="recall_at_k", fix=_FROM_QA)
    hits = []
    for r in records:
        if scores_key not in r:
            raise ValueError(f"record {r.get('id')!r} has no {scores_key!r}; run retrieve() first")
        hits.append(covers(r, "\n\n".join(r["chunks"][i] for i in _score_order(r, scores_key)[:k])))
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
    require_keys(records, ("chunks", _ANSWERS, *(("question",) if score_fn else ())), what="precision_recall_at_k",
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


def evidence_groups(record: dict) -> list[list[str]]:
    """What a context must hold to answer ``record``: groups of strings, each satisfied by any one of them.

    A single-hop question needs one of its answer aliases; a record with ``evidence`` (e.g. a
    comparison of two films, whose answer "yes" or a film title proves nothing) needs every
    evidence string, such as both films' release years.
    """
    if record.get("evidence"):
        return [[e] for e in record["evidence"]]
    return [list(record.get("answer_aliases") or [record["answer"]])]


def covers(record: dict, text: str) -> bool:
    """Whether ``text`` holds everything ``record`` needs (every group of ``evidence_groups``)."""
    return all(answer_in_text(group, text) for group in evidence_groups(record))


def _relevant(record: dict, chunk: str) -> bool:
    """Whether ``chunk`` satisfies at least one evidence group of ``record``."""
    return any(answer_in_text(g, chunk) for g in evidence_groups(record))


def _score_order(record: dict, scores_key: str = "chunk_scores") -> list[int]:
    """Chunk indices from best to worst score (ties keep chunk order)."""
    return sorted(range(len(record["chunks"])), key=lambda i: -record[scores_key][i])


def _gold_chunks(record: dict) -> list[int]:
    """Per evidence group, the best-scoring chunk that satisfies it (duplicates removed; may be empty)."""
    order = _score_order(record)
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
    require_keys(records, ("chunks", "chunk_scores", _ANSWERS), what="with_gold_context",
                 fix="pass the output of retrieve()")
    out = []
    for r in records:
        gold = _gold_chunks(r)
        text = _window_text(r["chunks"], gold or _score_order(r)[:1], 0)
        has_gold = len(gold) == len(evidence_groups(r)) and covers(r, text)
        out.append({**r, "gold_context": text, "has_gold": has_gold,
                    "context_recall": covers(r, r.get("retrieved_context", ""))})
    return out


def raft_context(record: dict, k: int, *, with_gold: bool) -> str:
    """A training context in the manner of RAFT (Zhang et al. 2024): k chunks, with or without the evidence.

    ``with_gold=True``: the k best-scoring chunks, where chunks that hold a missing evidence group
    replace the lowest-scored ones, so the context covers the question among retrieved distractors.
    ``with_gold=False``: the k best-scoring chunks that satisfy no evidence group (distractors only),
    which teaches the reader that a context need not hold the answer.
    Chunks are joined in document order, as ``retrieve`` does.
    """
    if k < 1:
        raise ValueError(f"need k >= 1, got {k}")
    order = _score_order(record)
    if not with_gold:
        plain = [i for i in order if not _relevant(record, record["chunks"][i])]
        return _window_text(record["chunks"], (plain or order)[:k], 0)
    picked, gold = order[:k], _gold_chunks(record)
    for g in gold:
        if g not in picked:
            spare = [i for i in reversed(picked) if i not in gold]
            if not spare:
                break
            picked[picked.index(spare[0])] = g
    return _window_text(record["chunks"], picked, 0)


def raft_records(records: Sequence[dict], k: int, *, p_gold: float = 0.8, seed: int = 0) -> list[dict]:
    """Training records whose ``train_context`` is ``raft_context`` with the evidence for a ``p_gold`` share.

    The draw is seeded per record id, so the same records always get the same contexts.
    """
    if not 0.0 <= p_gold <= 1.0:
        raise ValueError(f"p_gold must be in [0, 1], got {p_gold}")
    out = []
    for r in records:
        u = int(hashlib.md5(f"raft:{seed}:{r['id']}".encode()).hexdigest()[:8], 16) / 2**32
        out.append({**r, "train_context": raft_context(r, k, with_gold=u < p_gold)})
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
