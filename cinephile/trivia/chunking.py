"""Sentence splitting and token-budgeted chunking of long contexts.

A context is cut into lines (paragraph breaks and line breaks are hard boundaries),
each line into sentences by a regular expression that leaves abbreviations ("Mr.",
"Dr.", "e.g."), initials ("J. R. R. Tolkien"), dotted acronyms ("U.S.") and decimals
("3.5") intact. Whole sentences are then packed greedily into chunks of at most
``max_tokens`` tokens of the model's own tokenizer; consecutive chunks share
``overlap_sentences`` sentences so an answer near a border is whole in one chunk.

References:
    Kiss & Strunk 2006, "Unsupervised Multilingual Sentence Boundary Detection" (Punkt),
    whose abbreviation and initial heuristics the regular expression follows.
    Lewis et al. 2020, "Retrieval-Augmented Generation" (chunked passages + dense retrieval).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from joblib import Parallel, delayed
from tqdm.auto import tqdm

from cinephile.io import require_keys

logger = logging.getLogger(__name__)

_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt ft no nos vs etc e.g i.e cf al approx inc ltd co corp bros dept est fig vol "
    "gen col capt lt sgt cmdr adm gov sen rep rev hon pres jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
# Words that start a new sentence even after a dotted acronym such as "U.S.".
_STARTERS = frozenset("The He She It They In This His Her Its Their After However But A An On At".split())
# Sentence-final punctuation, closing quotes/brackets, whitespace, then an uppercase letter or digit;
# or CJK full-width sentence ends, which need no following space. A match only starts at the first
# mark of a run (the look-behind): tried from every mark of a long run such as "......", the run would
# be rescanned from each one, quadratic in its length.
_BOUNDARY = re.compile(r"(?<![.!?…])[.!?…]+[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9À-ÖØ-Þ])"
                       r"|[。！？]+[」』）”’]*\s*")
_WORD = re.compile(r"\S+")
_LOOKBACK = 64  # characters searched backwards for the word before a period (keeps splitting linear)
_UNKNOWN_MAX_LENGTH = 1_000_000  # HF uses ~1e30 as "no limit known"


def _is_false_boundary(text: str, m: re.Match) -> bool:
    """True when the period ending at ``m`` belongs to an abbreviation, initial or acronym."""
    if not m.group().startswith(".") or m.group().startswith(".."):
        return False
    lo = max(0, m.start() - _LOOKBACK)  # only a bounded look-back: no slicing of the whole text
    word = text[max(text.rfind(" ", lo, m.start()) + 1, lo): m.start()].lstrip("\"'“‘([")
    if word.lower() in _ABBREVIATIONS or re.fullmatch(r"[A-Z]", word):
        return True
    if re.fullmatch(r"(?:[A-Za-z]\.)+[A-Za-z]", word):  # U.S, U.K, e.g
        nxt = _WORD.match(text, m.end())
        return (nxt.group() if nxt else "") not in _STARTERS
    return False


def _split_line(line: str) -> list[str]:
    out, start = [], 0
    for m in _BOUNDARY.finditer(line):
        if not _is_false_boundary(line, m):
            out.append(line[start: m.end()].strip())
            start = m.end()
    out.append(line[start:].strip())
    return [s for s in out if s]


def _units(text: str) -> list[tuple[str, bool]]:
    """(sentence, starts_a_new_line) pairs."""
    units = []
    for line in text.splitlines():
        for i, sentence in enumerate(_split_line(" ".join(line.split()))):
            units.append((sentence, i == 0))
    return units


def split_sentences(text: str) -> list[str]:
    """Split text into sentences; line and paragraph breaks always end a sentence.

    Args:
        text: any text.

    Returns:
        The sentences, stripped, in order (empty list for blank text).
    """
    return [s for s, _ in _units(text)]


def chunk_budget(tokenizer, *, window: int | None = None, reserve_tokens: int = 64,
                 max_chunk_tokens: int | None = None) -> int:
    """Tokens left for a context chunk once prompt template, question and answer are reserved.

    Args:
        tokenizer: HF tokenizer; its ``model_max_length`` is the default window.
        window: model context length; required when the tokenizer does not know it.
        reserve_tokens: tokens kept for the template, question and answer.
        max_chunk_tokens: optional upper bound (smaller chunks retrieve more precisely).

    Returns:
        The chunk size in tokens.
    """
    if window is None:
        window = getattr(tokenizer, "model_max_length", None)
        if window is None or window >= _UNKNOWN_MAX_LENGTH:
            raise ValueError(
                f"tokenizer has no usable model_max_length ({window}); pass window=, e.g. the model "
                "config's max_position_embeddings"
            )
    budget = window - reserve_tokens
    if max_chunk_tokens is not None:
        budget = min(budget, max_chunk_tokens)
    if budget <= 0:
        raise ValueError(
            f"chunk budget is {budget} tokens (window {window}, reserve_tokens {reserve_tokens}, "
            f"max_chunk_tokens {max_chunk_tokens}); use a larger window or fewer reserved tokens"
        )
    return budget


def _encode_many(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


_MAX_CHAR_TOKENS = 8  # byte-level tokenizers spread one character over at most 4 byte tokens


def _split_long(text: str, tokenizer, max_tokens: int) -> list[str]:
    """Cut a sentence longer than ``max_tokens`` into decoded token windows that fit.

    A window never ends inside a multi-byte character (byte-level BPE can split CJK or emoji
    across tokens; decoding half a character gives U+FFFD): it is shortened until it decodes
    cleanly, or lengthened when a single character needs more than one token.
    """
    ids, pieces, i = tokenizer.encode(text, add_special_tokens=False), [], 0
    had_fffd = "\ufffd" in text

    def clean(piece: str) -> bool:
        return had_fffd or "\ufffd" not in piece

    while i < len(ids):
        width = min(max_tokens, len(ids) - i)
        while True:  # decode -> encode may not round-trip; shrink until the piece fits and is whole
            piece = tokenizer.decode(ids[i: i + width])
            if clean(piece) and (width == 1 or len(tokenizer.encode(piece, add_special_tokens=False)) <= max_tokens):
                break
            if width == 1:  # one token is part of a character: extend to the character's end
                while width < _MAX_CHAR_TOKENS and i + width < len(ids) and not clean(piece):
                    width += 1
                    piece = tokenizer.decode(ids[i: i + width])
                break
            width -= 1
        if piece.strip():
            pieces.append(piece.strip())
        i += width
    return pieces


def _join(units: Sequence[tuple[str, bool]]) -> str:
    return "".join(("" if i == 0 else "\n" if new_line else " ") + s for i, (s, new_line) in enumerate(units))


def chunk_text(text: str, tokenizer, max_tokens: int, *, overlap_sentences: int = 1) -> list[str]:
    """Pack whole sentences greedily into chunks of at most ``max_tokens`` tokens.

    Args:
        text: the context.
        tokenizer: HF-style tokenizer (``__call__`` on a list, ``encode``, ``decode``);
            counts use ``add_special_tokens=False``.
        max_tokens: chunk size in tokens (see ``chunk_budget``).
        overlap_sentences: sentences repeated at the start of the next chunk (fewer when
            they would not fit next to the new sentence).

    Returns:
        Chunks in document order; sentences are joined by a space, or a newline at line breaks.
    """
    if not text or not text.strip():
        raise ValueError("cannot chunk empty text; drop records with an empty context first")
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}; see chunk_budget()")
    if overlap_sentences < 0:
        raise ValueError(f"overlap_sentences must be >= 0, got {overlap_sentences}")
    sentences, units = _units(text), []
    for (sentence, new_line), ids in zip(sentences, _encode_many(tokenizer, [s for s, _ in sentences])):
        if len(ids) <= max_tokens:
            units.append((sentence, new_line, len(ids)))
        else:
            pieces = _split_long(sentence, tokenizer, max_tokens)
            counts = [len(x) for x in _encode_many(tokenizer, pieces)]
            units += [(p, new_line and j == 0, c) for j, (p, c) in enumerate(zip(pieces, counts))]
    counts = [c for *_, c in units]
    units = [(s, nl) for s, nl, _ in units]
    chunks, start, n = [], 0, len(units)
    while start < n:
        end, total = start, 0
        while end < n and (end == start or total + counts[end] <= max_tokens):
            total += counts[end]
            end += 1
        chunk = _join(units[start:end])
        while end - start > 1 and len(tokenizer.encode(chunk, add_special_tokens=False)) > max_tokens:
            end -= 1  # joining can merge tokens differently from the per-sentence counts
            chunk = _join(units[start:end])
        chunks.append(chunk)
        if end >= n:
            break
        nxt = max(end - overlap_sentences, start + 1)
        while nxt < end and sum(counts[nxt: end + 1]) > max_tokens:
            nxt += 1
        start = nxt
    return chunks


def _chunk_one(text: str, tokenizer, max_tokens: int, overlap_sentences: int) -> tuple[list[str], int]:
    chunks = chunk_text(text, tokenizer, max_tokens, overlap_sentences=overlap_sentences)
    return chunks, len(tokenizer.encode(text, add_special_tokens=False))


def chunk_records(records: Sequence[dict], tokenizer, max_tokens: int, *, overlap_sentences: int = 1,
                  n_jobs: int = 1, progress: bool = False) -> list[dict]:
    """Chunk the ``context`` of every record; identical contexts are chunked once.

    Args:
        records: QA records with ``id`` and ``context``.
        tokenizer: tokenizer used to count tokens (picklable when ``n_jobs != 1``).
        max_tokens: chunk size in tokens.
        overlap_sentences: see ``chunk_text``.
        n_jobs: joblib workers over distinct contexts (-1 = all cores); output is identical.
        progress: show a tqdm bar.

    Returns:
        New records without ``context``, with ``chunks`` (list[str]) and ``n_context_tokens``.
    """
    require_keys(records, ("id", "context"), what="chunk_records", fix="load records with data.load_qa_csv()")
    for r in records:
        if not isinstance(r["context"], str) or not r["context"].strip():
            raise ValueError(f"record {r.get('id')!r} has no context to chunk; drop it or fill its context")
    contexts = list(dict.fromkeys(r["context"] for r in records))
    jobs = (delayed(_chunk_one)(c, tokenizer, max_tokens, overlap_sentences) for c in contexts)
    if n_jobs == 1:
        results = (_chunk_one(c, tokenizer, max_tokens, overlap_sentences) for c in contexts)
    else:
        results = Parallel(n_jobs=n_jobs, return_as="generator")(jobs)
    done = dict(zip(contexts, tqdm(results, total=len(contexts), desc="chunking", disable=not progress)))
    logger.info("chunked %d records (%d distinct contexts)", len(records), len(contexts))
    out = []
    for r in records:
        chunks, n_tokens = done[r["context"]]
        rec = {k: v for k, v in r.items() if k != "context"}
        out.append({**rec, "chunks": list(chunks), "n_context_tokens": n_tokens})
    return out
