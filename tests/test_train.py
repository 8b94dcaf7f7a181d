"""Tokenisation, collate (with odd sentinel ids so pad/ignore mix-ups show) and the training loop."""

import math

import pytest
import torch

from cinephile.train import IGNORE, TrainConfig, batches, collate, evaluate_loss, tokenize_example, train
from lora import LoRAConfig, adapter_state_dict, inject_lora
from tests.helpers import CharTokenizer, tiny_llama


def test_tokenize_masks_prompt_and_keeps_one_eos():
    tok = CharTokenizer()
    item = tokenize_example(tok, "Q: hi\nA:", " yes", max_len=64)
    assert len(item["input_ids"]) == len("Q: hi\nA:") + len(" yes") + 1
    assert item["labels"][: len("Q: hi\nA:")] == [IGNORE] * len("Q: hi\nA:")
    assert item["labels"][-1] == tok.eos_token_id and item["input_ids"][-1] == tok.eos_token_id
    assert item["labels"].count(tok.eos_token_id) == 1


def test_tokenize_cuts_long_prompt_from_the_left_and_refuses_huge_response():
    tok = CharTokenizer()
    item = tokenize_example(tok, "x" * 50 + "QUESTION", " ok", max_len=20)
    assert len(item["input_ids"]) == 20
    assert item["input_ids"][:16][-8:] == tok("QUESTION")["input_ids"]
    with pytest.raises(ValueError, match="does not fit max_len=5; raise max_len"):
        tokenize_example(tok, "q", " a long answer", max_len=5)


def test_collate_pads_right_and_ignores_padding_but_not_eos():
    tok = CharTokenizer()
    a = tokenize_example(tok, "ab", " c", 32)
    b = tokenize_example(tok, "abcdef", " ghi", 32)
    out = collate([a, b], pad_id=tok.pad_token_id)
    assert out["input_ids"].shape == (2, len(b["input_ids"]))  # longest in batch, not a fixed size
    n = len(a["input_ids"])
    assert out["input_ids"][0, n:].tolist() == [7] * (out["input_ids"].shape[1] - n)
    assert out["labels"][0, n:].tolist() == [IGNORE] * (out["labels"].shape[1] - n)
    assert out["attention_mask"][0].tolist() == [1] * n + [0] * (out["attention_mask"].shape[1] - n)
    assert (out["labels"] == tok.eos_token_id).sum(dim=1).tolist() == [1, 1]
    assert not (out["labels"] == tok.pad_token_id).any()


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_cover_every_item_once(shuffle):
    # item i is (i % 7 + 1) tokens, all equal to 100 + i: each row of a batch names its item
    items = [{"input_ids": [100 + i] * (i % 7 + 1), "labels": [1] * (i % 7 + 1)} for i in range(23)]
    seen = [int(row[0]) - 100 for b in batches(items, 4, 0, shuffle=shuffle, seed=1) for row in b["input_ids"]]
    assert sorted(seen) == list(range(23))  # every item exactly once: a duplicate or a loss fails


def test_collate_and_train_name_a_missing_pad_token():
    item = {"input_ids": [5, 6], "labels": [-100, 6]}
    with pytest.raises(ValueError, match="no pad id.*ensure_pad_token"):
        collate([item], pad_id=None)
    model = tiny_llama()
    inject_lora(model, LoRAConfig.llama(r=2, alpha=4))
    tok = CharTokenizer()
    tok.pad_token_id = None
    with pytest.raises(ValueError, match="tokenizer has no pad token id; call cinephile.models.ensure_pad_token"):
        train(model, tok, _examples(4), [], TrainConfig(epochs=1, device="cpu"))


def test_grad_accum_larger_than_the_batches_still_steps_once_per_epoch():
    model = tiny_llama()
    inject_lora(model, LoRAConfig.llama(r=2, alpha=4))
    before = {k: v.clone() for k, v in adapter_state_dict(model).items()}
    tok = CharTokenizer()
    cfg = TrainConfig(epochs=2, lr=1e-2, batch_size=2, grad_accum=8, log_every=1, device="cpu")
    history = train(model, tok, _examples(5), [], cfg)  # 3 batches per epoch, fewer than grad_accum
    assert history["step"] == [1, 2]
    after = adapter_state_dict(model)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("lora_B.weight"))


