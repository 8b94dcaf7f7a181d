"""Rating scoring and generation with a tiny random Llama/GPT-2 and the real SmolLM2 tokenizer."""

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from cinephile.ratings.scoring import (ADJUSTMENT_ANSWERS, Answers, CANDIDATES, RATING_ANSWERS, RATING_SYSTEM,
                                      RESIDUAL_SYSTEM, answer_format, greedy_ratings, score_ratings)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run faster on one thread than on two contended ones

PROMPTS = ["Hi", "Predict how this user rates a movie on a 0.5-5.0 scale.\nLiked: Heat (1995); Casino (1995)\n"
           "Target movie: The Matrix (1999)\nAnswer with 'Rating: x.x'.", "Target movie: Toy Story (1995)"]


@pytest.fixture(scope="module")
def tokenizer(smol_tokenizer):
    return smol_tokenizer


@pytest.fixture(scope="module")
def model(smol_llama):
    return smol_llama


@pytest.fixture(scope="module")
def gpt2(smol_gpt2):
    """Learned absolute positions: wrong position ids under left padding would show."""
    return smol_gpt2


def slow_logprobs(model, tokenizer, prompt: str, prefix: str = "Rating: ", signed: bool = False) -> np.ndarray:
    """Reference: one full, unpadded forward per candidate answer."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    out = []
    for c in (ADJUSTMENT_ANSWERS.values if signed else CANDIDATES):
        answer = tokenizer(f"{prefix}{c:+.1f}" if signed else f"{prefix}{c:.1f}", add_special_tokens=False).input_ids
        with torch.no_grad():
            logp = model(torch.tensor([prompt_ids + answer])).logits[0].log_softmax(-1)
        out.append(sum(logp[len(prompt_ids) - 1 + k, tok].item() for k, tok in enumerate(answer)))
    return np.array(out)


# ---------------------------------------------------------------- scoring

@pytest.mark.parametrize("kind, prefix", [("llama", "Rating: "), ("llama", ""), ("gpt2", "Rating: ")])
def test_score_ratings_equals_ten_full_forwards(kind, prefix, tokenizer, request):
    model = request.getfixturevalue("model" if kind == "llama" else "gpt2")
    got = score_ratings(model, tokenizer, PROMPTS, batch_size=2, answers=Answers(prefix), progress=False)
    ref = np.stack([slow_logprobs(model, tokenizer, p, prefix) for p in PROMPTS])
    np.testing.assert_allclose(got["logprobs"], ref, atol=1e-4)
    probs = np.exp(ref - ref.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_allclose(got["probs"], probs, atol=1e-4)
    np.testing.assert_allclose(got["expected"], probs @ np.array(CANDIDATES), atol=1e-4)
    np.testing.assert_array_equal(got["argmax"], np.array(CANDIDATES)[ref.argmax(1)])
    assert got["probs"].shape == (3, 10)


def test_adjustment_answers_add_the_expected_adjustment_to_the_anchor(model, tokenizer):
    anchors = [3.2, 4.9, 0.6]
    got = score_ratings(model, tokenizer, PROMPTS, batch_size=2, answers=ADJUSTMENT_ANSWERS, anchors=anchors,
                        progress=False)
    ref = np.stack([slow_logprobs(model, tokenizer, p, "Adjustment: ", signed=True) for p in PROMPTS])
    np.testing.assert_allclose(got["logprobs"], ref, atol=1e-4)
    probs = np.exp(ref - ref.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    adjustment = probs @ np.array(ADJUSTMENT_ANSWERS.values)
    np.testing.assert_allclose(got["expected"], np.clip(np.array(anchors) + adjustment, 0.5, 5.0), atol=1e-4)
    assert got["probs"].shape == (3, 9) and ((got["expected"] >= 0.5) & (got["expected"] <= 5.0)).all()
    with pytest.raises(ValueError, match="one anchor .* per prompt"):
        score_ratings(model, tokenizer, PROMPTS, answers=ADJUSTMENT_ANSWERS, progress=False)
    with pytest.raises(ValueError, match="one anchor .* per prompt"):
        greedy_ratings(model, tokenizer, PROMPTS, answers=ADJUSTMENT_ANSWERS, anchors=[3.0], progress=False)


def test_score_ratings_is_one_forward_pass_and_restores_train_mode(model, tokenizer):
    lengths = []
    hook = model.register_forward_pre_hook(lambda mod, args, kwargs: lengths.append(kwargs["input_ids"].shape),
                                           with_kwargs=True)
    model.train()
    try:
        score_ratings(model, tokenizer, PROMPTS, batch_size=8, progress=False)
    finally:
        hook.remove()
        training = model.training
        model.eval()
    assert training
    assert len(lengths) == 1 and lengths[0][0] == 3  # one batched pass: prompts and all answer branches


def test_answers_of_different_lengths_are_scored_exactly(model, tokenizer):
    from cinephile.batching import left_pad
    from cinephile.ratings.branches import score_batch
    prompts = [tokenizer(p, add_special_tokens=False).input_ids for p in PROMPTS]
    common, suffixes = [66, 674], [[5], [6, 7], [6, 8], [9, 10, 11], [9, 10, 12]]
    batch, mask = left_pad([p + common for p in prompts], 0, "cpu")
    with torch.inference_mode():
        got = score_batch(model, batch, mask, common, suffixes)
        for row, p in enumerate(prompts):
            for j, suffix in enumerate(suffixes):
                answer = common + suffix
                logp = model(torch.tensor([p + answer])).logits[0].log_softmax(-1)
                ref = sum(logp[len(p) - 1 + k, t].item() for k, t in enumerate(answer))
                assert got[row, j].item() == pytest.approx(ref, abs=1e-4)


HISTORY = ("Predict how this user rates the target movie.\nLiked: Heat (1995); Casino (1995); Fargo (1996); "
           "Alien (1979)\nDisliked: Cats (2019)\nPreferred genres: Crime, Drama\nAvoided genres: Musical\n")
SHARED = [HISTORY + f"Target movie: {t}\nGenres: {g}" for t, g in
          [("The Matrix (1999)", "Sci-Fi"), ("Toy Story (1995)", "Animation"), ("Heat 2", "Crime, Drama"),
           ("Up (2009)", "Animation")]]


def test_shared_prefixes_groups_prompts_that_begin_alike():
    from cinephile.ratings.branches import shared_prefixes
    ids = [[1, 2, 3, 4, 9], [7, 7], [1, 2, 3, 5], [1, 2, 3, 4, 8], [1, 2, 3], [1, 2, 6]]
    groups, rest = shared_prefixes(ids, max_group=3, min_shared=2)
    assert groups == [(2, [4, 3, 0]), (2, [2, 5])]  # in token order, at most three a group
    assert rest == [1]
    groups, rest = shared_prefixes(ids, max_group=8, min_shared=3)
    assert groups == [(3, [3, 0, 2])]  # [1, 2, 3] alone: its prefix must leave it a token of its own
    assert rest == [1, 4, 5]
    assert shared_prefixes(ids, max_group=8, min_shared=10) == ([], list(range(6)))
    for off in (None, 0):  # no sharing: every prompt runs whole
        assert shared_prefixes(ids, max_group=8, min_shared=off) == ([], list(range(6)))


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("signed", [False, True])
def test_a_shared_prefix_runs_once_and_scores_as_whole_prompts(kind, signed, tokenizer, request):
    model = request.getfixturevalue("model" if kind == "llama" else "gpt2")
    prompts = SHARED + PROMPTS  # four prompts with one long history, three alone
    answers = ADJUSTMENT_ANSWERS if signed else RATING_ANSWERS
    anchors = [3.0] * len(prompts) if signed else None
    widths = []
    hook = model.register_forward_pre_hook(lambda mod, args, kwargs: widths.append(kwargs["input_ids"].shape),
                                           with_kwargs=True)
    try:
        shared = score_ratings(model, tokenizer, prompts, batch_size=3, answers=answers, anchors=anchors,
                               progress=False, min_shared=16)
    finally:
        hook.remove()
    assert any(w[0] == 1 and w[1] >= 40 for w in widths)  # the history ran once, as one row
    whole = score_ratings(model, tokenizer, prompts, batch_size=3, answers=answers, anchors=anchors, progress=False,
                          min_shared=None)
    np.testing.assert_allclose(shared["logprobs"], whole["logprobs"], atol=1e-4)
    ref = np.stack([slow_logprobs(model, tokenizer, p, answers.prefix, signed) for p in prompts])
    np.testing.assert_allclose(shared["logprobs"], ref, atol=1e-4)
    np.testing.assert_allclose(shared["expected"], whole["expected"], atol=1e-5)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_two_histories_of_different_lengths_share_one_forward_pass(kind, tokenizer, request):
    model = request.getfixturevalue("model" if kind == "llama" else "gpt2")
    other = "Predict a rating.\nLiked: Up (2009)\nDisliked: none\nAvoided genres: Horror, Musical, War\n"
    prompts = [SHARED[0], other + "Target movie: Heat (1995)", SHARED[1], other + "Target movie: Alien (1979)"]
    widths = []
    hook = model.register_forward_pre_hook(lambda mod, args, kwargs: widths.append(kwargs["input_ids"].shape),
                                           with_kwargs=True)
    try:
        shared = score_ratings(model, tokenizer, prompts, batch_size=8, progress=False, min_shared=16)
    finally:
        hook.remove()
    assert [w[0] for w in widths] == [2, 4]  # both histories (left-padded) in one pass, then the four targets
    ref = np.stack([slow_logprobs(model, tokenizer, p) for p in prompts])
    np.testing.assert_allclose(shared["logprobs"], ref, atol=1e-4)


def test_a_shared_prefix_under_bf16_autocast_stays_close_to_whole_prompts(model, tokenizer):
    shared = score_ratings(model, tokenizer, SHARED, progress=False, bf16=True, min_shared=16)
    whole = score_ratings(model, tokenizer, SHARED, progress=False, bf16=True, min_shared=None)
    np.testing.assert_allclose(shared["probs"], whole["probs"], atol=0.02)


def test_score_ratings_rejects_empty_prompts(model, tokenizer):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        score_ratings(model, tokenizer, ["ok", ""], progress=False)
    with pytest.raises(ValueError, match="non-empty list of strings"):
        score_ratings(model, tokenizer, "a single string", progress=False)


# ---------------------------------------------------------------- generation

def test_answer_format_is_chosen_once_from_the_target():
    rating, adjustment = answer_format(None), answer_format("SVD++")
    assert rating is RATING_ANSWERS and adjustment is ADJUSTMENT_ANSWERS
    assert (rating.system, adjustment.system) == (RATING_SYSTEM, RESIDUAL_SYSTEM)
    examples = [{"anchor": 3.5}, {"anchor": 2.0}]
    assert rating.anchors(examples) is None and adjustment.anchors(examples) == [3.5, 2.0]
    assert adjustment.text(0.5) == "Adjustment: +0.5" and rating.text(4) == "Rating: 4.0"


def test_answers_parse_with_their_own_rule():
    texts = ["Rating: 4.5", "Adjustment: -1.5"]
    assert [RATING_ANSWERS.parse(t) for t in texts] == [4.5, None]
    assert [ADJUSTMENT_ANSWERS.parse(t) for t in texts] == [None, -1.5]  # the adjustment parser only its format


def test_greedy_batched_left_padding_matches_one_by_one(model, tokenizer):
    values, texts, n_failed = greedy_ratings(model, tokenizer, PROMPTS, max_new_tokens=5, batch_size=3,
                                             progress=False)
    alone = [greedy_ratings(model, tokenizer, [p], max_new_tokens=5, progress=False)[1][0] for p in PROMPTS]
    assert texts == alone and all(texts)
    assert n_failed == sum(v is None for v in values)


def test_greedy_counts_parse_failures_instead_of_filling_them(model, tokenizer, monkeypatch):
    answers = ["Rating: 4.5", "I cannot rate that", "rating 2"]

    def fake_generate(input_ids, attention_mask, **kwargs):
        assert (attention_mask[:, -1] == 1).all()  # left padding: every prompt ends at the right edge
        new = [tokenizer(answers[int(np.argmin(np.abs(lens - int(m.sum()))))], add_special_tokens=False).input_ids
               for m in attention_mask]
        width = max(len(n) for n in new)
        pad = [n + [tokenizer.pad_token_id] * (width - len(n)) for n in new]
        return torch.cat([input_ids, torch.tensor(pad)], 1)
    lens = np.array([len(tokenizer(p, add_special_tokens=False).input_ids) for p in PROMPTS])
    monkeypatch.setattr(model, "generate", fake_generate)
    values, texts, n_failed = greedy_ratings(model, tokenizer, PROMPTS, batch_size=2, progress=False)
    assert texts == answers and values == [4.5, None, 2.0] and n_failed == 1
    answers = ["Adjustment: +1.0", "Adjustment: -2.0", "Adjustment: maybe"]
    values, texts, n_failed = greedy_ratings(model, tokenizer, PROMPTS, batch_size=2, answers=ADJUSTMENT_ANSWERS,
                                             anchors=[3.2, 1.5, 4.0], progress=False)
    assert values == pytest.approx([4.2, 0.5, None]) and n_failed == 1  # 1.5 - 2.0 clipped to the scale

# ---------------------------------------------------------------- training on the scored number

def test_rating_loss_matches_score_ratings_and_trains_the_expected_value(model, tokenizer):
    import copy

    from cinephile.batching import tokenize_example
    from cinephile.train import evaluate_loss, train, TrainConfig
    from lora import LoRAConfig, inject_lora
    from cinephile.ratings.scoring import RatingLoss

    tuned = copy.deepcopy(model)
    inject_lora(tuned, LoRAConfig.llama(r=4, alpha=8))
    examples = [{"prompt": p, "response": f"Rating: {r:.1f}", "rating": r} for p, r in zip(PROMPTS, [4.5, 1.0, 3.0])]
    loss_fn = RatingLoss(tokenizer, lam=0.0)
    items = [{**tokenize_example(tokenizer, e["prompt"], e["response"], 128), "rating": e["rating"]} for e in examples]
    from cinephile.batching import collate
    batch = collate(items, tokenizer.pad_token_id)
    loss, n = loss_fn(tuned, batch)
    expected = score_ratings(tuned, tokenizer, PROMPTS, progress=False)["expected"]
    assert n == 3 and loss.item() == pytest.approx(float(np.mean((expected - [4.5, 1.0, 3.0]) ** 2)), rel=1e-4)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tuned.parameters() if p.requires_grad)
    before = evaluate_loss(tuned, items, tokenizer.pad_token_id, loss_fn=loss_fn)
    history = train(tuned, tokenizer, examples * 4, examples,
                    TrainConfig(epochs=3, lr=3e-2, batch_size=3, device="cpu", max_len=128), loss_fn=loss_fn)
    assert history["best_val_loss"] < before
    with pytest.raises(ValueError, match="needs examples with a 'rating'"):
        loss_fn(tuned, {k: v for k, v in batch.items() if k != "rating"})


def test_rating_loss_runs_a_shared_history_once_with_the_same_loss_and_gradients(model, tokenizer):
    import copy

    from cinephile.batching import collate, tokenize_example
    from cinephile.ratings.scoring import RatingLoss
    from lora import LoRAConfig, adapter_parameters, inject_lora

    torch.manual_seed(0)
    tuned = copy.deepcopy(model)
    inject_lora(tuned, LoRAConfig.llama(r=4, alpha=8, dropout=0.0))
    for p in adapter_parameters(tuned):  # B = 0 after injection: give the adapters a value of their own
        torch.nn.init.normal_(p, std=0.05)
    prompts = SHARED + PROMPTS[:2]  # four with one history, two alone
    items = [{**tokenize_example(tokenizer, p, f"Rating: {r:.1f}", 256), "rating": r}
             for p, r in zip(prompts, [4.5, 1.0, 3.0, 2.5, 5.0, 0.5])]
    batch = collate(items, tokenizer.pad_token_id)
    widths, grads, losses = [], [], []
    hook = tuned.register_forward_pre_hook(lambda mod, args, kwargs: widths.append(kwargs["input_ids"].shape),
                                           with_kwargs=True)
    try:
        for min_shared in (16, None):
            tuned.zero_grad()
            loss, n = RatingLoss(tokenizer, lam=0.5, min_shared=min_shared)(tuned, batch)
            loss.backward()
            losses.append(loss.item())
            grads.append(torch.cat([p.grad.flatten() for p in adapter_parameters(tuned)]))
    finally:
        hook.remove()
    assert [w[0] for w in widths] == [1, 4, 2, 6]  # shared: the history once, its four rows, the other two; whole: six
    assert n == 6 and losses[0] == pytest.approx(losses[1], rel=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    assert grads[0].abs().sum() > 0


def test_grouped_batches_keep_a_key_together():
    from cinephile.batching import length_batches
    keys = ["a", "b", "a", "c", "a", "b", "a"]  # a: 4 items (a chunk of 3 and one of 1), b: 2, c: 1
    for seed in range(5):
        got = length_batches([5, 1, 6, 2, 7, 3, 8], 3, shuffle=True, seed=seed, groups=keys)
        assert sorted(i for b in got for i in b) == list(range(7)) and all(len(b) <= 3 for b in got)
        where = {i: n for n, b in enumerate(got) for i in b}
        assert where[0] == where[2] == where[4] and where[1] == where[5]  # a chunk, and a key, stay together
    assert length_batches([5, 1, 6, 2, 7, 3, 8], 3, groups=keys) == [[3, 1, 5], [0, 2, 4], [6]]  # by length, filled
    with pytest.raises(ValueError, match="groups has 2 keys for 7 items"):
        length_batches([5, 1, 6, 2, 7, 3, 8], 3, groups=["a", "b"])


def test_training_with_group_by_batches_each_users_examples_together(model, tokenizer):
    import copy

    from cinephile.ratings.scoring import RatingLoss
    from cinephile.train import TrainConfig, train
    from lora import LoRAConfig, inject_lora

    tuned = copy.deepcopy(model)
    inject_lora(tuned, LoRAConfig.llama(r=2, alpha=4))
    examples = [{"prompt": p, "response": "Rating: 4.0", "rating": 4.0, "user_id": u}
                for p, u in zip(SHARED + PROMPTS, [7, 7, 7, 7, 1, 2, 3])]
    seen = []
    loss_fn = RatingLoss(tokenizer)

    def spy(m, batch):
        seen.append(sorted(batch["rating"].shape))
        return loss_fn(m, batch)

    train(tuned, tokenizer, examples, [], TrainConfig(epochs=1, batch_size=4, device="cpu", max_len=256,
                                                      group_by="user_id"), loss_fn=spy)
    assert sorted(s[0] for s in seen) == [3, 4]  # user 7's four prompts fill one batch, the three others the next
    with pytest.raises(ValueError, match="training example 0 has no 'user_id' to batch by"):
        train(tuned, tokenizer, [{k: v for k, v in e.items() if k != "user_id"} for e in examples], [],
              TrainConfig(epochs=1, batch_size=4, device="cpu", group_by="user_id"), loss_fn=loss_fn)


def test_rating_loss_on_adjustments_trains_anchor_plus_expected_adjustment(model, tokenizer):
    import copy

    from cinephile.ratings.scoring import RatingLoss
    from cinephile.batching import collate, tokenize_example
    from lora import LoRAConfig, inject_lora

    tuned = copy.deepcopy(model)
    inject_lora(tuned, LoRAConfig.llama(r=4, alpha=8))
    rated, anchors = [4.5, 1.0, 3.0], [3.7, 2.9, 3.1]
    items = [{**tokenize_example(tokenizer, p, f"Adjustment: {r - a:+.1f}", 128), "rating": r, "anchor": a}
             for p, r, a in zip(PROMPTS, rated, anchors)]
    batch = collate(items, tokenizer.pad_token_id)
    assert batch["anchor"].tolist() == pytest.approx(anchors)
    loss, n = RatingLoss(tokenizer, lam=0.0, answers=ADJUSTMENT_ANSWERS)(tuned, batch)
    expected = score_ratings(tuned, tokenizer, PROMPTS, answers=ADJUSTMENT_ANSWERS, anchors=anchors, progress=False)
    assert n == 3 and loss.item() == pytest.approx(float(np.mean((expected["expected"] - rated) ** 2)), rel=1e-4)
    # with lambda, the cross-entropy is that of the adjustment nearest the residual (4.5 - 3.7 -> +1.0)
    lam_loss, _ = RatingLoss(tokenizer, lam=1.0, answers=ADJUSTMENT_ANSWERS)(tuned, batch)
    logp = expected["logprobs"]
    lengths = [len(tokenizer(ADJUSTMENT_ANSWERS.text(v), add_special_tokens=False).input_ids)
               for v in ADJUSTMENT_ANSWERS.values]
    nearest = [ADJUSTMENT_ANSWERS.values.index(v) for v in (1.0, -2.0, 0.0)]
    ce = np.mean([-logp[i, j] / lengths[j] for i, j in enumerate(nearest)])
    assert lam_loss.item() == pytest.approx(loss.item() + ce, rel=1e-4)
    with pytest.raises(ValueError, match="needs examples with an 'anchor'"):
        RatingLoss(tokenizer, answers=ADJUSTMENT_ANSWERS)(tuned, {k: v for k, v in batch.items() if k != "anchor"})


# ---------------------------------------------------------------- examples a rating loss can train on

GOOD = {"prompt": "Target movie: Heat (1995)", "response": "Rating: 4.0", "rating": 4.0}


@pytest.mark.parametrize("bad, answers, error, message", [
    ({"response": None}, RATING_ANSWERS, TypeError, r"example 1: response must be a string, got None"),
    ({"rating": "four"}, RATING_ANSWERS, TypeError, r"example 1: rating must be a number, got 'four'"),
    ({"rating": None}, RATING_ANSWERS, TypeError, r"example 1: rating must be a number, got None"),
    ({"rating": True}, RATING_ANSWERS, TypeError, r"example 1: rating must be a number, got True"),
    ({"rating": float("nan")}, RATING_ANSWERS, ValueError, r"example 1: rating nan is not a rating on the 0.5-5"),
    ({"rating": 7.0}, RATING_ANSWERS, ValueError, r"example 1: rating 7.0 is not a rating on the 0.5-5"),
    ({"prompt": "  "}, RATING_ANSWERS, ValueError, r"example 1: prompt is empty"),
    ({"anchor": 3.0}, ADJUSTMENT_ANSWERS, None, None),
    ({"anchor": None}, ADJUSTMENT_ANSWERS, TypeError, r"example 1: anchor must be a number, got None"),
    ({"anchor": float("inf")}, ADJUSTMENT_ANSWERS, ValueError, r"example 1: anchor inf is not a rating"),
])
def test_rating_loss_checks_examples_naming_index_and_field(tokenizer, bad, answers, error, message):
    from cinephile.ratings.scoring import RatingLoss

    examples = [{**GOOD, "anchor": 3.5}, {**GOOD, **bad}]
    loss_fn = RatingLoss(tokenizer, answers=answers)
    if error is None:
        assert loss_fn.check_examples(examples) is examples
        return
    with pytest.raises(error, match=message):
        loss_fn.check_examples(examples)


def test_rating_loss_refuses_a_batch_with_a_nan_rating(tokenizer):
    from cinephile.ratings.scoring import RatingLoss

    batch = {"input_ids": torch.ones(3, 4, dtype=torch.long), "labels": torch.full((3, 4), -100),
             "rating": torch.tensor([4.0, float("nan"), 3.0])}
    with pytest.raises(ValueError, match=r"batch rows \[1\] hold a NaN or infinite rating; check the examples"):
        RatingLoss(tokenizer)(None, batch)


def test_train_checks_rating_examples_before_the_model_changes(tokenizer):
    from cinephile.ratings.scoring import RatingLoss
    from cinephile.train import train, TrainConfig
    from lora import LoRAConfig, inject_lora

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=64)).eval()
    inject_lora(model, LoRAConfig.llama(r=2, alpha=4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    examples = [GOOD, {**GOOD, "rating": "four"}]
    with pytest.raises(TypeError, match=r"example 1: rating must be a number, got 'four'"):
        train(model, tokenizer, examples, [], TrainConfig(epochs=1, batch_size=2), loss_fn=RatingLoss(tokenizer))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_prompts_longer_than_the_window_are_scored_from_their_end(gpt2, tokenizer):
    long_prompt = "Liked: Heat (1995); " * 40 + "Target movie: The Matrix (1999)"  # > 128 positions
    assert len(tokenizer(long_prompt, add_special_tokens=False).input_ids) > 128
    scored = score_ratings(gpt2, tokenizer, [long_prompt], progress=False)
    assert np.isfinite(scored["expected"]).all()


def test_score_ratings_under_bf16_autocast_stays_close_to_fp32(model, tokenizer):
    prompts = ["Liked: Heat (1995)\nTarget movie: Casino (1995)", "Liked: none\nTarget movie: Sabrina (1995)"]
    fp32 = score_ratings(model, tokenizer, prompts, progress=False)
    bf16 = score_ratings(model, tokenizer, prompts, progress=False, bf16=True)
    assert not np.array_equal(fp32["logprobs"], bf16["logprobs"])  # the autocast did run
    np.testing.assert_allclose(bf16["probs"], fp32["probs"], atol=0.02)
    assert next(model.parameters()).dtype == torch.float32  # parameters stay fp32
