"""LoRA wrapper layers: one per base layer kind, by composition over the frozen base layer.

A wrapped layer computes ``base(x) + scaling * B(A(dropout(x)))`` with ``scaling = alpha / r``,
``A`` Kaiming-uniform and ``B`` zero, so a freshly wrapped model equals its base model.

The frozen base may be held in bf16 / fp16 (half the memory, no cast per forward under autocast);
the adapters are then created in fp32 (``adapter_dtype``), so the optimizer updates full-precision
values, and merging is refused: a bf16 weight cannot take the update and give it back exactly.

Two base layouts exist:
- ``nn.Linear`` stores its weight as ``(out_features, in_features)``: ``y = x @ W.T + b``.
- GPT-2's ``transformers.pytorch_utils.Conv1D`` stores it as ``(in_features, out_features)``:
  ``y = x @ W + b``. Merging must add the transposed update.

References: Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models" (2021);
loralib (microsoft/LoRA) and torchtune's ``LoRALinear``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


LOW_PRECISION = (torch.bfloat16, torch.float16)


def adapter_dtype(weight_dtype: torch.dtype) -> torch.dtype:
    """The adapters' dtype for a base weight of ``weight_dtype``: fp32 for a bf16 / fp16 base, else the same."""
    return torch.float32 if weight_dtype in LOW_PRECISION else weight_dtype


class LoRALayer(nn.Module):
    """Common part of the wrappers: the adapter ``A`` (r x in) and ``B`` (out x r).

    Args:
        base: the layer to adapt; its parameters are left untouched (frozen by the injector).
        in_features: input size of ``base``.
        out_features: output size of ``base``.
        r: adapter rank.
        alpha: scaling numerator; the update is scaled by ``alpha / r``.
        dropout: dropout probability on the adapter input.
    """

    def __init__(self, base: nn.Module, in_features: int, out_features: int,
                 r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if r <= 0:
            raise ValueError(f"LoRA rank r must be positive, got {r}")
        self.base = base
        self.in_features, self.out_features = in_features, out_features
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        weight = self.base_weight()
        dtype = adapter_dtype(weight.dtype)
        # Names follow PEFT so state-dict keys read "<module>.lora_A.weight".
        self.lora_A = nn.Linear(in_features, r, bias=False, device=weight.device, dtype=dtype)
        self.lora_B = nn.Linear(r, out_features, bias=False, device=weight.device, dtype=dtype)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False  # True while the update is folded into the base weight
        self.disabled = False  # True inside ``disable_lora``: behave as the base layer
        self.reset_adapter()

    def reset_adapter(self) -> None:
        """A Kaiming-uniform (as nn.Linear's default), B zero: the update starts at exactly 0."""
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def base_weight(self) -> torch.Tensor:
        return self.base.weight

    def delta_weight(self) -> torch.Tensor:
        """The update ``scaling * B @ A`` in the (out, in) layout, computed in fp32."""
        a = self.lora_A.weight.float()  # (r, in)
        b = self.lora_B.weight.float()  # (out, r)
        return (b @ a) * self.scaling  # (out, in)

    def _delta_in_base_layout(self) -> torch.Tensor:
        raise NotImplementedError

    def set_scaling(self, alpha: float) -> None:
        if self.merged:
            raise RuntimeError("cannot change alpha of a merged LoRA layer; call unmerge_lora first")
        self.alpha, self.scaling = alpha, alpha / self.r

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters of this wrapper: ``[A, B]``."""
        return [self.lora_A.weight, self.lora_B.weight]

    def _refuse_while_disabled(self, action: str) -> None:
        if self.disabled:
            raise RuntimeError(f"cannot {action} a disabled LoRA layer (inside disable_lora, the model must "
                               "equal its base model); leave the `with disable_lora(model):` block first")

    def refuse_low_precision_merge(self) -> None:
        """Merging into a bf16 / fp16 weight rounds it: unmerge could not give the base model back."""
        dtype = self.base_weight().dtype
        if dtype in LOW_PRECISION:
            raise RuntimeError(f"cannot merge LoRA into a {str(dtype).removeprefix('torch.')} base weight: rounding "
                               "would make unmerge inexact and change the base model; load the base model in "
                               "float32 to merge (the adapter's forward pass needs no merge)")

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight. Refused when already merged or when the weight is bf16 / fp16."""
        if self.merged:
            raise RuntimeError("LoRA layer is already merged; merging twice would apply the update twice")
        self._refuse_while_disabled("merge")
        self.refuse_low_precision_merge()
        w = self.base_weight()
        w.add_(self._delta_in_base_layout().to(w.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the update from the base weight again. Refused when not merged."""
        if not self.merged:
            raise RuntimeError("LoRA layer is not merged; nothing to unmerge")
        self._refuse_while_disabled("unmerge")
        w = self.base_weight()
        w.sub_(self._delta_in_base_layout().to(w.dtype))
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., in)
        out = self.base(x)  # (..., out)
        if self.merged or self.disabled:
            return out
        h = self.lora_A(self.lora_dropout(x.to(self.lora_A.weight.dtype)))  # (..., r)
        if h.dtype == out.dtype:  # one GEMM scales the update and adds it to the base output, in place of
            # a multiply and an add over the (..., out) tensor
            flat = torch.addmm(out.reshape(-1, out.shape[-1]), h.reshape(-1, self.r), self.lora_B.weight.t(),
                               alpha=self.scaling)
            return flat.view(out.shape)
        return out + self.lora_B(h * self.scaling).to(out.dtype)  # fp32 adapters on a bf16 / fp16 base

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, merged={self.merged}"


class LoRALinear(LoRALayer):
    """LoRA around ``nn.Linear`` (weight ``(out, in)``): Llama's q/k/v/o and MLP projections."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps nn.Linear, got {type(base).__name__}")
        super().__init__(base, base.in_features, base.out_features, r, alpha, dropout)

    def _delta_in_base_layout(self) -> torch.Tensor:
        return self.delta_weight()  # (out, in), as nn.Linear stores it


class LoRAConv1D(LoRALayer):
    """LoRA around GPT-2's ``Conv1D`` (weight ``(in, out)``, ``nf`` = out): c_attn, c_proj, c_fc."""

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0):
        if not is_conv1d(base):
            raise TypeError(f"LoRAConv1D wraps transformers' Conv1D, got {type(base).__name__}")
        in_features, out_features = base.weight.shape  # Conv1D: (in, out)
        super().__init__(base, in_features, out_features, r, alpha, dropout)

    def _delta_in_base_layout(self) -> torch.Tensor:
        return self.delta_weight().T  # (in, out), as Conv1D stores it


def is_conv1d(module: nn.Module) -> bool:
    """True for transformers' GPT-2 style ``Conv1D`` (checked by class name: no hard import)."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and module.weight.dim() == 2


def wrap(module: nn.Module, r: int, alpha: float, dropout: float = 0.0) -> LoRALayer:
    """Return the LoRA wrapper that fits ``module``'s kind, or raise ``TypeError``."""
    if isinstance(module, nn.Linear):
        return LoRALinear(module, r, alpha, dropout)
    if is_conv1d(module):
        return LoRAConv1D(module, r, alpha, dropout)
    raise TypeError(f"cannot wrap {type(module).__name__}: LoRA supports nn.Linear and GPT-2 Conv1D")
