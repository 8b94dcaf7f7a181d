"""Prompt formats: a plain "Context / Question / Answer" layout, or the model's chat template.

A prompt is the text up to where the model starts answering; the response is the answer text.
Training and generation use the same functions, so they cannot drift apart.
"""

from __future__ import annotations

PLAIN = "plain"
CHAT = "chat"


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


def chat_examples(examples: list[dict], tokenizer, system: str | None = None) -> list[dict]:
    """Wrap ``{"prompt", "response"}`` instructions (e.g. MovieLens) in the chat template; other keys kept."""
    return [{**e, "prompt": format_prompt(e["prompt"], tokenizer, style=CHAT, system=system)} for e in examples]
