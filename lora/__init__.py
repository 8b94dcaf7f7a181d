"""A small from-scratch LoRA for PyTorch: ``nn.Linear`` and GPT-2 ``Conv1D`` wrappers, an injector,
merge / unmerge / disable, and adapter save / load in PEFT's layout (plus a GGUF export for llama.cpp).

    from lora import LoRAConfig, inject_lora, save_adapter
    inject_lora(model, LoRAConfig.llama(r=16, alpha=32))
"""

from .inject import (LoRAConfig, adapter_parameters, disable_lora, inject_lora, is_merged,
                     lora_layers, merge_lora, plan_injection, trainable_summary, unmerge_lora)
from .io import (adapter_state_dict, load_adapter, load_lora_weights, read_adapter_config,
                 save_adapter, save_lora_weights)
from .layer import LoRAConv1D, LoRALayer, LoRALinear

__all__ = [
    "LoRAConfig", "LoRALayer", "LoRALinear", "LoRAConv1D", "inject_lora", "merge_lora", "unmerge_lora",
    "disable_lora", "is_merged", "lora_layers", "adapter_parameters", "trainable_summary",
    "adapter_state_dict", "save_adapter", "load_adapter", "read_adapter_config", "save_lora_weights",
    "load_lora_weights", "plan_injection", "export_gguf_adapter",
]


def __getattr__(name):  # the GGUF export needs the `gguf` package: import it only when used
    if name == "export_gguf_adapter":
        from . import export
        return getattr(export, name)
    raise AttributeError(f"module 'lora' has no attribute {name!r}")
