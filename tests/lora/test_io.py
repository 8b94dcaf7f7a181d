"""Adapter save/load (PEFT layout and .pth), PEFT interoperability, and every bad adapter file."""

import json

import pytest
import torch

from lora import (LoRAConfig, inject_lora, load_adapter, load_lora_weights, lora_layers, save_adapter,
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


@pytest.mark.parametrize("rslora", [False, True])
def test_we_read_peft_adapter(model_kind, tmp_path, tokens, rslora):
    peft = pytest.importorskip("peft")
    base, cfg = build(model_kind)
    peft_cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(cfg.target_modules), use_rslora=rslora,
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
    text = cfg_path.read_text()
    assert '"lora_alpha": 8.0' in text
    cfg_path.write_text(text.replace('"lora_alpha": 8.0', '"lora_alpha": 99.0'))
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


# ---------------------------------------------------------------- one validation of a LoRA config

@pytest.mark.parametrize("fields, message", [
    ({"r": 0}, r"r=0 must be a positive integer"),
    ({"r": True}, r"r=True must be a positive integer"),
    ({"alpha": 0}, r"alpha=0 must be a finite number > 0"),
    ({"alpha": -8.0}, r"alpha=-8.0 must be a finite number > 0"),
    ({"alpha": float("inf")}, r"alpha=inf must be a finite number > 0"),
    ({"alpha": "16"}, r"alpha='16' must be a finite number > 0"),
    ({"dropout": 1.0}, r"dropout=1.0 must be a number in \[0, 1\)"),
    ({"dropout": -0.1}, r"dropout=-0.1 must be a number in \[0, 1\)"),
    ({"target_modules": "(q_proj"}, r"target_modules='\(q_proj' is not a valid regular expression"),
    ({"target_modules": ()}, r"target_modules=\(\) must be a regex string or a non-empty list"),
    ({"target_modules": ("q_proj", 3)}, r"target_modules=\('q_proj', 3\) must be a regex string"),
])
def test_invalid_lora_config_is_refused_with_field_value_and_fix(fields, message):
    with pytest.raises(ValueError, match="invalid LoRAConfig: " + message):
        LoRAConfig(**{"r": 4, "alpha": 8.0, "target_modules": ("q_proj",), **fields})


def test_a_config_changed_after_construction_is_refused_by_inject_and_save(tmp_path):
    model, cfg = build("llama")
    bad = LoRAConfig(r=4, alpha=8.0, target_modules=cfg.target_modules)
    object.__setattr__(bad, "alpha", -8.0)  # frozen, but not beyond reach
    with pytest.raises(ValueError, match="alpha=-8.0 must be a finite number > 0"):
        inject_lora(model, bad)
    assert not list(lora_layers(model))
    inject_lora(model, cfg)
    object.__setattr__(model.lora_config, "dropout", 1.5)
    with pytest.raises(ValueError, match=r"dropout=1.5 must be a number in \[0, 1\)"):
        save_adapter(model, tmp_path / "a")
    with pytest.raises(ValueError, match=r"dropout=1.5 must be a number in \[0, 1\)"):
        save_lora_weights(model, tmp_path / "w.pth")
    assert not list(tmp_path.iterdir())


PEFT_BAD = [
    ({"lora_dropout": "abc"}, r"lora_dropout='abc' must be a number in \[0, 1\)"),
    ({"lora_dropout": 1}, r"lora_dropout=1 must be a number in \[0, 1\)"),
    ({"lora_alpha": 0}, r"lora_alpha=0 must be a finite number > 0"),
    ({"lora_alpha": -8}, r"lora_alpha=-8 must be a finite number > 0"),
    ({"lora_alpha": "x"}, r"lora_alpha='x' must be a finite number > 0"),
    ({"r": "4"}, r"r='4' must be a positive integer"),
    ({"r": 2.5}, r"r=2.5 must be a positive integer"),
    ({"target_modules": "(q_proj"}, r"target_modules='\(q_proj' is not a valid regular expression"),
    ({"target_modules": [1, 2]}, r"target_modules=\[1, 2\] must be a regex string or a non-empty list"),
    ({"target_modules": []}, r"target_modules=\[\] must be a regex string or a non-empty list"),
]


@pytest.mark.parametrize("change, message", PEFT_BAD)
def test_bad_adapter_config_values_name_the_file_field_value_and_fix(tmp_path, change, message):
    model, _ = _tuned("llama")
    save_adapter(model, tmp_path / "a")
    path = tmp_path / "a" / CONFIG_NAME
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    fresh, _ = build("llama")
    with pytest.raises(ValueError, match=rf"a[/\\]adapter_config.json has invalid values: {message}.*"
                                         "correct the file or save the adapter again"):
        load_adapter(fresh, tmp_path / "a")
    assert not list(lora_layers(fresh))


def test_infinite_lora_alpha_in_adapter_config_is_refused(tmp_path):
    model, _ = _tuned("llama")
    save_adapter(model, tmp_path / "a")
    path = tmp_path / "a" / CONFIG_NAME
    text = path.read_text()
    assert '"lora_alpha": 8.0' in text
    path.write_text(text.replace('"lora_alpha": 8.0', '"lora_alpha": 1e999'))  # json reads inf
    with pytest.raises(ValueError, match=r"adapter_config.json has invalid values: lora_alpha=inf must be "
                                         r"a finite number > 0 \(the update is scaled by alpha / r"):
        load_adapter(build("llama")[0], tmp_path / "a")


@pytest.mark.parametrize("change, message", [
    ({"alpha": "x"}, r"alpha='x' must be a finite number > 0"),
    ({"alpha": -1.0}, r"alpha=-1.0 must be a finite number > 0"),
    ({"alpha": float("nan")}, r"alpha=nan must be a finite number > 0"),
    ({"dropout": 2.0}, r"dropout=2.0 must be a number in \[0, 1\)"),
    ({"r": 0}, r"r=0 must be a positive integer"),
    ({"target_modules": "(q"}, r"target_modules='\(q' is not a valid regular expression"),
])
def test_bad_pth_config_values_name_the_file_field_value_and_fix(tmp_path, change, message):
    model, _ = _tuned("llama")
    save_lora_weights(model, tmp_path / "w.pth")
    payload = torch.load(tmp_path / "w.pth", weights_only=True)
    payload["config"].update(change)
    torch.save(payload, tmp_path / "w.pth")
    fresh, _ = build("llama")
    with pytest.raises(ValueError, match=rf"w.pth has invalid values in its LoRA config: {message}.*"
                                         "re-save it with save_lora_weights"):
        load_lora_weights(fresh, tmp_path / "w.pth")
    assert not list(lora_layers(fresh))
