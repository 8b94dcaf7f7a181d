"""Shared fixtures: tiny random GPT-2 and Llama models (no downloads), paths to the shared data."""

from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def tiny_gpt2(seed: int = 0, n_embd: int = 32) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=2, n_embd=n_embd, n_head=2, vocab_size=101, n_positions=64,
                     bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(params=["gpt2", "llama"])
def model_kind(request):
    return request.param


def build(kind: str, seed: int = 0):
    """(model, LoRAConfig) for a tiny model of the given kind."""
    from lora import LoRAConfig
    if kind == "gpt2":
        return tiny_gpt2(seed), LoRAConfig.gpt2(r=4, alpha=8)
    return tiny_llama(seed), LoRAConfig.llama(r=4, alpha=8, mlp=True)


@pytest.fixture
def tokens():
    torch.manual_seed(123)
    return torch.randint(2, 101, (2, 12))


def randomize_adapters(model, seed: int = 1, std: float = 0.2) -> None:
    """Give every B a non-zero value so the adapter changes the output."""
    from lora import lora_layers
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=g) * std)
