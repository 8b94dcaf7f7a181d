"""The trivia reader's prompts and training data, and the choice of its context and prompt style.

``trivia_examples`` formats a question with its context the way the reader sees it;
``reader_examples`` turns retrieved training records into prompts the way the reader will see
them at test time (RAFT: k retrieved chunks, some without the evidence). ``context_table``
measures how much context the reader needs (chunk size x k) on training questions;
``choose_prompt_style`` measures which prompt format the base model reads best.

Reference:
    Zhang et al. 2024, "RAFT: Adapting Language Model to Domain Specific RAG".
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence

import pandas as pd

from cinephile.batching import pad_id_of, tokenize_example
from cinephile.prompts import CHAT, PLAIN, format_prompt, format_response
from cinephile.train import evaluate_loss, fit_max_len
from cinephile.trivia import chunking, retrieval
from cinephile.trivia.matching import answer_in_text, covers, evidence_groups, relevant
from cinephile.trivia.retrieval import gold_chunks, score_order, window_text

logger = logging.getLogger(__name__)


def reader_contexts(records: Sequence[dict], *, k: int, p_gold: float | None = 0.8,
                    seed: int = 0) -> tuple[list[dict], str]:
    """The training records and the key of the context the reader trains on: RAFT contexts
    (``raft_records``, key "train_context"), or the retrieved context when ``p_gold`` is None."""
    if p_gold is None:
        return list(records), "retrieved_context"
    return raft_records(records, k, p_gold=p_gold, seed=seed), "train_context"


def reader_examples(records: Sequence[dict], tokenizer, style: str, *, k: int, p_gold: float | None = 0.8,
                    seed: int = 0, answer_format: str = "answer") -> list[dict]:
    """Training prompts over ``reader_contexts``."""
    contexts, key = reader_contexts(records, k=k, p_gold=p_gold, seed=seed)
    return trivia_examples(contexts, tokenizer, style, key, answer_format)


def context_table(records: Sequence[dict], tokenizer, embed_fn, *, sizes: Sequence[int] = (128, 192, 256),
                  ks: Sequence[int] = (1, 2, 3), lexical_weight: float = 0.0) -> pd.DataFrame:
    """Recall of the fed context (``covers``) and its mean length in tokens, per chunk size and k.

    Pass *training* questions only: the table chooses how much context the reader gets. Each size
    is chunked and ranked once; the context for each k is the top-k prefix of that ranking.
    """
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive chunk counts, got {list(ks)}")
    rows = []
    for size in sizes:
        ranked = retrieval.retrieve(chunking.chunk_records(records, tokenizer, size), embed_fn, k=max(ks),
                                    lexical_weight=lexical_weight)
        for k in ks:
            contexts = [retrieval.top_k_context(r, k) for r in ranked]
            lengths = [len(t) for t in tokenizer(contexts, add_special_tokens=False)["input_ids"]]
            rows.append({"chunk_tokens": size, "k": k,
                         "context_recall": sum(map(covers, ranked, contexts)) / len(ranked),
                         "context_tokens": sum(lengths) / len(lengths)})
    return pd.DataFrame(rows)


def choose_context(table: pd.DataFrame, *, tolerance: float = 0.02, max_tokens: int = 700) -> dict:
    """The shortest context (mean tokens) whose recall is within ``tolerance`` of the best under ``max_tokens``."""
    fits = table[table["context_tokens"] <= max_tokens]
    if fits.empty:
        raise ValueError(f"no chunk size / k keeps the context under {max_tokens} tokens; raise max_tokens")
    good = fits[fits["context_recall"] >= fits["context_recall"].max() - tolerance]
    best = good.sort_values(["context_tokens", "chunk_tokens"]).iloc[0]
    return {"chunk_tokens": int(best["chunk_tokens"]), "k": int(best["k"])}


TRIVIA_INSTRUCTION = "Answer the question with a short phrase, using the context if it helps."
CHAT_SYSTEM = ("You answer questions about films from the given context. Reply with the answer only: a name, title, "
               "year, number, or yes/no. No sentence.")
# "quote": the reply first quotes the context's words that hold the answer, then the answer, on one line (RAFT's
# chain of thought with quotes); "answer": the answer only
ANSWER_FORMATS = ("answer", "quote")
REPLY_TOKENS = {"answer": 16, "quote": 96}  # generation budget of a reply in each format (evidence, then the answer)
QUOTE_INSTRUCTION = ("Quote the words of the context that answer the question, then answer with a short phrase: "
                     'Evidence: "..." Answer: ...')
QUOTE_SYSTEM = ("You answer questions about films from the given context. Reply in one line: first quote the words "
                'of the context that hold the answer, then the answer (a name, title, year, number, or yes/no): '
                'Evidence: "..." Answer: ...')
ANSWER_MARK = "Answer:"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def check_answer_format(answer_format: str) -> None:
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")


def _clip(sentence: str, group: list[str], max_words: int) -> str:
    """At most ``max_words`` words of ``sentence``: the first window that still holds one of ``group``."""
    words = sentence.split()
    if len(words) <= max_words:
        return " ".join(words)
    for start in range(len(words) - max_words + 1):
        window = " ".join(words[start:start + max_words])
        if answer_in_text(group, window):
            return window
    return " ".join(words[:max_words])


def quote_evidence(record: dict, context: str, *, max_words: int = 24) -> list[str]:
    """The context's sentences that hold the record's evidence, one per evidence group (``evidence_groups``)
    in the context's order, each clipped to ``max_words`` words around it; [] when the context holds none."""
    sentences = [s.strip() for s in _SENTENCE_END.split(context or "") if s.strip()]
    picked: dict[int, str] = {}
    for group in evidence_groups(record):
        for i, sentence in enumerate(sentences):
            if answer_in_text(group, sentence):
                picked.setdefault(i, _clip(sentence, group, max_words))
                break
    return [picked[i] for i in sorted(picked)]


