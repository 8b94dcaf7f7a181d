"""Adapter save/load (PEFT layout and .pth), PEFT interoperability, and every bad adapter file."""

import json

import pytest
import torch

from lora import (inject_lora, load_adapter, load_lora_weights, lora_layers, save_adapter,
                  save_lora_weights)
from lora.io import CONFIG_NAME, WEIGHTS_NAME
from tests.helpers import build, randomize_adapters, tiny_gpt2


def _tuned(kind, seed=0):
    model, cfg = build(kind, seed)
    inject_lora(model, cfg)
    randomize_adapters(model)
    return model, cfg


def test_save_adapter_writes_peft_layout(model_kind, tmp_path):
    model, cfg = _tuned(model_kind)
    save_adapter(model, tmp_path, base_model_name_or_path="tiny")
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"], config["bias"]) == (4, 8.0, "none")
    assert config["fan_in_fan_out"] == (model_kind == "gpt2")
    assert config["target_modules"] == list(cfg.target_modules)
    from safetensors.torch import load_file
    state = load_file(tmp_path / WEIGHTS_NAME)
    n_layers = len(list(lora_layers(model)))
    assert len(state) == 2 * n_layers
    assert all(k.startswith("base_model.model.") and k.endswith(("lora_A.weight", "lora_B.weight"))
               for k in state)
    size = (tmp_path / WEIGHTS_NAME).stat().st_size
    n_params = sum(v.numel() for v in state.values())
    assert 4 * n_params <= size < 4 * n_params + 20_000  # fp32, about 4 bytes per parameter


@pytest.mark.parametrize("fmt", ["peft_dir", "pth"])
def test_save_then_load_into_fresh_model_gives_equal_logits(model_kind, fmt, tmp_path, tokens):
    model, _ = _tuned(model_kind)
    expected = model(tokens).logits
    fresh, _ = build(model_kind)  # same base (seed 0), no LoRA yet: load injects from the config
    if fmt == "peft_dir":
        save_adapter(model, tmp_path / "adapter")
        load_adapter(fresh, tmp_path / "adapter")
    else:
        save_lora_weights(model, tmp_path / "w.pth")
        load_lora_weights(fresh, tmp_path / "w.pth")
    torch.testing.assert_close(fresh(tokens).logits, expected, rtol=0, atol=1e-6)
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files


def test_peft_reads_our_adapter(model_kind, tmp_path, tokens):
    peft = pytest.importorskip("peft")
    model, _ = _tuned(model_kind)
    expected = model(tokens).logits
    save_adapter(model, tmp_path)
    base, _ = build(model_kind)
    peft_model = peft.PeftModel.from_pretrained(base, str(tmp_path)).eval()
    torch.testing.assert_close(peft_model(tokens).logits, expected, rtol=1e-5, atol=1e-5)


def test_we_read_peft_adapter(model_kind, tmp_path, tokens):
    peft = pytest.importorskip("peft")
    base, cfg = build(model_kind)
    peft_cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(cfg.target_modules),
                               fan_in_fan_out=model_kind == "gpt2", init_lora_weights=False)
    peft_model = peft.get_peft_model(base, peft_cfg).eval()
    expected = peft_model(tokens).logits
    peft_model.save_pretrained(str(tmp_path))
    ours, _ = build(model_kind)
    load_adapter(ours, tmp_path)
    torch.testing.assert_close(ours(tokens).logits, expected, rtol=1e-5, atol=1e-5)


def test_missing_and_extra_keys_are_named(tmp_path):
    model, _ = _tuned("llama")
    save_adapter(model, tmp_path)
    from safetensors.torch import load_file, save_file
    state = load_file(tmp_path / WEIGHTS_NAME)
    dropped = sorted(state)[0]
    del state[dropped]
    state["base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight"] = torch.zeros(4, 32)
    save_file(state, tmp_path / WEIGHTS_NAME)
    with pytest.raises(ValueError, match=r"1 missing keys .*1 unexpected keys .*layers\.9"):
        load_adapter(build("llama")[0], tmp_path)


