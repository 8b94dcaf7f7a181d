"""Prompt formats: a plain "Context / Question / Answer" layout, or the model's chat template.

A prompt is the text up to where the model starts answering; the response is the answer text.
Training and generation use the same functions, so they cannot drift apart.
"""

from __future__ import annotations

PLAIN = "plain"
CHAT = "chat"
TRIVIA_INSTRUCTION = "Answer the question with a short phrase, using the context if it helps."
TRIVIA_SYSTEM = "You answer movie trivia questions with a short phrase."
RATING_SYSTEM = "You predict movie ratings. Reply only with 'Rating: x.x'."
RESIDUAL_SYSTEM = ("You adjust a recommender's movie rating prediction for this user. "
                   "Reply only with 'Adjustment: +x.x'.")


def trivia_user_text(question: str, context: str | None) -> str:
    """The user's turn: instruction, optional context, question."""
    if context:
        return f"{TRIVIA_INSTRUCTION}\n\nContext: {context.strip()}\n\nQuestion: {question.strip()}"
    return f"{TRIVIA_INSTRUCTION}\n\nQuestion: {question.strip()}"


def format_prompt(user_text: str, tokenizer=None, *, style: str = PLAIN, system: str | None = None,
                  plain_suffix: str = "\nAnswer:") -> str:
    """Wrap ``user_text`` for the model.

    Args:
        user_text: the instruction / question (already holding any context).
        tokenizer: needed for ``style="chat"`` (its ``chat_template``).
        style: ``"plain"`` (works with any model, e.g. GPT-2) or ``"chat"`` (instruct models).
        system: optional system message for the chat template.
        plain_suffix: text that ends a plain prompt, right before the response.

    Returns:
        The prompt string; the response follows it directly.
    """
    if style == PLAIN:
        return user_text + plain_suffix
    if style != CHAT:
        raise ValueError(f"unknown prompt style {style!r}; use 'plain' or 'chat'")
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt style 'chat' needs a tokenizer with a chat template; use style='plain' "
                         "for base models such as GPT-2")
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user_text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def format_response(answer: str, *, style: str = PLAIN) -> str:
    """The target text: plain prompts end with "Answer:", so the answer starts with a space."""
    return (" " if style == PLAIN else "") + answer.strip()


def trivia_example(record: dict, tokenizer, *, style: str, context_key: str | None = "retrieved_context") -> dict:
    """``{"id", "prompt", "response"}`` for a QA record; ``context_key=None`` gives closed-book."""
    context = record.get(context_key) if context_key else None
    prompt = format_prompt(trivia_user_text(record["question"], context), tokenizer, style=style,
                           system=TRIVIA_SYSTEM if style == CHAT else None)
    return {"id": record["id"], "prompt": prompt, "response": format_response(record["answer"], style=style)}


def trivia_examples(records: list[dict], tokenizer, style: str,
                    context_key: str | None = "retrieved_context") -> list[dict]:
    """``trivia_example`` for every record (training or evaluation prompts)."""
    return [trivia_example(r, tokenizer, style=style, context_key=context_key) for r in records]


def chat_examples(examples: list[dict], tokenizer, system: str | None = None) -> list[dict]:
    """Wrap ``{"prompt", "response"}`` instructions (e.g. MovieLens) in the chat template; other keys kept."""
    return [{**e, "prompt": format_prompt(e["prompt"], tokenizer, style=CHAT, system=system)} for e in examples]
