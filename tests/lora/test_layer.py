"""The wrappers compute x @ (W + s * B @ A).T + b for both weight layouts, and merge exactly."""

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from lora import LoRAConv1D, LoRALinear
from lora.layer import wrap


def _nonzero(layer):
    torch.manual_seed(7)
    with torch.no_grad():
        layer.lora_B.weight.normal_()
    return layer


def _by_hand(x, w_out_in, bias, layer):
    delta = layer.scaling * layer.lora_B.weight @ layer.lora_A.weight  # (out, in)
    return x @ (w_out_in + delta).T + bias


def test_linear_forward_matches_formula():
    torch.manual_seed(0)
    base = nn.Linear(12, 7)
    layer = _nonzero(LoRALinear(base, r=3, alpha=6))
    x = torch.randn(4, 5, 12)
    expected = _by_hand(x, base.weight, base.bias, layer)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_conv1d_forward_matches_formula():
    torch.manual_seed(0)
    base = Conv1D(nf=7, nx=12)  # weight (in=12, out=7)
    nn.init.normal_(base.weight)
    layer = _nonzero(LoRAConv1D(base, r=3, alpha=6))
    assert (layer.in_features, layer.out_features) == (12, 7)
    x = torch.randn(4, 5, 12)
    expected = _by_hand(x, base.weight.T, base.bias, layer)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_adapter_gradients_match_the_formula():
    """The fused update (one addmm) back-propagates exactly as x @ (s * B @ A).T would."""
    torch.manual_seed(0)
    base = nn.Linear(12, 7)
    layer = _nonzero(LoRALinear(base, r=3, alpha=6))
    x, upstream = torch.randn(4, 5, 12, requires_grad=True), torch.randn(4, 5, 7)
    got = torch.autograd.grad((layer(x) * upstream).sum(), [layer.lora_A.weight, layer.lora_B.weight, x])
    a, b = (w.detach().clone().requires_grad_() for w in (layer.lora_A.weight, layer.lora_B.weight))
    x2 = x.detach().clone().requires_grad_()
    by_hand = x2 @ (base.weight + layer.scaling * b @ a).T + base.bias
    expected = torch.autograd.grad((by_hand * upstream).sum(), [a, b, x2])
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_init_is_a_noop_and_a_uses_kaiming():
    torch.manual_seed(0)
    base = nn.Linear(16, 16)
    layer = LoRALinear(base, r=4, alpha=8)
    x = torch.randn(3, 16)
    assert torch.equal(layer(x), base(x))
    assert torch.count_nonzero(layer.lora_B.weight) == 0
    bound = 1 / 16 ** 0.5  # kaiming_uniform(a=sqrt(5)) on fan_in=16
    assert layer.lora_A.weight.abs().max() <= bound and layer.lora_A.weight.std() > bound / 4
    assert layer.scaling == 2.0


@pytest.mark.parametrize("shape", [(16, 16), (16, 48), (40, 16)])
@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_merge_unmerge_square_and_nonsquare(kind, shape):
    torch.manual_seed(1)
    n_in, n_out = shape
    base = nn.Linear(n_in, n_out) if kind == "linear" else Conv1D(nf=n_out, nx=n_in)
    nn.init.normal_(base.weight)
    original = base.weight.detach().clone()
    layer = _nonzero(wrap(base, r=4, alpha=8))
    x = torch.randn(5, n_in)
    unmerged = layer(x)
    layer.merge()
    torch.testing.assert_close(layer(x), unmerged, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(base.weight, original)
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge()
    torch.testing.assert_close(layer(x), unmerged, rtol=1e-5, atol=1e-5)  # not applied twice
    layer.unmerge()
    torch.testing.assert_close(base.weight, original, rtol=0, atol=1e-6)
    with pytest.raises(RuntimeError, match="not merged"):
        layer.unmerge()


def test_wrap_refuses_other_layers():
    with pytest.raises(TypeError, match="nn.Linear and GPT-2 Conv1D"):
        wrap(nn.Embedding(10, 4), r=2, alpha=2)
    with pytest.raises(ValueError, match="rank r must be positive"):
        LoRALinear(nn.Linear(4, 4), r=0, alpha=1)
