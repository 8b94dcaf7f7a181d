"""Questions written by an instruct model from the films' paragraphs (RAFT's data recipe), checked twice.

The template questions of the sample come from a few patterns; a reader tuned on them learns the
patterns. Here the bundled instruct model reads one paragraph at a time and writes question / answer
pairs in its own words (``write_prompt``). A pair is kept only when

- its answer is a short span of the paragraph that the question does not already contain, and the
  question names its film (a retrieved context holds passages of several films) (``check_pair``), and
- the same model, reading the paragraph as the reader reads a context (``zero_shot.prompt``), answers
  the question back with that span (exact match after normalisation).

Every dropped pair is counted by reason (``Written.report``). Each record keeps its film, so a
film-disjoint split puts it on its film's side (``attach``): training-film questions train the reader,
validation-film questions are only scored. Written once by ``python -m cinephile.trivia.questions``
into ``Data/generated_questions.jsonl``.

Reference:
    Zhang et al. 2024, "RAFT: Adapting Language Model to Domain Specific RAG".
"""

from __future__ import annotations

import argparse
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from cinephile.generate import generate_answers
from cinephile.prompts import CHAT, format_prompt
from cinephile.trivia.evaluate import exact_match
from cinephile.trivia.matching import answer_in_text, normalize_answer
from cinephile.trivia import zero_shot
from cinephile.trivia.reader import answer_of

WRITE_SYSTEM = "You write quiz questions about films for a reading test."
WRITE_TASK = (
    "Write {n} different quiz questions that the passage answers. Rules:\n"
    "- Each answer is a short phrase copied exactly from the passage: a name, title, year, number or place, "
    "at most five words.\n"
    "- A question never contains its answer.\n"
    "- Every question names the film {title}; never write \"the passage\" or \"this film\".\n"
    "- Vary the questions: who, which, what, when, where, how many; at least one question combines two facts "
    "of the passage (for example the actor who plays a named character, or the film a person directed).\n"
    "Write each question and its answer on two lines:\nQ: <question>\nA: <answer>")
MAX_ANSWER_WORDS = 6
_PAIR = re.compile(r"^\s*Q\d*\s*[:.]\s*(?P<q>.+?)\s*\n\s*A\d*\s*[:.]\s*(?P<a>.+?)\s*$", re.MULTILINE)
_VAGUE = re.compile(r"\b(the passage|this passage|the text|this film|this movie)\b", re.IGNORECASE)
DROP_REASONS = ("not a span", "too long", "answer in question", "vague", "duplicate", "answered back otherwise")
# "vague": the question does not name its film, or speaks of "the passage" / "this film", or is no question


def write_prompt(tokenizer, paragraph: str, n: int, title: str) -> str:
    """The chat prompt asking for ``n`` question / answer pairs about one paragraph of the film ``title``."""
    return format_prompt(f"Passage from the article on the film {title}:\n{paragraph.strip()}\n\n"
                         f"{WRITE_TASK.format(n=n, title=title)}", tokenizer, style=CHAT, system=WRITE_SYSTEM)


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """``(question, answer)`` pairs of a reply in the "Q: ... / A: ..." layout, answers without a final period."""
    return [(m["q"].strip(), m["a"].strip().strip('"').rstrip(".").strip()) for m in _PAIR.finditer(text)]


def check_pair(question: str, answer: str, paragraph: str, title: str) -> str | None:
    """Why a written pair cannot be a reading question (a ``DROP_REASONS`` entry), or None when it can."""
    if not normalize_answer(answer) or not answer_in_text([answer], paragraph):
        return "not a span"
    if len(answer.split()) > MAX_ANSWER_WORDS:
        return "too long"
    if answer_in_text([answer], question):
        return "answer in question"
    if _VAGUE.search(question) or not question.rstrip().endswith("?") or not answer_in_text([title], question):
        return "vague"
    return None


@dataclass
class Written:
    """``write_questions``: the kept records and what was dropped, by reason."""

    records: list[dict]
    written: int  # pairs parsed from the replies
    dropped: Counter = field(default_factory=Counter)
    paragraphs: int = 0
    seconds: float = 0.0

    def report(self) -> dict:
        return {"paragraphs": self.paragraphs, "written": self.written, "kept": len(self.records),
                "dropped": {r: self.dropped.get(r, 0) for r in DROP_REASONS}, "seconds": round(self.seconds, 1)}


