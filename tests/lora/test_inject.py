"""Injection on tiny GPT-2 (Conv1D) and Llama (nn.Linear) models; merge / disable / training."""

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from lora import (LoRAConfig, LoRAConv1D, LoRALinear, adapter_parameters, disable_lora, inject_lora, is_merged,
                  lora_layers, merge_lora, unmerge_lora)
from tests.helpers import build, randomize_adapters, tiny_gpt2


def test_gpt2_preset_wraps_every_conv1d_and_not_lm_head(caplog):
    caplog.set_level("INFO", logger="lora.inject")
    model = tiny_gpt2()
    n_conv = sum(isinstance(m, Conv1D) for m in model.modules())
    names = inject_lora(model, LoRAConfig.gpt2(r=4))
    assert len(names) == n_conv == 8  # 4 Conv1D blocks per layer, 2 layers
    assert all(isinstance(m, LoRAConv1D) for _, m in lora_layers(model))
    assert not any("lm_head" in n for n in names)
    assert "trainable params: " in caplog.text  # logged, not printed


def test_llama_preset_wraps_linear_projections():
    model, _ = build("llama")
    names = inject_lora(model, LoRAConfig.llama(r=4))
    assert sorted({n.rsplit(".", 1)[1] for n in names}) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert len(names) == 8 and all(isinstance(m, LoRALinear) for _, m in lora_layers(model))


def test_regex_targets():
    model, _ = build("llama")
    names = inject_lora(model, LoRAConfig(r=2, target_modules=r".*layers\.1\.self_attn\.(q|v)_proj"))
    assert names == ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]


def test_noop_at_init_then_changes(model_kind, tokens):
    model, cfg = build(model_kind)
    ref = model(tokens).logits
    inject_lora(model, cfg)
    torch.testing.assert_close(model(tokens).logits, ref, rtol=0, atol=0)
    randomize_adapters(model)
    assert not torch.allclose(model(tokens).logits, ref, atol=1e-3)


def test_base_frozen_and_only_adapters_change_after_training(model_kind, tokens):
    model, cfg = build(model_kind)
    inject_lora(model, cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in adapter_parameters(model)}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(adapter_parameters(model), lr=1e-2)
    model.train()
    for _ in range(3):
        loss = model(tokens, labels=tokens).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".lora_A." in n or ".lora_B." in n for n in changed)
    assert any(".lora_B." in n for n in changed)


def test_merged_logits_equal_unmerged_and_unmerge_restores(model_kind, tokens):
    model, cfg = build(model_kind)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    inject_lora(model, cfg)
    randomize_adapters(model)
    unmerged = model(tokens).logits
    merge_lora(model)
    torch.testing.assert_close(model(tokens).logits, unmerged, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="already merged"):
        merge_lora(model)
    unmerge_lora(model)
    torch.testing.assert_close(model(tokens).logits, unmerged, rtol=1e-5, atol=1e-5)
    for name, layer in lora_layers(model):
        torch.testing.assert_close(layer.base.weight, base_state[f"{name}.weight"], rtol=0, atol=1e-6)


def test_disable_gives_base_model_even_when_merged(model_kind, tokens):
    model, cfg = build(model_kind)
    ref = model(tokens).logits
    inject_lora(model, cfg)
    randomize_adapters(model)
    tuned = model(tokens).logits
    with disable_lora(model):
        torch.testing.assert_close(model(tokens).logits, ref, rtol=0, atol=0)
    torch.testing.assert_close(model(tokens).logits, tuned)
    merge_lora(model)
    with disable_lora(model):
        torch.testing.assert_close(model(tokens).logits, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(tokens).logits, tuned, rtol=1e-5, atol=1e-5)


