"""Inject LoRA into a model by module replacement; merge, unmerge, disable; parameter summary.

Wrappers replace their targets with ``setattr`` on the parent module (found through
``named_modules()``), so ``print(model)`` shows them and re-running a cell cannot stack them:
a second injection is refused.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Integral, Real

from torch import nn

from .layer import LoRALayer, is_conv1d, wrap

logger = logging.getLogger(__name__)

GPT2_TARGETS = ("c_attn", "c_proj", "c_fc")  # all Conv1D blocks of GPT-2, never lm_head
LLAMA_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
LLAMA_MLP = ("gate_proj", "up_proj", "down_proj")


def config_problems(r: object, alpha: object, dropout: object, target_modules: object,
                    names: Mapping[str, str] | None = None) -> list[str]:
    """What is wrong with these LoRA settings, one sentence per field (empty when valid).

    The one check of a LoRA configuration: ``LoRAConfig`` runs it on construction (so
    ``inject_lora`` and the savers only ever see valid settings) and the adapter loaders run it
    on the values read from a file, naming the file's own field names through ``names``.
    """
    def name(field: str) -> str:
        return (names or {}).get(field, field)

    def number(x: object) -> bool:
        return isinstance(x, Real) and not isinstance(x, bool)

    problems = []
    if not (isinstance(r, Integral) and not isinstance(r, bool) and r > 0):
        problems.append(f"{name('r')}={r!r} must be a positive integer (the adapter rank, e.g. 8 or 16)")
    if not (number(alpha) and math.isfinite(alpha) and alpha > 0):
        problems.append(f"{name('alpha')}={alpha!r} must be a finite number > 0 (the update is scaled by "
                        "alpha / r; e.g. alpha = 2 * r)")
    if not (number(dropout) and 0 <= dropout < 1):
        problems.append(f"{name('dropout')}={dropout!r} must be a number in [0, 1) (e.g. 0.05, or 0 for none)")
    targets = name("target_modules")
    if isinstance(target_modules, str):
        try:
            re.compile(target_modules)
        except re.error as err:
            problems.append(f"{targets}={target_modules!r} is not a valid regular expression ({err}); pass "
                            "a valid regex or a list of module names such as ['q_proj', 'v_proj']")
    elif not (isinstance(target_modules, (list, tuple)) and target_modules
              and all(isinstance(t, str) and t for t in target_modules)):
        problems.append(f"{targets}={target_modules!r} must be a regex string or a non-empty list of module "
                        "names such as ['q_proj', 'v_proj']")
    return problems


@dataclass(frozen=True)
class LoRAConfig:
    """Where and how big the adapters are."""

    r: int = 16  # adapter rank
    alpha: float = 32.0  # update scaled by alpha / r
    dropout: float = 0.0  # dropout on the adapter input (training only)
    # Module-name suffixes ("q_proj" matches "model.layers.0.self_attn.q_proj"),
    # or one regex string matched against the full module name (re.fullmatch), as in PEFT.
    target_modules: tuple[str, ...] | str = LLAMA_ATTENTION

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, list):  # hashable and immutable like the rest
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        self.validate()
        object.__setattr__(self, "r", int(self.r))  # plain Python numbers: they go to JSON as they are
        object.__setattr__(self, "alpha", float(self.alpha))  # 16 and 16.0 save and compare alike
        object.__setattr__(self, "dropout", float(self.dropout))

    def validate(self) -> None:
        """Raise ``ValueError`` naming every invalid field, its value and the fix."""
        problems = config_problems(self.r, self.alpha, self.dropout, self.target_modules)
        if problems:
            raise ValueError("invalid LoRAConfig: " + "; ".join(problems))

    @classmethod
    def gpt2(cls, **kwargs) -> "LoRAConfig":
        """Preset for GPT-2: every attention and MLP Conv1D block (48 in gpt2-small)."""
        return cls(target_modules=GPT2_TARGETS, **kwargs)

    @classmethod
    def llama(cls, mlp: bool = False, **kwargs) -> "LoRAConfig":
        """Preset for Llama-family models: q/k/v/o, optionally the MLP projections."""
        return cls(target_modules=LLAMA_ATTENTION + (LLAMA_MLP if mlp else ()), **kwargs)

    def matches(self, name: str) -> bool:
        """True if the module called ``name`` is a target."""
        if isinstance(self.target_modules, str):
            return re.fullmatch(self.target_modules, name) is not None
        return any(name == t or name.endswith("." + t) for t in self.target_modules)


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoRALayer]]:
    """Yield ``(name, wrapper)`` for every LoRA wrapper in ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, LoRALayer):
            yield name, module


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapter parameters, collected through the wrappers (not by name matching)."""
    return [p for _, layer in lora_layers(model) for p in layer.adapter_parameters()]


def trainable_summary(model: nn.Module) -> str:
    """The ``trainable params: X || all params: Y || trainable%: Z`` line."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return (f"trainable params: {trainable:,} || all params: {total:,} || "
            f"trainable%: {100 * trainable / max(total, 1):.4f}")


def _shared_weights(model: nn.Module, modules: dict[str, nn.Module], targets: list[str]) -> dict[str, list[str]]:
    """Targets whose weight is also a parameter of another module (tied embeddings), with those names."""
    owners: dict[int, list[str]] = {}
    for name, module in modules.items():
        for pname, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append(f"{name}.{pname}" if name else pname)
    shared = {}
    for t in targets:
        weight = getattr(modules[t], "weight", None)
        others = [o for o in owners.get(id(weight), []) if o != f"{t}.weight"] if weight is not None else []
        if others:
            shared[t] = others
    return shared


