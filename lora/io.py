"""Save and load only the adapter: PEFT's directory layout, or a single ``.pth`` file.

PEFT layout (readable by ``peft.PeftModel.from_pretrained`` and by Ollama's ``ADAPTER``):
``adapter_model.safetensors`` with keys ``base_model.model.<module>.lora_A.weight`` (r, in) and
``...lora_B.weight`` (out, r), plus ``adapter_config.json``. ``.pth`` files are read with
``torch.load(weights_only=True)``.

Loading validates before it mutates: the file's keys and shapes are checked against the model
(or against the layers injection would create) before LoRA is injected or a weight is copied,
so a failed load leaves the model as it was; a config is checked by the one validation of
``lora.inject.config_problems`` (rank, alpha, dropout, target modules) whichever way it arrives.
Writing goes through ``lora.atomic``: an adapter directory is built under a temporary name, then
swapped in as a whole, so an interrupted save never leaves new weights next to an old config,
nor an empty path.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .atomic import atomic_dir, atomic_path, recover_dir
from .inject import LoRAConfig, config_problems, inject_lora, lora_layers, planned_shapes
from .layer import LoRAConv1D

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
PEFT_PREFIX = "base_model.model."
PTH_FORMAT = "cinephile-lora-v1"
# Files an adapter directory may hold; anything else makes save_adapter refuse to replace it.
ADAPTER_FILES = {WEIGHTS_NAME, CONFIG_NAME, "README.md"}
PEFT_NAMES = {"alpha": "lora_alpha", "dropout": "lora_dropout"}  # LoRAConfig field -> adapter_config.json key


# ----------------------------------------------------------------------------- adapter state

def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{"<module>.lora_A.weight": (r, in), "<module>.lora_B.weight": (out, r)}``, on CPU."""
    state = {}
    for name, layer in lora_layers(model):
        state[f"{name}.lora_A.weight"] = layer.lora_A.weight.detach().cpu().contiguous()
        state[f"{name}.lora_B.weight"] = layer.lora_B.weight.detach().cpu().contiguous()
    if not state:
        raise ValueError("model has no LoRA layers; call inject_lora before saving an adapter")
    return state


def _config_of(model: nn.Module) -> LoRAConfig:
    config = getattr(model, "lora_config", None)
    if config is None:
        raise ValueError("model has no lora_config; inject LoRA with lora.inject_lora")
    if not isinstance(config, LoRAConfig):
        raise TypeError(f"model.lora_config is a {type(config).__name__}, not a LoRAConfig; "
                        "set it through lora.inject_lora or a loader")
    config.validate()  # also catches fields changed after construction
    return config


def check_adapter_state(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], source: str) -> None:
    """Raise ``ValueError`` naming missing/unexpected keys or wrong shapes; never mutates."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{source} does not fit this model: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]}; the adapter was saved for another "
            "base model or other target_modules: load it into the base model it was trained on")
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {shape}"
             for k, shape in expected.items() if tuple(state[k].shape) != tuple(shape)]
    if wrong:
        raise ValueError(f"{source} has tensors of the wrong shape ({len(wrong)}), e.g. {wrong[:2]}; "
                         "the adapter belongs to another base model size or rank")


def _adapter_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{"<module>.lora_A.weight": A, "<module>.lora_B.weight": B}`` of the model's wrappers."""
    return {f"{n}.lora_{ab}.weight": getattr(layer, f"lora_{ab}").weight
            for n, layer in lora_layers(model) for ab in "AB"}


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into the model's adapters after checking keys and shapes.

    Raises:
        ValueError: missing or unexpected keys, or shapes of another base model (model unchanged).
    """
    own = _adapter_weights(model)
    check_adapter_state(state, {k: tuple(v.shape) for k, v in own.items()}, source)
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state[k].to(v.dtype))


def _apply(model: nn.Module, config: LoRAConfig, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Validate ``state`` against ``model`` (injected or not), then inject / rescale and copy."""
    layers = [layer for _, layer in lora_layers(model)]
    if any(layer.merged for layer in layers):
        raise RuntimeError("cannot load an adapter into a merged model; call unmerge_lora first")
    if layers:
        expected = {k: tuple(v.shape) for k, v in _adapter_weights(model).items()}
    else:
        expected = planned_shapes(model, config)  # raises without touching the model
    check_adapter_state(state, expected, source)
    if not layers:
        inject_lora(model, config)
    for layer in (layer for _, layer in lora_layers(model)):
        layer.set_scaling(config.alpha)
    load_adapter_state(model, state, source)
    model.lora_config = config  # a later save writes what was loaded (alpha, dropout)
    return model