def test_errors_no_match_and_double_injection():
    model, cfg = build("llama")
    with pytest.raises(ValueError, match=r"no module matched target_modules=\('c_attn',\).*q_proj"):
        inject_lora(model, LoRAConfig(target_modules=("c_attn",)))
    assert not list(lora_layers(model))  # nothing half-done
    inject_lora(model, cfg)
    with pytest.raises(RuntimeError, match="already has LoRA layers"):
        inject_lora(model, cfg)
    with pytest.raises(TypeError, match="'model.embed_tokens' matched but cannot wrap Embedding"):
        inject_lora(build("llama")[0], LoRAConfig(target_modules=("embed_tokens",)))


def test_merge_without_lora_is_refused():
    with pytest.raises(ValueError, match="call inject_lora first"):
        merge_lora(build("gpt2")[0])


def test_tied_lm_head_is_refused_and_the_model_left_untouched():
    model = tiny_gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight  # GPT-2 ties them
    with pytest.raises(ValueError, match=r"'lm_head' shares its weight with \['transformer.wte.weight'\] "
                                         r"\(tied embeddings\).*exclude it"):
        inject_lora(model, LoRAConfig(r=4, target_modules=r".*(c_attn|lm_head)"))
    assert not list(lora_layers(model)) and all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("merged_before", [False, True], ids=["unmerged", "merged"])
def test_merge_and_unmerge_are_refused_inside_disable_lora(model_kind, tokens, merged_before):
    model, cfg = build(model_kind)
    ref = model(tokens).logits
    inject_lora(model, cfg)
    randomize_adapters(model)
    if merged_before:
        merge_lora(model)
    tuned = model(tokens).logits
    with disable_lora(model):
        for action, call in [("merge", merge_lora), ("unmerge", unmerge_lora)]:
            with pytest.raises(RuntimeError, match=rf"cannot {action} LoRA while it is disabled.*leave the "
                                                   rf"`with disable_lora\(model\):` block first"):
                call(model)
        layer = next(layer for _, layer in lora_layers(model))
        with pytest.raises(RuntimeError, match="cannot merge a disabled LoRA layer.*leave the"):
            layer.merge()
        torch.testing.assert_close(model(tokens).logits, ref, rtol=1e-5, atol=1e-5)  # still the base model
    assert is_merged(model) == merged_before
    torch.testing.assert_close(model(tokens).logits, tuned, rtol=1e-5, atol=1e-5)


def test_a_bf16_base_gets_fp32_adapters_that_train_and_refuses_merge(tmp_path):
    """The frozen base held in bf16: fp32 adapters and optimizer state, the base back inside disable_lora,
    merge refused before any weight changes, and the adapter saves and loads like an fp32 one."""
    from lora import LoRAConfig, disable_lora, inject_lora, load_adapter, merge_lora, save_adapter
    from tests.helpers import tiny_llama

    model = tiny_llama().to(torch.bfloat16)
    ids = torch.randint(0, 100, (2, 6))
    with torch.no_grad():
        base_logits = model(ids).logits
    names = inject_lora(model, LoRAConfig.llama(r=4, alpha=8))
    params = [p for p in model.parameters() if p.requires_grad]
    assert params and all(p.dtype == torch.float32 for p in params)
    assert model.model.layers[0].self_attn.q_proj.base.weight.dtype == torch.bfloat16
    opt = torch.optim.AdamW(params, lr=1e-2)
    for autocast in (True, False):  # the adapters run with and without bf16 autocast
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        tuned = model(ids).logits
        with disable_lora(model):
            assert torch.equal(model(ids).logits, base_logits)
    assert not torch.equal(tuned, base_logits)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="cannot merge LoRA into a bfloat16 base weight.*float32"):
        merge_lora(model)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())  # nothing was changed
    save_adapter(model, tmp_path / "adapter")
    fresh = tiny_llama().to(torch.bfloat16)
    inject_lora(fresh, LoRAConfig.llama(r=4, alpha=8))
    load_adapter(fresh, tmp_path / "adapter")
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, tuned) and len(names) == 8