def test_adapter_of_another_base_model_is_refused_by_shape(tmp_path):
    big = tiny_gpt2(n_embd=48)
    inject_lora(big, build("gpt2")[1])
    save_adapter(big, tmp_path)
    with pytest.raises(ValueError, match=r"wrong shape .*another base model"):
        load_adapter(tiny_gpt2(), tmp_path)


def test_adapter_for_other_architecture_is_refused(tmp_path):
    model, _ = _tuned("gpt2")
    save_adapter(model, tmp_path)
    with pytest.raises(ValueError, match="no module matched target_modules"):
        load_adapter(build("llama")[0], tmp_path)


def test_truncated_and_foreign_files(tmp_path):
    model, _ = _tuned("llama")
    save_adapter(model, tmp_path / "a")
    data = (tmp_path / "a" / WEIGHTS_NAME).read_bytes()
    (tmp_path / "a" / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file .*truncated"):
        load_adapter(build("llama")[0], tmp_path / "a")

    save_lora_weights(model, tmp_path / "w.pth")
    raw = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "w.pth").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ValueError, match="not a LoRA weights file readable with weights_only"):
        load_lora_weights(build("llama")[0], tmp_path / "w.pth")

    torch.save(model.state_dict(), tmp_path / "full_model.pth")  # a whole model, not an adapter
    with pytest.raises(ValueError, match="not a LoRA weights file written by save_lora_weights"):
        load_lora_weights(build("llama")[0], tmp_path / "full_model.pth")

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / CONFIG_NAME).write_text('{"peft_type": "PROMPT_TUNING"}')
    with pytest.raises(ValueError, match="not a LoRA adapter config"):
        load_adapter(build("llama")[0], tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="adapter_config.json not found"):
        load_adapter(build("llama")[0], tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="train and save the weights first"):
        load_lora_weights(build("llama")[0], tmp_path / "nowhere.pth")


def test_load_into_merged_model_is_refused(tmp_path):
    from lora import merge_lora
    model, _ = _tuned("llama")
    save_adapter(model, tmp_path)
    merge_lora(model)
    with pytest.raises(RuntimeError, match="merged model; call unmerge_lora"):
        load_adapter(model, tmp_path)


# ---------------------------------------------------------------- validate first, then mutate

def test_save_after_load_into_an_injected_model_writes_the_loaded_alpha(tmp_path, tokens):
    model, cfg = _tuned("llama")
    model.lora_config = cfg.__class__(r=cfg.r, alpha=16.0, target_modules=cfg.target_modules)
    for _, layer in lora_layers(model):
        layer.set_scaling(16.0)
    save_adapter(model, tmp_path / "a16")
    expected = model(tokens).logits
    other, _ = build("llama")
    inject_lora(other, cfg)  # alpha 8 before loading
    load_adapter(other, tmp_path / "a16")
    save_adapter(other, tmp_path / "again")
    assert json.loads((tmp_path / "again" / CONFIG_NAME).read_text())["lora_alpha"] == 16.0
    fresh, _ = build("llama")
    load_adapter(fresh, tmp_path / "again")
    torch.testing.assert_close(fresh(tokens).logits, expected, rtol=0, atol=1e-6)


def _corrupt_keys(adapter_dir):
    from safetensors.torch import load_file, save_file
    state = load_file(adapter_dir / WEIGHTS_NAME)
    state.pop(sorted(state)[0])
    save_file(state, adapter_dir / WEIGHTS_NAME)