def write_questions(model, tokenizer, blocks: dict[str, list[str]], films: Sequence[str], *, per_paragraph: int = 4,
                    batch_size: int = 8, bf16: bool | None = False, progress: bool = True) -> Written:
    """Questions about each paragraph of ``films`` (``blocks``: film -> paragraphs), written and answered back.

    Returns:
        ``Written`` with records ``{"id", "question", "answer", "answer_aliases", "film", "paragraph", "kind"}``
        (kind "generated"), in film and paragraph order.
    """
    missing = [f for f in films if f not in blocks]
    if missing:
        raise ValueError(f"films {missing[:3]} have no paragraphs; pass titles of film_blocks()")
    t0 = time.time()
    items = [(film, i, p) for film in films for i, p in enumerate(blocks[film])]
    replies = generate_answers(model, tokenizer, [write_prompt(tokenizer, p, per_paragraph, film) for film, _, p in items],
                               max_new_tokens=40 * per_paragraph, batch_size=batch_size, stop="\n\n\n",
                               progress=progress, bf16=bf16)
    out = Written([], 0, paragraphs=len(items))
    candidates, seen = [], set()
    for (film, i, paragraph), reply in zip(items, replies):
        for j, (question, answer) in enumerate(parse_pairs(reply)):
            out.written += 1
            key = (film, normalize_answer(question))
            reason = check_pair(question, answer, paragraph, film) or ("duplicate" if key in seen else None)
            seen.add(key)
            if reason:
                out.dropped[reason] += 1
                continue
            candidates.append({"id": f"gen-{_slug(film)}-{i}-{j}", "question": question, "answer": answer,
                               "answer_aliases": [answer], "film": film, "paragraph": i, "kind": "generated",
                               "_text": paragraph})
    back = generate_answers(model, tokenizer, [zero_shot.prompt(tokenizer, c["question"], c["_text"])
                                               for c in candidates],
                            max_new_tokens=16, batch_size=batch_size, progress=progress, bf16=bf16) if candidates else []
    for c, said in zip(candidates, back):
        if exact_match(answer_of(said), c["answer"]):
            out.records.append({k: v for k, v in c.items() if k != "_text"})
        else:
            out.dropped["answered back otherwise"] += 1
    out.seconds = time.time() - t0
    return out


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def attach(generated: Sequence[dict], side: Sequence[dict], *, limit: int, seed: int = 0,
           prefix: str) -> list[dict]:
    """Generated records of the films on one side of a split, each with the context of its film's first record.

    A record about a film of the other side is left out (the split decides, not the file); ``limit`` keeps a
    seeded sample of that many (0: none, None: all). The context is the single-hop record's rebuilt one: the
    film's block among distractors of the same side, so nothing crosses the split.
    """
    contexts: dict[str, str] = {}
    for r in side:
        if r.get("kind", "single") == "single" and r.get("film"):
            contexts.setdefault(r["film"], r["context"])
    mine = [{**g, "id": prefix + g["id"], "context": contexts[g["film"]], "kind": "generated"}
            for g in generated if g.get("film") in contexts]
    if limit is not None and len(mine) > limit:
        keep = sorted(random.Random(f"{seed}-{prefix}generated").sample(range(len(mine)), limit))
        mine = [mine[i] for i in keep]
    return mine


def main(argv: list[str] | None = None) -> None:
    import torch

    from cinephile import io, models
    from cinephile.trivia import data, films

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b", help="the instruct model that writes")
    parser.add_argument("--data-csv", default="Data/movie_trivia_qa.csv")
    parser.add_argument("--per-paragraph", type=int, default=4)
    parser.add_argument("--films", type=int, default=None, help="only the first N films (a quick look)")
    parser.add_argument("--out", default="Data/generated_questions.jsonl")
    args = parser.parse_args(argv)
    records, _ = data.load_qa_csv(args.data_csv)
    blocks = films.film_blocks(records)
    titles = sorted(blocks)[:args.films]
    bf16 = models.native_bf16()
    model, tokenizer = models.load_base_model(args.model, dtype=torch.bfloat16 if bf16 else torch.float32)
    written = write_questions(model, tokenizer, blocks, titles, per_paragraph=args.per_paragraph, bf16=bf16)
    io.write_jsonl(args.out, written.records)
    io.save_json(args.out.rsplit(".", 1)[0] + "_report.json",
                  {"model": args.model, "per_paragraph": args.per_paragraph, "films": len(titles), **written.report()})
    print(written.report())


if __name__ == "__main__":
    main()
