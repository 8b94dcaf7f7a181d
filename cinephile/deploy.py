"""Deployment check: run the exported GGUF adapter in llama.cpp (llama-cpp-python) and compare.

The prompts are tokenised once with the Hugging Face tokenizer and the same token ids are fed
to llama.cpp, so any disagreement comes from the runtime (quantised base weights, adapter
layout), not from tokenisation.
"""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

LLAMA_CPP_INSTALL = "pip install llama-cpp-python==0.3.36"


def llama_cpp_generate(base_gguf: str | Path, token_ids: list[list[int]], *, lora_gguf: str | Path | None = None,
                       max_tokens: int = 8, n_ctx: int = 1024, stop: list[str] | None = None) -> list[str]:
    """Greedy completions from llama.cpp for already tokenised prompts.

    Args:
        base_gguf: the base model GGUF (e.g. the bundled SmolLM2 Q4_1 file).
        token_ids: one list of prompt token ids per prompt.
        lora_gguf: a GGUF LoRA adapter (``lora.export_gguf_adapter``), or None for the base model.
        max_tokens: new tokens per prompt.
        n_ctx: llama.cpp context size (must hold the longest prompt + max_tokens).
        stop: stop strings.

    Returns:
        The completion text of each prompt.
    """
    try:
        from llama_cpp import Llama
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"llama.cpp's Python binding is not installed; run `{LLAMA_CPP_INSTALL}`") from None
    kwargs = {"lora_path": str(lora_gguf)} if lora_gguf else {}
    llm = Llama(model_path=str(base_gguf), n_ctx=n_ctx, verbose=False, seed=0, **kwargs)
    out = []
    for ids in tqdm(token_ids, desc="llama.cpp"):
        res = llm.create_completion(ids, max_tokens=max_tokens, temperature=0.0, top_k=1, stop=stop or [])
        out.append(res["choices"][0]["text"])
    llm.close()
    return out


def agreement(a: list, b: list) -> float:
    """Share of positions where ``a`` and ``b`` hold the same value."""
    if len(a) != len(b) or not a:
        raise ValueError(f"need two non-empty lists of equal length, got {len(a)} and {len(b)}")
    return sum(x == y for x, y in zip(a, b)) / len(a)