@pytest.mark.parametrize("fmt", ["peft_dir", "pth"])
def test_a_failed_load_leaves_a_fresh_model_without_lora(tmp_path, tokens, fmt):
    model, _ = _tuned("llama")
    save_adapter(model, tmp_path / "a")
    _corrupt_keys(tmp_path / "a")
    fresh, _ = build("llama")
    before = fresh(tokens).logits
    with pytest.raises(ValueError, match="missing keys"):
        if fmt == "peft_dir":
            load_adapter(fresh, tmp_path / "a")
        else:
            payload = {"format": "cinephile-lora-v1", "config": {"r": 4, "alpha": 8.0, "dropout": 0.0,
                       "target_modules": ["q_proj"]}, "state_dict": {"x.lora_A.weight": torch.zeros(4, 32)}}
            torch.save(payload, tmp_path / "w.pth")
            load_lora_weights(fresh, tmp_path / "w.pth")
    assert not list(lora_layers(fresh)) and not hasattr(fresh, "lora_config")
    assert all(p.requires_grad for p in fresh.parameters())  # nothing was frozen either
    torch.testing.assert_close(fresh(tokens).logits, before, rtol=0, atol=0)


def test_a_failed_load_leaves_an_injected_model_unchanged(tmp_path, tokens):
    model, cfg = _tuned("llama")
    save_adapter(model, tmp_path / "a")
    cfg_path = tmp_path / "a" / CONFIG_NAME
    cfg_path.write_text(cfg_path.read_text().replace('"lora_alpha": 8.0', '"lora_alpha": 99.0'))
    _corrupt_keys(tmp_path / "a")
    target, _ = _tuned("llama")
    randomize_adapters(target, seed=5)
    before = target(tokens).logits
    with pytest.raises(ValueError, match="missing keys"):
        load_adapter(target, tmp_path / "a")
    assert all(layer.scaling == 2.0 for _, layer in lora_layers(target))  # alpha 8 / r 4, not 99 / 4
    assert target.lora_config.alpha == 8.0
    torch.testing.assert_close(target(tokens).logits, before, rtol=0, atol=0)


def test_an_interrupted_save_keeps_the_previous_adapter_whole(tmp_path, tokens, monkeypatch):
    model, _ = _tuned("llama")
    save_adapter(model, tmp_path / "a")
    expected = model(tokens).logits
    randomize_adapters(model, seed=9)  # new weights that must not end up next to the old config

    def crash(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr("pathlib.Path.write_text", crash)  # the config write fails after the weights
    with pytest.raises(OSError, match="disk full"):
        save_adapter(model, tmp_path / "a")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    fresh, _ = build("llama")
    load_adapter(fresh, tmp_path / "a")
    torch.testing.assert_close(fresh(tokens).logits, expected, rtol=0, atol=1e-6)


def test_save_adapter_refuses_to_replace_a_folder_with_other_files(tmp_path):
    model, _ = _tuned("llama")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{}")
    with pytest.raises(FileExistsError, match=r"holds other files \['metrics.json'\]"):
        save_adapter(model, tmp_path / "run")
    assert (tmp_path / "run" / "metrics.json").read_text() == "{}"


def test_pth_without_config_and_bad_adapter_configs_are_named(tmp_path):
    model, _ = _tuned("llama")
    torch.save({"format": "cinephile-lora-v1", "state_dict": {}}, tmp_path / "noconfig.pth")
    with pytest.raises(ValueError, match="has no valid LoRA config"):
        load_lora_weights(build("llama")[0], tmp_path / "noconfig.pth")
    torch.save({"format": "cinephile-lora-v1", "config": {"r": 4, "target_modules": ["q_proj"], "beta": 1},
                "state_dict": {}}, tmp_path / "oddconfig.pth")
    with pytest.raises(ValueError, match="unknown LoRA config"):
        load_lora_weights(build("llama")[0], tmp_path / "oddconfig.pth")
    from lora import read_adapter_config
    for text, message in [("{oops", "is not valid JSON"), ("[1, 2]", "is not a LoRA adapter config"),
                          ('{"peft_type": "LORA", "r": 0, "target_modules": "q"}', "has invalid values"),
                          ('{"peft_type": "LORA", "r": 4, "target_modules": [1]}', "has invalid values")]:
        (tmp_path / "c").mkdir(exist_ok=True)
        (tmp_path / "c" / CONFIG_NAME).write_text(text)
        with pytest.raises(ValueError, match=message):
            read_adapter_config(tmp_path / "c")