def _examples(n):
    return [{"prompt": f"Q{i % 5}: what?", "response": f" answer {i % 5}"} for i in range(n)]


def test_train_lowers_validation_loss_and_restores_best():
    model = tiny_llama()
    inject_lora(model, LoRAConfig.llama(r=4, alpha=8))
    tok = CharTokenizer()
    tok.pad_token_id = 1
    tok.eos_token_id = 1
    cfg = TrainConfig(epochs=3, lr=5e-3, batch_size=4, log_every=1, device="cpu")
    hist = train(model, tok, _examples(24), _examples(8), cfg)
    assert len(hist["epoch_val_loss"]) == 3 and len(hist["train_loss"]) == hist["step"][-1]
    assert hist["best_val_loss"] < hist["initial_val_loss"]
    assert hist["best_val_loss"] == min(hist["epoch_val_loss"])
    val = [tokenize_example(tok, e["prompt"], e["response"], 512) for e in _examples(8)]
    assert math.isclose(evaluate_loss(model, val, 1), hist["best_val_loss"], rel_tol=1e-4)
    assert any(v.abs().sum() > 0 for k, v in adapter_state_dict(model).items() if "lora_B" in k)


def test_train_refuses_empty_data():
    model = tiny_llama()
    inject_lora(model, LoRAConfig.llama(r=2))
    with pytest.raises(ValueError, match="no training examples"):
        train(model, CharTokenizer(), [], [], TrainConfig(device="cpu"))


def test_response_loss_equals_full_model_loss(model_kind):
    from cinephile.train import response_loss
    from tests.helpers import build
    model, _ = build(model_kind)
    tok = CharTokenizer()
    tok.pad_token_id = tok.eos_token_id = 1
    batch = collate([tokenize_example(tok, "prompt one", " yes", 40),
                     tokenize_example(tok, "a much longer prompt", " no way", 40)], pad_id=1)
    expected = model(**batch).loss
    torch.testing.assert_close(response_loss(model, batch), expected, rtol=1e-5, atol=1e-6)


def test_bf16_option_autocasts_the_forward_pass_and_still_trains():
    """bf16=True runs the loss under bf16 autocast on the CPU; False and None (CPU) stay fp32."""
    from cinephile.train import token_loss

    seen = []

    def spy(model, batch):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return token_loss(model, batch)

    tok = CharTokenizer()
    tok.pad_token_id = tok.eos_token_id = 1
    for bf16, expected in [(True, True), (False, False), (None, False)]:
        model = tiny_llama()
        inject_lora(model, LoRAConfig.llama(r=2, alpha=4))
        before = {k: v.clone() for k, v in adapter_state_dict(model).items()}
        seen.clear()
        hist = train(model, tok, _examples(8), _examples(4),
                     TrainConfig(epochs=1, lr=1e-2, batch_size=4, device="cpu", bf16=bf16), loss_fn=spy)
        assert seen and set(seen) == {expected}, bf16
        assert math.isfinite(hist["best_val_loss"])
        after = adapter_state_dict(model)
        assert all(v.dtype == torch.float32 for v in after.values())  # the adapters stay fp32
        assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("lora_B.weight"))


def test_native_bf16_reads_the_cpu_flags(monkeypatch):
    from cinephile import models

    real = models.Path.read_text

    def fake(flags):
        def read_text(self, *a, **k):
            if str(self) == "/proc/cpuinfo":
                if flags is None:
                    raise OSError("no such file")
                return f"processor : 0\nflags : fpu sse2 {flags}\n"
            return real(self, *a, **k)
        return read_text

    for flags, expected in [("avx512f amx_bf16 amx_tile", True), ("avx512f avx512_bf16", True),
                            ("avx2 avx512f", False), (None, False)]:
        monkeypatch.setattr(models.Path, "read_text", fake(flags))
        assert models.native_bf16() is expected, flags