def quote_response(record: dict, context: str) -> str:
    """The "quote" format's target: ``Evidence: "<sentence>" ... Answer: <answer>``; ``Evidence: none.`` when the
    context holds no evidence (the answer is then still the target, as in RAFT's distractor-only contexts)."""
    quotes = quote_evidence(record, context)
    evidence = " ".join(f'"{q}"' for q in quotes) if quotes else "none."
    return f"Evidence: {evidence} {ANSWER_MARK} {record['answer'].strip()}"


def answer_of(text: str) -> str:
    """The answer in a reply: the text after the last "Answer:" (the whole first line when there is none),
    stripped, without a trailing period."""
    line = text.strip().split("\n")[0] if ANSWER_MARK not in text else text.rsplit(ANSWER_MARK, 1)[1]
    line = line.strip()
    return line[:-1].rstrip() if line.endswith(".") else line


def reply_answer(reply: str, answer_format: str) -> str:
    """What the tuned reader's reply in ``answer_format`` answers: a "quote" reply's ``answer_of``; an
    "answer" reply as generated (scored raw, as the reader was trained to reply)."""
    return answer_of(reply) if answer_format == "quote" else reply


def trivia_user_text(question: str, context: str | None, instruction: str = TRIVIA_INSTRUCTION) -> str:
    """The plain prompt's text: instruction, optional context, question."""
    if context:
        return f"{instruction}\n\nContext: {context.strip()}\n\nQuestion: {question.strip()}"
    return f"{instruction}\n\nQuestion: {question.strip()}"


def chat_user_text(question: str, context: str | None) -> str:
    """The user's turn of a chat prompt (after ``CHAT_SYSTEM``): the context when given, and the question."""
    question = question.strip()
    return f"Context:\n{context.strip()}\n\nQuestion: {question}" if context else f"Question: {question}"


def trivia_example(record: dict, tokenizer, *, style: str, context_key: str | None = "retrieved_context",
                   answer_format: str = "answer") -> dict:
    """``{"id", "prompt", "response"}`` for a QA record; ``context_key=None`` gives closed-book.

    The chat style is the prompt an off-the-shelf instruct model reads (``zero_shot``), so a tuned
    instruct reader and its untuned base see the same text. ``answer_format="quote"`` asks for the
    evidence first (``QUOTE_SYSTEM``) and its response is ``quote_response``; read the answer of a
    generated reply with ``answer_of``.
    """
    check_answer_format(answer_format)
    context = record.get(context_key) if context_key else None
    quote = answer_format == "quote"
    if style == CHAT:
        prompt = format_prompt(chat_user_text(record["question"], context), tokenizer, style=CHAT,
                               system=QUOTE_SYSTEM if quote else CHAT_SYSTEM)
    else:
        prompt = format_prompt(trivia_user_text(record["question"], context,
                                                QUOTE_INSTRUCTION if quote else TRIVIA_INSTRUCTION),
                               tokenizer, style=style)
    target = quote_response(record, context or "") if quote else record["answer"]
    return {"id": record["id"], "prompt": prompt, "response": format_response(target, style=style)}


def trivia_examples(records: list[dict], tokenizer, style: str, context_key: str | None = "retrieved_context",
                    answer_format: str = "answer") -> list[dict]:
    """``trivia_example`` for every record (training or evaluation prompts)."""
    return [trivia_example(r, tokenizer, style=style, context_key=context_key, answer_format=answer_format)
            for r in records]


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
    order = score_order(record)
    if not with_gold:
        plain = [i for i in order if not relevant(record, record["chunks"][i])]
        return window_text(record["chunks"], (plain or order)[:k], 0)
    picked, gold = order[:k], gold_chunks(record)
    for g in gold:
        if g not in picked:
            spare = [i for i in reversed(picked) if i not in gold]
            if not spare:
                break
            picked[picked.index(spare[0])] = g
    return window_text(record["chunks"], picked, 0)


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


def choose_prompt_style(model, tokenizer, records: list[dict], max_len: int = 1024) -> tuple[str, pd.DataFrame]:
    """Measure the base model's loss on the answers under each prompt format; the lowest wins.

    The chat template is tried only when the tokenizer has one (instruct models).

    Returns:
        ``(style, table)``: the chosen style and a DataFrame of style, answer_loss.
    """
    if not records:
        raise ValueError("choose_prompt_style needs at least one record")
    styles = [PLAIN] + ([CHAT] if getattr(tokenizer, "chat_template", None) else [])
    max_len = fit_max_len(model, max_len)
    rows = []
    for style in styles:
        items = [tokenize_example(tokenizer, e["prompt"], e["response"], max_len)
                 for e in trivia_examples(records, tokenizer, style)]
        rows.append({"style": style, "answer_loss": evaluate_loss(model, items, pad_id_of(tokenizer))})
    table = pd.DataFrame(rows).sort_values("answer_loss").reset_index(drop=True)
    return str(table.loc[0, "style"]), table
