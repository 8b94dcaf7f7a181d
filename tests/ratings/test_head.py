"""The regression head: trained with the adapters, scored as it trains, restored with them."""

import copy

import numpy as np
import pytest
import torch

from cinephile.batching import collate, tokenize_example
from cinephile.ratings.head import HeadLoss, RatingHead, head_ratings, last_hidden
from cinephile.train import TrainConfig, train
from lora import LoRAConfig, inject_lora

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["Liked: Heat (1995); Casino (1995)\nTarget movie: The Matrix (1999)", "Target movie: Toy Story (1995)",
           "Disliked: Cats (2019)\nTarget movie: Heat (1995)"]
RATED, ANCHORS = [4.5, 1.0, 3.0], [3.7, 2.9, 3.1]


def examples():
    return [{"prompt": p, "response": f"Adjustment: {r - a:+.1f}", "rating": r, "anchor": a}
            for p, r, a in zip(PROMPTS, RATED, ANCHORS)]


def batch_of(tokenizer, rows):
    return collate([{**tokenize_example(tokenizer, e["prompt"], e["response"], 128), "rating": e["rating"],
                     "anchor": e["anchor"]} for e in rows], tokenizer.pad_token_id)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_a_new_head_predicts_the_anchor_and_training_moves_it_toward_the_ratings(kind, smol_tokenizer, request):
    model = copy.deepcopy(request.getfixturevalue("smol_llama" if kind == "llama" else "smol_gpt2"))
    inject_lora(model, (LoRAConfig.llama if kind == "llama" else LoRAConfig.gpt2)(r=4, alpha=8))
    head = RatingHead(model.config.hidden_size)
    np.testing.assert_allclose(head_ratings(model, head, smol_tokenizer, PROMPTS, ANCHORS, progress=False), ANCHORS)
    loss_fn = HeadLoss(head)
    before, _ = loss_fn(model, batch_of(smol_tokenizer, examples()))
    assert before.item() == pytest.approx(np.mean((np.array(RATED) - ANCHORS) ** 2), rel=1e-5)
    history = train(model, smol_tokenizer, examples() * 4, examples(),
                    TrainConfig(epochs=5, lr=1e-2, batch_size=3, device="cpu", max_len=128), loss_fn=loss_fn)
    assert history["best_val_loss"] < before.item() / 2
    assert head.linear.weight.abs().sum() > 0  # the head itself was optimised, not only the adapters
    # scoring reads the same number training does: the prompt's last token, answer tokens ignored
    with torch.no_grad():
        trained, _ = loss_fn(model, batch_of(smol_tokenizer, examples()))
    scored = head_ratings(model, head, smol_tokenizer, PROMPTS, ANCHORS, batch_size=2, progress=False)
    assert trained.item() == pytest.approx(float(np.mean((np.clip(scored, 0.5, 5) - RATED) ** 2)), rel=1e-4, abs=1e-6)


def test_last_hidden_ignores_what_follows_and_padding(smol_llama, smol_tokenizer):
    ids = smol_tokenizer(PROMPTS[0], add_special_tokens=False).input_ids
    n = len(ids)
    alone = last_hidden(smol_llama, torch.tensor([ids]), torch.ones(1, n, dtype=torch.long), torch.tensor([n - 1]))
    padded = torch.tensor([ids + [7, 8, 9]])
    with_more = last_hidden(smol_llama, padded, torch.ones(1, n + 3, dtype=torch.long), torch.tensor([n - 1]))
    torch.testing.assert_close(alone, with_more, atol=1e-5, rtol=1e-5)


def test_an_interrupted_training_restores_the_head_with_the_adapters(smol_llama, smol_tokenizer):
    model = copy.deepcopy(smol_llama)
    inject_lora(model, LoRAConfig.llama(r=4, alpha=8))
    head = RatingHead(model.config.hidden_size)
    inner = HeadLoss(head)
    calls = []

    class Interrupted(HeadLoss):
        def __call__(self, model, batch):
            calls.append(1)
            if len(calls) > 3:  # after two optimizer steps (the first call is the initial validation loss)
                raise KeyboardInterrupt
            return inner(model, batch)

    with pytest.raises(KeyboardInterrupt):
        train(model, smol_tokenizer, examples() * 4, examples(),
              TrainConfig(epochs=1, lr=3e-2, batch_size=3, device="cpu", max_len=128), loss_fn=Interrupted(head))
    assert head.linear.weight.abs().sum() == 0 and head.linear.bias.item() == 0  # back to its initial state


def test_head_ratings_and_head_loss_name_what_is_missing(smol_llama, smol_tokenizer):
    head = RatingHead(smol_llama.config.hidden_size)
    with pytest.raises(ValueError, match="one anchor"):
        head_ratings(smol_llama, head, smol_tokenizer, PROMPTS, ANCHORS[:2], progress=False)
    batch = batch_of(smol_tokenizer, examples())
    with pytest.raises(ValueError, match="'anchor'"):
        HeadLoss(head)(smol_llama, {k: v for k, v in batch.items() if k != "anchor"})
    with pytest.raises(TypeError, match="example 0: anchor must be a number"):
        HeadLoss(head).check_examples([{k: v for k, v in e.items() if k != "anchor"} for e in examples()])
