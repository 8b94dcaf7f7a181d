"""Movie-trivia stages that main.ipynb calls: prompt-format choice, evaluation table, demo answers."""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from pathlib import Path

import pandas as pd

from lora import disable_lora

from .data import atomic_write, write_jsonl
from .generate import generate_answers
from .metrics import exact_match, f1_score, score_predictions
from .prompts import CHAT, PLAIN, trivia_example
from .retrieval import answer_in_text
from .train import evaluate_loss, tokenize_example

logger = logging.getLogger(__name__)


def with_gold_context(records: list[dict]) -> list[dict]:
    """Add ``gold_context``: the best-scoring chunk that contains an answer alias (upper bound).

    Falls back to the top retrieved chunk when no chunk holds an alias.
    """
    out = []
    for r in records:
        order = sorted(range(len(r["chunks"])), key=lambda i: -r["chunk_scores"][i])
        hits = [i for i in order if answer_in_text(r["answer_aliases"], r["chunks"][i])]
        out.append({**r, "gold_context": r["chunks"][(hits or order)[0]], "has_gold": bool(hits)})
    return out


def examples(records: list[dict], tokenizer, style: str, context_key: str | None = "retrieved_context"):
    """Prompt/response pairs for training or evaluation."""
    return [trivia_example(r, tokenizer, style=style, context_key=context_key) for r in records]


def choose_prompt_style(model, tokenizer, records: list[dict], max_len: int = 1024) -> tuple[str, pd.DataFrame]:
    """Measure the base model's loss on the answers under each prompt format; lowest wins.

    The chat template is tried only when the tokenizer has one (instruct models).
    """
    styles = [PLAIN] + ([CHAT] if getattr(tokenizer, "chat_template", None) else [])
    rows = []
    for style in styles:
        items = [tokenize_example(tokenizer, e["prompt"], e["response"], max_len)
                 for e in examples(records, tokenizer, style)]
        rows.append({"style": style, "answer_loss": evaluate_loss(model, items, tokenizer.pad_token_id)})
    table = pd.DataFrame(rows).sort_values("answer_loss").reset_index(drop=True)
    return str(table.loc[0, "style"]), table


# (row name, use the adapter?, context field or None for closed-book)
EVAL_ROWS = [
    ("closed-book (base)", False, None),
    ("base + retrieved context", False, "retrieved_context"),
    ("tuned + retrieved context", True, "retrieved_context"),
    ("tuned + gold context (upper bound)", True, "gold_context"),
]


def evaluate(model, tokenizer, records: list[dict], style: str, *, rows=EVAL_ROWS, batch_size: int = 8,
             max_new_tokens: int = 16, predictions_path: str | Path | None = None) -> pd.DataFrame:
    """EM / F1 per evaluation row; per-question predictions optionally written to JSONL.

    Args:
        model: the model with LoRA injected (base rows run inside ``disable_lora``).
        tokenizer: its tokenizer.
        records: retrieved records (``retrieved_context``, ``gold_context`` for the rows that need them).
        style: prompt style used in training.
        rows: ``(name, tuned, context_key)`` triples.
        predictions_path: JSONL with one line per (row, question).

    Returns:
        DataFrame with columns row, em, f1, n.
    """
    table, lines = [], []
    for name, tuned, key in rows:
        prompts = [e["prompt"] for e in examples(records, tokenizer, style, key)]
        with nullcontext() if tuned else disable_lora(model):
            preds = generate_answers(model, tokenizer, prompts, batch_size=batch_size,
                                     max_new_tokens=max_new_tokens, progress=False)
        table.append({"row": name, **score_predictions(preds, records)})
        lines += [{"row": name, "id": r["id"], "question": r["question"], "prediction": p,
                   "answer": r["answer"], "em": exact_match(p, r["answer_aliases"]),
                   "f1": round(f1_score(p, r["answer_aliases"]), 4)} for r, p in zip(records, preds)]
        logger.info("%s: EM %.1f F1 %.1f", name, table[-1]["em"], table[-1]["f1"])
    if predictions_path:
        write_jsonl(predictions_path, lines)
    return pd.DataFrame(table)


def plot_results(tables: dict[str, pd.DataFrame], path=None):
    """Grouped bars of EM and F1 per row, one panel per evaluation set."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 3.8), squeeze=False)
    for ax, (title, df) in zip(axes[0], tables.items()):
        x = range(len(df))
        ax.bar([i - 0.2 for i in x], df["em"], width=0.4, label="EM")
        ax.bar([i + 0.2 for i in x], df["f1"], width=0.4, label="F1")
        ax.set_xticks(list(x), [r.replace(" (", "\n(").replace(" + ", "\n+ ") for r in df["row"]], fontsize=8)
        ax.set_ylabel("%")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=120)
    return fig


def save_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, default=str)
    return Path(path)


def answer(question: str, model, tokenizer, index, embed_fn, *, style: str, k: int = 1) -> dict:
    """Answer a free-form question from the chunks of the whole corpus (demo)."""
    hits = index.search(question, embed_fn, k=k)
    record = {"id": "demo", "question": question, "answer": "", "retrieved_context": "\n".join(h["text"] for h in hits)}
    prompt = trivia_example(record, tokenizer, style=style)["prompt"]
    pred = generate_answers(model, tokenizer, [prompt], progress=False)[0]
    return {"question": question, "answer": pred, "score": hits[0]["score"], "source": hits[0]["sources"][:3]}
