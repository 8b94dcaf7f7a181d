"""The bundled models load offline and produce output; unknown models give an actionable error."""

import pytest
import torch

from cinephile import models


@pytest.mark.slow
def test_bundled_smollm2_loads_offline_and_generates(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = models.load_base_model()
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert tok.pad_token is not None and model.config.pad_token_id == tok.pad_token_id
    assert models.model_window(model, tok) == 8192
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 3
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])


@pytest.mark.slow
def test_bundled_minilm_embeds_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    st = models.load_retriever()
    emb = st.encode(["Jaws is a shark film.", "A great white shark attacks a beach town.", "Tax law"],
                    normalize_embeddings=True)
    assert emb.shape == (3, 384)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]


def test_missing_local_model_dir_and_offline_hub_id(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        models.load_base_model(str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="bundled 'smollm2-135m'.*needs network once"):
        models.load_base_model("no-such-org/no-such-model-xyz")


def test_attention_kernel_is_passed_through_for_a_local_model(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast
    from tokenizers import Tokenizer, models as tok_models

    folder = tmp_path / "tiny-gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=64)).save_pretrained(folder)
    raw = Tokenizer(tok_models.WordLevel({"a": 0, "b": 1, "<eos>": 2, "<unk>": 3}, unk_token="<unk>"))
    GPT2TokenizerFast(tokenizer_object=raw, eos_token="<eos>").save_pretrained(folder)
    assert models.load_base_model(str(folder), attn_implementation="eager")[0].config._attn_implementation == "eager"
    assert models.load_base_model(str(folder))[0].config._attn_implementation == "sdpa"  # transformers' default


def test_pad_token_is_defined_explicitly():
    class Tok:
        pad_token, eos_token, pad_token_id = None, "<eos>", None

        def __setattr__(self, k, v):
            object.__setattr__(self, k, v)
            if k == "pad_token":
                object.__setattr__(self, "pad_token_id", 5)

    tok = Tok()
    models.ensure_pad_token(tok)
    assert tok.pad_token == "<eos>" and tok.pad_token_id == 5


def test_short_name_and_device():
    assert models.short_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "smollm2-135m"
    assert models.short_name("/tmp/My_Model/") == "my-model"
    assert models.pick_device("cpu").type == "cpu"


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_lora_preset_layers_wraps_only_the_chosen_blocks(kind):
    from lora import inject_lora
    from lora.layer import LoRALayer
    from tests.helpers import build

    model = build(kind)[0]
    name = "gpt2" if kind == "gpt2" else "smollm2-135m"
    inject_lora(model, models.lora_preset(name, r=2, layers=[1]))
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LoRALayer)]
    assert wrapped and all((".layers.1." in n) or (".h.1." in n) for n in wrapped)
    every = build(kind)[0]
    inject_lora(every, models.lora_preset(name, r=2))
    n_all = sum(isinstance(m, LoRALayer) for m in every.modules())
    assert len(wrapped) * 2 == n_all  # the tiny models have two blocks
    with pytest.raises(ValueError, match="non-negative block indices"):
        models.lora_preset(name, layers=[-1])


def test_an_adapter_on_the_top_block_alone_loads_in_peft_and_back(tmp_path):
    """The blocks live in a regex ``target_modules``, which PEFT and our loader read alike."""
    peft = pytest.importorskip("peft")
    from lora import inject_lora, load_adapter, save_adapter
    from tests.helpers import randomize_adapters, tiny_llama

    model = tiny_llama()
    inject_lora(model, models.lora_preset("smollm2-135m", r=2, layers=[1]))
    randomize_adapters(model)
    tokens = torch.randint(0, 101, (2, 7))
    expected = model(tokens).logits
    save_adapter(model, tmp_path)
    peft_model = peft.PeftModel.from_pretrained(tiny_llama(), str(tmp_path)).eval()
    torch.testing.assert_close(peft_model(tokens).logits, expected, rtol=1e-5, atol=1e-5)
    assert {n.split(".layers.")[1][0] for n, _ in peft_model.named_parameters() if "lora_" in n} == {"1"}
    ours = load_adapter(tiny_llama(), tmp_path)
    torch.testing.assert_close(ours(tokens).logits, expected, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_bundled_gemma3_loads_offline_and_generates(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = models.load_base_model("gemma3-270m")
    assert type(model).__name__ == "Gemma3ForCausalLM" and model.dtype == torch.float32
    assert model.name_or_path == "google/gemma-3-270m" and tok.pad_token_id is not None
    assert model.config._attn_implementation == "eager"  # the default kernel for Gemma 3
    assert models.gemma3_dequantized_dir().joinpath("model.safetensors").is_file()  # later loads take the folder
    ids = tok("Question: What is the capital of France?\nAnswer:", return_tensors="pt").input_ids
    assert ids[0, 0] == tok.bos_token_id
    out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])
    assert models.load_tokenizer("gemma3-270m")("Jaws").input_ids == tok("Jaws").input_ids


def test_position_window_reads_the_config_and_is_none_without_one():
    from transformers import PretrainedConfig

    from tests.helpers import tiny_gpt2, tiny_llama

    assert models.position_window(tiny_gpt2()) == 64 and models.position_window(tiny_llama()) == 64

    class NoWindow(torch.nn.Module):
        config = PretrainedConfig()
    assert models.position_window(NoWindow()) is None


@pytest.mark.slow
def test_bundled_qwen_loads_offline_and_answers(monkeypatch):
    """requirements.txt installs the 1.5B model's parts; they join to the pinned SHA-256 and convert once."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = models.load_base_model("qwen2.5-coder-1.5b", dtype=torch.bfloat16)
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.name_or_path == "Qwen/Qwen2.5-Coder-1.5B-Instruct"
    assert model.dtype == torch.bfloat16
    text = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France? One word."}],
                                   tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt").input_ids
    assert "Paris" in tok.decode(model.generate(ids, max_new_tokens=4, do_sample=False)[0, ids.shape[1]:])
