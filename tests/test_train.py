"""Tokenisation, collate (with odd sentinel ids so pad/ignore mix-ups show) and the training loop."""

import math

import pytest
import torch

from cinephile.batching import collate, tokenize_example
from cinephile.train import evaluate_loss, train, TrainConfig
from lora import LoRAConfig, adapter_state_dict, inject_lora
from tests.helpers import CharTokenizer, tiny_llama


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


# ---------------------------------------------------------------- bad data, divergence, interruption

def _llama_and_tok():
    model = tiny_llama()
    inject_lora(model, LoRAConfig.llama(r=2, alpha=4))
    tok = CharTokenizer()
    tok.pad_token_id = tok.eos_token_id = 1
    return model, tok


def _adapter(model):
    return {k: v.clone() for k, v in adapter_state_dict(model).items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Failing:
    """``token_loss`` until training call ``at``; there it records the adapter and does ``action``."""

    def __init__(self, at, action):
        self.at, self.action, self.calls, self.adapter = at, action, 0, None

    def __call__(self, model, batch):
        from cinephile.train import token_loss
        loss, n = token_loss(model, batch)
        if not model.training:  # validation passes are left alone
            return loss, n
        self.calls += 1
        if self.calls == self.at:
            self.adapter = _adapter(model)
            return self.action(model, loss), n
        return loss, n


def _inf_loss(model, loss):
    return loss * math.inf


class InfGradient(torch.autograd.Function):
    """Identity forward, infinite gradient backward: a finite loss whose update would blow up."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * math.inf


def _inf_gradient(model, loss):
    return InfGradient.apply(loss)


@pytest.mark.parametrize("with_val", [False, True])
@pytest.mark.parametrize("inject", [_inf_loss, _inf_gradient])
def test_diverging_training_stops_with_a_named_error_and_keeps_the_best_finite_adapter(with_val, inject):
    from cinephile.train import TrainingDiverged

    model, tok = _llama_and_tok()
    initial = _adapter(model)
    spy = Failing(at=3, action=inject)  # 2 batches per epoch: the first batch of epoch 2
    cfg = TrainConfig(epochs=3, lr=1e-2, batch_size=4, device="cpu")
    with pytest.raises(TrainingDiverged, match=r"epoch 2, optimizer step 3: .* (inf|nan) .*learning rate .*"
                                               r"lower TrainConfig.lr .*bf16=False") as err:
        train(model, tok, _examples(8), _examples(4) if with_val else [], cfg, loss_fn=spy)
    assert isinstance(err.value, RuntimeError)
    history = err.value.history
    expected = spy.adapter if history["best_epoch"] == 1 else initial  # epoch 1, or the start if it did not help
    assert _same(adapter_state_dict(model), expected) and not model.training
    assert all(torch.isfinite(v).all() for v in adapter_state_dict(model).values())
    if not with_val:
        assert history["best_epoch"] == 1


def test_divergence_on_the_first_step_restores_the_initial_adapter():
    from cinephile.train import TrainingDiverged

    model, tok = _llama_and_tok()
    initial = _adapter(model)
    with pytest.raises(TrainingDiverged, match=r"epoch 1, optimizer step 1: .*restored to its initial state"):
        train(model, tok, _examples(8), [], TrainConfig(epochs=2, batch_size=4, device="cpu"),
              loss_fn=Failing(at=1, action=_inf_loss))
    assert _same(adapter_state_dict(model), initial)


@pytest.mark.parametrize("with_val", [False, True])
def test_an_absurd_learning_rate_is_reported_as_divergence(with_val):
    from cinephile.train import TrainingDiverged

    model, tok = _llama_and_tok()
    with pytest.raises(TrainingDiverged, match=r"learning rate 1.00e\+04, peak 1.00e\+04"):
        train(model, tok, _examples(8), _examples(4) if with_val else [],
              TrainConfig(epochs=2, lr=1e4, batch_size=4, device="cpu"))
    assert all(torch.isfinite(v).all() for v in adapter_state_dict(model).values()) and not model.training


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_a_failure_midway_restores_eval_mode_and_the_last_good_adapter(error, caplog):
    model, tok = _llama_and_tok()

    def fail(model, loss):
        raise error("stopped")
    spy = Failing(at=3, action=fail)
    with pytest.raises(error, match="stopped"):
        train(model, tok, _examples(8), [], TrainConfig(epochs=3, lr=1e-2, batch_size=4, device="cpu"), loss_fn=spy)
    assert not model.training
    assert _same(adapter_state_dict(model), spy.adapter)  # the adapter at the end of epoch 1
    restored = f"training stopped at epoch 2 ({error.__name__}); the adapter is restored to the end of epoch 1"
    assert restored in caplog.text


@pytest.mark.parametrize("bad, message", [
    ({"response": " a"}, "training example 1 has no 'prompt'"),
    ({"prompt": "Q:"}, "training example 1 has no 'response'"),
    ({"prompt": None, "response": " a"}, "training example 1: 'prompt' must be a string, got NoneType"),
    ("Q: a", "training example 1 is a str, not a dict with 'prompt' and 'response'"),
    ({"prompt": "", "response": ""}, "training example 1 has no target token"),
    ({"prompt": "Q:", "response": " " + "a" * 600}, "training example 1: response of 602 tokens does not fit"),
])
def test_bad_training_examples_are_named_before_the_model_changes(bad, message):
    model, tok = _llama_and_tok()
    examples = _examples(4)
    examples[1] = bad
    with pytest.raises(ValueError, match=message):
        train(model, tok, examples, [], TrainConfig(epochs=1, device="cpu"))
    with pytest.raises(ValueError, match=message.replace("training", "validation")):
        train(model, tok, _examples(4), examples, TrainConfig(epochs=1, device="cpu"))
    assert not model.training


def test_max_len_beyond_the_position_window_is_capped(caplog):
    from tests.helpers import tiny_gpt2

    model = tiny_gpt2()
    inject_lora(model, LoRAConfig.gpt2(r=2, alpha=4))
    tok = CharTokenizer()
    examples = [{"prompt": "context " * 20 + f"Q{i}:", "response": f" a{i}"} for i in range(4)]  # 165 tokens
    hist = train(model, tok, examples, examples[:2], TrainConfig(epochs=1, batch_size=2, max_len=512, device="cpu"))
    assert math.isfinite(hist["best_val_loss"])
    assert "max_len=512 is more than the model's 64 positions; examples are cut to 64 tokens" in caplog.text


@pytest.mark.parametrize("field, value", [("epochs", 0), ("batch_size", 0), ("grad_accum", 0), ("max_len", 1),
                                          ("lr", 0.0), ("warmup_ratio", 1.5), ("log_every", 0)])
def test_train_config_refuses_out_of_range_values(field, value):
    with pytest.raises(ValueError, match=f"TrainConfig.{field} must be"):
        TrainConfig(**{field: value})