# ----------------------------------------------------------------------------- PEFT directory

def save_adapter(model: nn.Module, out_dir: str | Path, base_model_name_or_path: str | None = None) -> Path:
    """Write ``adapter_model.safetensors`` + ``adapter_config.json`` in PEFT's layout, as one unit.

    Replacing an existing adapter is safe against crashes: at every instant ``out_dir`` holds
    the complete old adapter or the complete new one, never nothing and never a mix of the two,
    even if the save fails part way (disk full) or the process is killed. The new directory is
    written under a temporary name, flushed to disk, then swapped in with one atomic exchange
    (Linux ``renameat2``); elsewhere a backup of the old directory is renamed back on failure,
    or restored by the next ``load_adapter`` / ``save_adapter`` if the process died.
    Files get the usual permissions (0644 under umask 022), so other users and services such as
    Ollama can read them.

    Args:
        model: a model with LoRA injected.
        out_dir: directory to create or replace (it may only hold adapter files).
        base_model_name_or_path: recorded in the config; defaults to the model's ``name_or_path``.

    Returns:
        The directory path.
    """
    out_dir = Path(out_dir)
    config = _config_of(model)
    recover_dir(out_dir)  # an earlier save that died between renames left the old adapter aside
    if out_dir.is_dir():
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in ADAPTER_FILES)
        if foreign:
            raise FileExistsError(f"{out_dir} holds other files {foreign[:5]}; save_adapter replaces the whole "
                                  "directory: pass a new or adapter-only directory")
    elif out_dir.exists():
        raise FileExistsError(f"{out_dir} is a file; pass a directory path for the adapter")
    state = {PEFT_PREFIX + k: v for k, v in adapter_state_dict(model).items()}
    targets = config.target_modules
    peft_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": targets if isinstance(targets, str) else list(targets),
        "fan_in_fan_out": any(isinstance(m, LoRAConv1D) for _, m in lora_layers(model)),
        "bias": "none",
        "base_model_name_or_path": base_model_name_or_path or getattr(model, "name_or_path", None),
        "inference_mode": True,
        "modules_to_save": None,
    }
    with atomic_dir(out_dir) as tmp:
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(peft_config, indent=2), encoding="utf-8")
        for name in ADAPTER_FILES - {WEIGHTS_NAME, CONFIG_NAME}:
            if (out_dir / name).is_file():
                shutil.copy2(out_dir / name, tmp / name)
    return out_dir


def _peft_fields(cfg: dict) -> dict:
    """The ``LoRAConfig`` fields of a PEFT config as written in the file (not converted)."""
    dropout = cfg.get("lora_dropout")
    return {"r": cfg["r"], "alpha": cfg.get("lora_alpha", cfg["r"]), "dropout": 0.0 if dropout is None else dropout,
            "target_modules": cfg["target_modules"]}


def read_adapter_json(adapter_dir: str | Path) -> dict:
    """The raw ``adapter_config.json`` of a PEFT LoRA adapter, checked for the fields we need.

    A directory left aside by a save that died part way is restored first (``lora.atomic.recover_dir``).
    """
    recover_dir(adapter_dir)
    path = Path(adapter_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: an adapter directory holds {CONFIG_NAME} and "
                                f"{WEIGHTS_NAME} (written by save_adapter or peft's save_pretrained)")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-save the adapter") from None
    if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA" or "r" not in cfg or "target_modules" not in cfg:
        raise ValueError(f"{path} is not a LoRA adapter config (need a JSON object with peft_type 'LORA', "
                         "r, target_modules); re-save the adapter")
    problems = config_problems(**_peft_fields(cfg), names=PEFT_NAMES)
    if problems:
        raise ValueError(f"{path} has invalid values: {'; '.join(problems)}; correct the file or save the "
                         "adapter again")
    return cfg


