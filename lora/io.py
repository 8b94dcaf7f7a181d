"""Save and load only the adapter: PEFT's directory layout, or a single ``.pth`` file.

PEFT layout (readable by ``peft.PeftModel.from_pretrained`` and by Ollama's ``ADAPTER``):
``adapter_model.safetensors`` with keys ``base_model.model.<module>.lora_A.weight`` (r, in) and
``...lora_B.weight`` (out, r), plus ``adapter_config.json``. Loading validates keys and shapes
and names what is wrong. ``.pth`` files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .inject import LoRAConfig, inject_lora, lora_layers
from .layer import LoRAConv1D

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
PEFT_PREFIX = "base_model.model."
PTH_FORMAT = "cinephile-lora-v1"


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
    return config


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into the model's adapters after checking keys and shapes.

    Raises:
        ValueError: missing or unexpected keys, or shapes of another base model.
    """
    own = {f"{n}.lora_{ab}.weight": getattr(layer, f"lora_{ab}").weight
           for n, layer in lora_layers(model) for ab in "AB"}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{source} does not fit this model: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]}; the adapter was saved for another "
            "base model or other target_modules: load it into the base model it was trained on")
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in own.items() if state[k].shape != v.shape]
    if wrong:
        raise ValueError(f"{source} has tensors of the wrong shape ({len(wrong)}), e.g. {wrong[:2]}; "
                         "the adapter belongs to another base model size or rank")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state[k].to(v.dtype))


def _ensure_injected(model: nn.Module, config: LoRAConfig) -> None:
    layers = [layer for _, layer in lora_layers(model)]
    if not layers:
        inject_lora(model, config)
        return
    if any(layer.merged for layer in layers):
        raise RuntimeError("cannot load an adapter into a merged model; call unmerge_lora first")
    for layer in layers:
        layer.set_scaling(config.alpha)


def save_adapter(model: nn.Module, out_dir: str | Path, base_model_name_or_path: str | None = None) -> Path:
    """Write ``adapter_model.safetensors`` + ``adapter_config.json`` in PEFT's layout.

    Args:
        model: a model with LoRA injected.
        out_dir: directory to create or overwrite.
        base_model_name_or_path: recorded in the config; defaults to the model's ``name_or_path``.

    Returns:
        The directory path.
    """
    out_dir = Path(out_dir)
    config = _config_of(model)
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
    _atomic_write(out_dir / WEIGHTS_NAME, lambda p: save_file(state, p, metadata={"format": "pt"}))
    _atomic_write(out_dir / CONFIG_NAME,
                  lambda p: Path(p).write_text(json.dumps(peft_config, indent=2), encoding="utf-8"))
    return out_dir


def read_adapter_config(adapter_dir: str | Path) -> LoRAConfig:
    """Read ``adapter_config.json`` into a ``LoRAConfig`` (validating the PEFT fields)."""
    path = Path(adapter_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: an adapter directory holds {CONFIG_NAME} and "
                                f"{WEIGHTS_NAME} (written by save_adapter or peft's save_pretrained)")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-save the adapter") from None
    if cfg.get("peft_type") != "LORA" or "r" not in cfg or "target_modules" not in cfg:
        raise ValueError(f"{path} is not a LoRA adapter config (need peft_type 'LORA', r, target_modules)")
    targets = cfg["target_modules"]
    return LoRAConfig(r=int(cfg["r"]), alpha=float(cfg.get("lora_alpha", cfg["r"])),
                      dropout=float(cfg.get("lora_dropout", 0.0)),
                      target_modules=targets if isinstance(targets, str) else tuple(targets))


def load_adapter(model: nn.Module, adapter_dir: str | Path) -> nn.Module:
    """Load a PEFT-layout adapter into ``model`` (injecting LoRA first if it has none).

    Raises:
        FileNotFoundError: the directory lacks the adapter files.
        ValueError: unreadable file, or keys/shapes that do not fit this model.
    """
    adapter_dir = Path(adapter_dir)
    config = read_adapter_config(adapter_dir)
    weights = adapter_dir / WEIGHTS_NAME
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
    _ensure_injected(model, config)
    load_adapter_state(model, state, str(weights))
    return model


def save_lora_weights(model: nn.Module, path: str | Path) -> Path:
    """Single-file form: ``{"format", "config", "state_dict"}`` saved with ``torch.save``."""
    path = Path(path)
    config = _config_of(model)
    cfg = asdict(config)
    if not isinstance(cfg["target_modules"], str):
        cfg["target_modules"] = list(cfg["target_modules"])
    payload = {"format": PTH_FORMAT, "config": cfg, "state_dict": adapter_state_dict(model)}
    _atomic_write(path, lambda p: torch.save(payload, p))
    return path


def load_lora_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a file written by ``save_lora_weights`` (``torch.load(weights_only=True)`` only)."""
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
    cfg = dict(payload["config"])
    if not isinstance(cfg["target_modules"], str):
        cfg["target_modules"] = tuple(cfg["target_modules"])
    _ensure_injected(model, LoRAConfig(**cfg))
    load_adapter_state(model, payload["state_dict"], str(path))
    return model
