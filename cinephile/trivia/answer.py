"""Answer a question about any film: search the corpus index, then read the top passages.
"""

from __future__ import annotations

from cinephile.embedding import EmbedFn
from cinephile.generate import generate_answers
from cinephile.trivia.index import CorpusIndex
from cinephile.trivia.reader import REPLY_TOKENS, reply_answer, trivia_example


def answer(question: str, model, tokenizer, index: CorpusIndex, embed_fn: EmbedFn, *, style: str,
           k: int = 1, bf16: bool | None = False, answer_format: str = "answer") -> dict:
    """Answer a free-form question from the chunks of the whole corpus (the demo); ``bf16`` as in generation,
    ``answer_format`` as the reader was trained ("quote": the answer after its evidence).

    Returns:
        ``{"question", "answer", "score", "source", "passages"}``: the generated answer, the top
        chunk's score, the ids of up to three records that chunk comes from, and the k chunks read.
    """

    if not question or not question.strip():
        raise ValueError("the question is empty; ask a question about a film")
    hits = index.search(question, embed_fn, k=k)
    record = {"id": "demo", "question": question, "answer": "",
              "retrieved_context": "\n\n".join(h["text"] for h in hits)}
    prompt = trivia_example(record, tokenizer, style=style, answer_format=answer_format)["prompt"]
    reply = generate_answers(model, tokenizer, [prompt], progress=False, bf16=bf16,
                             max_new_tokens=REPLY_TOKENS[answer_format])[0]
    pred = reply_answer(reply, answer_format)
    return {"question": question, "answer": pred, "score": hits[0]["score"], "source": hits[0]["sources"][:3],
            "passages": [h["text"] for h in hits]}