def plan_injection(model: nn.Module, config: LoRAConfig) -> dict[str, nn.Module]:
    """The modules ``inject_lora`` would wrap, after every check; the model is not changed.

    Raises:
        RuntimeError: the model already carries LoRA layers.
        ValueError: invalid config, no module matched, or a target's weight is tied to another module.
        TypeError: a matched module is neither ``nn.Linear`` nor ``Conv1D``.
    """
    config.validate()
    if any(True for _ in lora_layers(model)):
        raise RuntimeError("model already has LoRA layers; reload the base model before injecting "
                           "again (load and inject in the same notebook cell)")
    modules = dict(model.named_modules())
    targets = [n for n in modules if n and config.matches(n)]
    if not targets:
        kinds = sorted({n.rsplit(".", 1)[-1] for n, m in modules.items()
                        if isinstance(m, nn.Linear) or is_conv1d(m)})
        raise ValueError(f"no module matched target_modules={config.target_modules!r}; "
                         f"wrappable layer names in this model: {kinds}")
    for name in targets:
        if not (isinstance(modules[name], nn.Linear) or is_conv1d(modules[name])):
            raise TypeError(f"target {name!r} matched but cannot wrap {type(modules[name]).__name__}: LoRA "
                            "supports nn.Linear and GPT-2 Conv1D; narrow target_modules")
    tied = _shared_weights(model, modules, targets)
    if tied:
        name, others = next(iter(tied.items()))
        raise ValueError(f"target {name!r} shares its weight with {others} (tied embeddings); merging LoRA "
                         "into it would also change those: exclude it from target_modules (e.g. lm_head)")
    return {name: modules[name] for name in targets}


def planned_shapes(model: nn.Module, config: LoRAConfig) -> dict[str, tuple[int, int]]:
    """``{"<module>.lora_A.weight": (r, in), "<module>.lora_B.weight": (out, r)}`` that injection would create."""
    shapes = {}
    for name, module in plan_injection(model, config).items():
        n_in, n_out = (module.in_features, module.out_features) if isinstance(module, nn.Linear) \
            else tuple(module.weight.shape)  # Conv1D stores (in, out)
        shapes[f"{name}.lora_A.weight"] = (config.r, n_in)
        shapes[f"{name}.lora_B.weight"] = (n_out, config.r)
    return shapes


def inject_lora(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Wrap every target layer of ``model`` with LoRA, in place, and freeze the base.

    Args:
        model: a model whose targets are ``nn.Linear`` or GPT-2 ``Conv1D`` layers.
        config: rank, alpha, dropout and target module names.

    Returns:
        The names of the wrapped modules.

    Raises:
        RuntimeError: the model already carries LoRA layers.
        ValueError: invalid config, no module matched ``config.target_modules``, or a target has tied weights.
        TypeError: a matched module is neither ``nn.Linear`` nor ``Conv1D``.
    """
    plan = plan_injection(model, config)
    # build every wrapper first: an error leaves the model untouched
    wrappers = {name: wrap(module, config.r, config.alpha, config.dropout) for name, module in plan.items()}
    modules = dict(model.named_modules())
    for p in model.parameters():
        p.requires_grad_(False)
    for name, layer in wrappers.items():
        parent_name, _, child = name.rpartition(".")
        setattr(modules[parent_name] if parent_name else model, child, layer)
        for p in layer.adapter_parameters():
            p.requires_grad_(True)
    model.lora_config = config  # read by save_adapter / save_lora_weights
    logger.info("wrapped %d modules with LoRA (r=%d, alpha=%s); %s", len(wrappers), config.r, config.alpha,
                trainable_summary(model))
    return list(wrappers)


def _require_lora(model: nn.Module, action: str | None = None) -> list[LoRALayer]:
    """The model's wrappers; ``action`` ("merge", "unmerge") is refused inside ``disable_lora``."""
    layers = [layer for _, layer in lora_layers(model)]
    if not layers:
        raise ValueError("model has no LoRA layers; call inject_lora first")
    if action and any(layer.disabled for layer in layers):
        raise RuntimeError(f"cannot {action} LoRA while it is disabled: the model would no longer equal its "
                           f"base model inside the block; leave the `with disable_lora(model):` block first, "
                           f"then call {action}_lora")
    return layers


def merge_lora(model: nn.Module) -> None:
    """Fold every adapter into its base weight (faster inference, plain-model export).

    Refused when any layer is already merged, so an update is never applied twice, inside
    ``disable_lora`` (which must keep giving the base model), and on a bf16 / fp16 base (inexact).
    """
    layers = _require_lora(model, "merge")
    if any(layer.merged for layer in layers):
        raise RuntimeError("LoRA is already merged into this model; call unmerge_lora first")
    for layer in layers:  # checked for every layer before any weight changes
        layer.refuse_low_precision_merge()
    for layer in layers:
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Undo ``merge_lora``: subtract every adapter from its base weight (refused inside ``disable_lora``)."""
    layers = _require_lora(model, "unmerge")
    if not all(layer.merged for layer in layers):
        raise RuntimeError("LoRA is not merged into this model; nothing to unmerge")
    for layer in layers:
        layer.unmerge()


def is_merged(model: nn.Module) -> bool:
    return any(layer.merged for _, layer in lora_layers(model))


@contextmanager
def disable_lora(model: nn.Module):
    """Context manager: inside it the model behaves as its base model (for baselines).

    Merged adapters are unmerged on entry and merged again on exit.
    """
    layers = _require_lora(model)
    was_merged = is_merged(model)
    if was_merged:
        unmerge_lora(model)
    previous = [layer.disabled for layer in layers]
    for layer in layers:
        layer.disabled = True
    try:
        yield model
    finally:
        for layer, flag in zip(layers, previous):
            layer.disabled = flag
        if was_merged:
            merge_lora(model)