def read_adapter_config(adapter_dir: str | Path) -> LoRAConfig:
    """Read ``adapter_config.json`` into a ``LoRAConfig`` (validating the PEFT fields).

    An rsLoRA adapter (``use_rslora``: PEFT scales by alpha / sqrt(r)) gets alpha x sqrt(r), so our
    alpha / r scaling gives the same outputs.
    """
    cfg = read_adapter_json(adapter_dir)
    values = _peft_fields(cfg)
    alpha = float(values["alpha"]) * (math.sqrt(values["r"]) if cfg.get("use_rslora") else 1.0)
    return LoRAConfig(r=int(values["r"]), alpha=alpha, dropout=float(values["dropout"]),
                      target_modules=values["target_modules"])


def read_adapter_weights(adapter_dir: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of ``adapter_model.safetensors`` with the PEFT prefix removed."""
    weights = Path(adapter_dir) / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found; save the adapter with save_adapter")
    try:
        raw = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights} is not a readable safetensors file ({err}); "
                         "it may be truncated: save the adapter again") from None
    state = {}
    for key, value in raw.items():
        if not key.startswith(PEFT_PREFIX):
            raise ValueError(f"{weights} has key {key!r} without the PEFT prefix {PEFT_PREFIX!r}; "
                             "not an adapter written by save_adapter or peft")
        state[key[len(PEFT_PREFIX):].replace(".default.", ".")] = value
    return state


def load_adapter(model: nn.Module, adapter_dir: str | Path) -> nn.Module:
    """Load a PEFT-layout adapter into ``model`` (injecting LoRA first if it has none).

    Everything is validated before the model changes: on any error the model is as it was.
    An adapter that a save killed part way left beside ``adapter_dir`` is restored first.

    Raises:
        FileNotFoundError: the directory lacks the adapter files.
        ValueError: unreadable file, or keys/shapes that do not fit this model.
    """
    config = read_adapter_config(adapter_dir)
    state = read_adapter_weights(adapter_dir)
    return _apply(model, config, state, str(Path(adapter_dir) / WEIGHTS_NAME))


# ----------------------------------------------------------------------------- single .pth file

def save_lora_weights(model: nn.Module, path: str | Path) -> Path:
    """Single-file form: ``{"format", "config", "state_dict"}`` saved with ``torch.save``."""
    path = Path(path)
    cfg = asdict(_config_of(model))
    if not isinstance(cfg["target_modules"], str):
        cfg["target_modules"] = list(cfg["target_modules"])
    payload = {"format": PTH_FORMAT, "config": cfg, "state_dict": adapter_state_dict(model)}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _pth_config(cfg, path: Path) -> LoRAConfig:
    if not isinstance(cfg, dict) or "r" not in cfg or "target_modules" not in cfg:
        raise ValueError(f"{path} has no valid LoRA config (need r and target_modules); "
                         "re-save it with save_lora_weights")
    known = {f.name: f.default for f in fields(LoRAConfig)}
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise ValueError(f"{path} has an unknown LoRA config (fields {unknown}); re-save it with save_lora_weights")
    values = {**known, **cfg}
    problems = config_problems(**values)
    if problems:
        raise ValueError(f"{path} has invalid values in its LoRA config: {'; '.join(problems)}; re-save it "
                         "with save_lora_weights")
    return LoRAConfig(**values)


def load_lora_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a file written by ``save_lora_weights`` (``torch.load(weights_only=True)`` only).

    Validated before the model changes, as ``load_adapter``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; train and save the weights first (save_lora_weights)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, foreign pickle, not a torch file at all
        raise ValueError(f"{path} is not a LoRA weights file readable with weights_only=True "
                         f"({type(err).__name__}); it may be truncated or of another format") from None
    if not isinstance(payload, dict) or payload.get("format") != PTH_FORMAT:
        raise ValueError(f"{path} is not a LoRA weights file written by save_lora_weights "
                         f"(expected format {PTH_FORMAT!r})")
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} has no state_dict of tensors; re-save it with save_lora_weights")
    return _apply(model, _pth_config(payload.get("config"), path), state, str(path))
