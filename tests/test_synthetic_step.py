import pytest
import torch

from benchmarks.synthetic import random_batch, train_step
from lora import LoRAConfig, adapter_parameters, inject_lora
from tests.helpers import tiny_llama


def test_random_batch_draws_ids_in_range_with_labels_on_the_last_positions_only():
    gen = torch.Generator().manual_seed(0)
    batch = random_batch(1, 90, gen, low=50, batch=3, seq=10, labels=4)
    assert batch["input_ids"].shape == batch["labels"].shape == (3, 10)
    assert int(batch["input_ids"].min()) >= 50 and int(batch["input_ids"].max()) < 90
    assert (batch["labels"][:, :6] == -100).all() and (batch["labels"][:, 6:] >= 50).all()
    assert batch["attention_mask"].all()
    # the draw order is ids then labels, row by row: a later draw from the same generator sees the same state
    again = torch.Generator().manual_seed(0)
    first_ids = torch.randint(50, 90, (10,), generator=again)
    assert torch.equal(batch["input_ids"][0], first_ids)
    assert torch.equal(torch.randint(0, 1000, (5,), generator=gen),
                       torch.randint(0, 1000, (5,), generator=_after_draws(3, 10, 4)))


def _after_draws(rows: int, seq: int, labels: int) -> torch.Generator:
    gen = torch.Generator().manual_seed(0)
    for _ in range(rows):
        torch.randint(50, 90, (seq,), generator=gen)
        torch.randint(50, 90, (labels,), generator=gen)
    return gen


@pytest.mark.parametrize("bad", [dict(labels=0), dict(labels=11), dict(low=90)])
def test_random_batch_refuses_impossible_shapes(bad):
    with pytest.raises(ValueError, match="labels <= seq"):
        random_batch(1, 90, torch.Generator(), **{"seq": 10, **bad})


def test_train_step_updates_adapters_only_with_an_optimizer_and_clears_gradients():
    model = tiny_llama()
    inject_lora(model, LoRAConfig.llama(r=4, alpha=8))
    params = adapter_parameters(model)
    with torch.no_grad():
        for p in params:  # B starts at zero: make the adapters matter so A gets a gradient too
            p.normal_(std=0.02)
    batch = random_batch(1, 101, torch.Generator().manual_seed(0), batch=2, seq=12, labels=3)
    before = [p.detach().clone() for p in params]
    loss = train_step(model, batch, bf16=False)
    assert loss > 0 and model.training
    assert all(torch.equal(a, p) for a, p in zip(before, params)) and all(p.grad is None for p in params)
    opt = torch.optim.SGD(params, lr=0.1)
    train_step(model, batch, bf16=False, opt=opt)
    assert all(not torch.equal(a, p) for a, p in zip(before, params)) and all(p.grad is None for p in params)
