"""The one generation path: left-padded batches equal one-by-one decoding, stop strings, errors."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from cinephile.batching import left_pad, length_batches
from cinephile.generate import encode_prompts, generate_answers

PROMPTS = ["Who directed Jaws?", "Q: Which film is set on Amity Island, and who wrote its score?\nA:", "Hi"]


@pytest.fixture(scope="module")
def gpt2(smol_gpt2):
    """Learned absolute positions: wrong position ids under left padding would change the output."""
    return smol_gpt2


def test_batched_left_padded_generation_equals_one_by_one(gpt2, smol_tokenizer):
    batched = generate_answers(gpt2, smol_tokenizer, PROMPTS, max_new_tokens=6, batch_size=3, stop="\n\n\n",
                               progress=False)
    alone = [generate_answers(gpt2, smol_tokenizer, [p], max_new_tokens=6, stop="\n\n\n", progress=False)[0]
             for p in PROMPTS]
    assert batched == alone and any(batched)


def test_answers_are_cut_at_the_stop_string_and_mode_is_restored(gpt2, smol_tokenizer, monkeypatch):
    gpt2.train()
    answer = smol_tokenizer(" Steven Spielberg\nQuestion: more", add_special_tokens=False)["input_ids"]

    def fake_generate(input_ids, attention_mask, **kwargs):
        assert (attention_mask[:, -1] == 1).all()  # left padding: every prompt ends at the right edge
        return torch.cat([input_ids, torch.tensor([answer] * len(input_ids))], 1)
    monkeypatch.setattr(gpt2, "generate", fake_generate)
    assert generate_answers(gpt2, smol_tokenizer, PROMPTS[:2], progress=False) == ["Steven Spielberg"] * 2
    assert gpt2.training
    gpt2.eval()


def test_errors_are_named(gpt2, smol_tokenizer):
    with pytest.raises(ValueError, match="non-empty list of strings"):
        encode_prompts(smol_tokenizer, "one string")
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        encode_prompts(smol_tokenizer, ["ok", ""])

    class NoPad:
        pad_token_id = None
    with pytest.raises(ValueError, match="no pad token id; call cinephile.models.ensure_pad_token"):
        generate_answers(gpt2, NoPad(), ["x"])


def test_length_batches_and_left_pad():
    lengths = [5, 1, 3, 2, 4]
    assert length_batches(lengths, 2) == [[1, 3], [2, 4], [0]]
    for seed in range(3):
        groups = length_batches(lengths, 2, shuffle=True, seed=seed)
        assert sorted(i for g in groups for i in g) == list(range(5))
    ids, mask = left_pad([[7, 8, 9], [5]], pad_id=0)
    assert ids.tolist() == [[7, 8, 9], [0, 0, 5]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        length_batches(lengths, 0)


CONTEXTS = ["Jaws is a 1975 film directed by Steven Spielberg.\nIts score is by John Williams.",
            "Amity Island is fictional. John Williams wrote the score.", "Rocky Balboa boxes in Philadelphia."]


def test_constrained_answers_are_spans_of_their_context_yes_no_or_numbers(gpt2, smol_tokenizer):
    import re

    free = generate_answers(gpt2, smol_tokenizer, PROMPTS, max_new_tokens=6, progress=False)
    got = generate_answers(gpt2, smol_tokenizer, PROMPTS, max_new_tokens=6, progress=False, contexts=CONTEXTS)
    assert got != free  # a random model's free output is not copied from the context
    for answer, context in zip(got, CONTEXTS):
        flat = " ".join(context.split())
        assert answer and (answer in flat or answer in ("yes", "no") or re.fullmatch(r"\d+", answer)), answer
    with pytest.raises(ValueError, match="one context per prompt"):
        generate_answers(gpt2, smol_tokenizer, PROMPTS, contexts=CONTEXTS[:1], progress=False)


def test_span_constraint_follows_the_context_and_accepts_the_chat_form_of_a_first_word(smol_tokenizer):
    from cinephile.generate import span_constraint, span_sources

    tok = smol_tokenizer
    allowed = span_constraint(tok, [span_sources(tok, "Holly is played by Bonnie Bedelia.")], prompt_len=2)
    spaced, bare = tok(" Bonnie", add_special_tokens=False)["input_ids"], tok("Bonnie", add_special_tokens=False)["input_ids"]
    after = tok(" Bonnie Bedelia", add_special_tokens=False)["input_ids"][1]
    assert spaced[0] in allowed(0, torch.tensor([7, 7])) and bare[0] in allowed(0, torch.tensor([7, 7]))
    for first in (spaced[0], bare[0]):
        nxt = allowed(0, torch.tensor([7, 7, first]))
        assert after in nxt and tok.eos_token_id in nxt
        assert tok(" Holly", add_special_tokens=False)["input_ids"][0] not in nxt


def test_bf16_generation_runs_under_bf16_autocast_and_fp32_by_default(gpt2, smol_tokenizer, monkeypatch):
    seen = []
    real = gpt2.generate

    def spy(**kwargs):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return real(**kwargs)
    monkeypatch.setattr(gpt2, "generate", spy)
    fp32 = generate_answers(gpt2, smol_tokenizer, PROMPTS, max_new_tokens=4, progress=False)
    assert seen == [False]
    bf16 = generate_answers(gpt2, smol_tokenizer, PROMPTS, max_new_tokens=4, progress=False, bf16=True)
    assert seen == [False, True] and len(bf16) == len(fp32) == len(PROMPTS)
    assert all(p.dtype == torch.float32 for p in gpt2.parameters())


@pytest.fixture(scope="module")
def short_gpt2(smol_tokenizer):
    """A GPT-2 with only 64 positions: a longer prompt would index past its position table."""
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(smol_tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64)
    return GPT2LMHeadModel(cfg).eval()


def test_prompts_longer_than_the_window_keep_their_end(short_gpt2, smol_tokenizer, caplog):
    tok = smol_tokenizer
    long = "Context: " + "Jaws was filmed on Martha's Vineyard. " * 20 + "\nQuestion: Who directed Jaws?\nAnswer:"
    assert len(tok(long, add_special_tokens=False)["input_ids"]) > 64
    got = generate_answers(short_gpt2, tok, [long, "Hi"], max_new_tokens=6, stop="\n\n\n", progress=False)
    kept = tok(long, add_special_tokens=False)["input_ids"][-(64 - 6):]  # the end: question and answer cue
    out = short_gpt2.generate(torch.tensor([kept]), attention_mask=torch.ones(1, len(kept), dtype=torch.long),
                              max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    assert got[0] == tok.decode(out[0, len(kept):], skip_special_tokens=True).split("\n\n\n")[0].strip()
    assert "1 of 2 prompts are longer than 58 tokens" in caplog.text
    with pytest.raises(ValueError, match="max_new_tokens=64 leaves no room for a prompt in the model's 64 positions"):
        generate_answers(short_gpt2, tok, ["Hi"], max_new_tokens=64, progress=False)


def test_the_lm_head_gets_a_contiguous_input_while_generating_and_the_hook_goes_afterwards(gpt2, smol_tokenizer):
    from cinephile.generate import contiguous_head_input

    head = gpt2.get_output_embeddings()
    seen = []
    probe = head.register_forward_hook(lambda module, args, out: seen.append(args[0].is_contiguous()))
    try:
        strided = torch.randn(2, 5, head.in_features)[:, -1:, :]  # the last position, as generate keeps it
        assert not strided.is_contiguous()
        with contiguous_head_input(gpt2):
            with_hook = head(strided)
        assert seen == [True] and not head._forward_pre_hooks
        torch.testing.assert_close(with_hook, head(strided))  # the same values either way
        seen.clear()
        answers = generate_answers(gpt2, smol_tokenizer, PROMPTS, max_new_tokens=4, stop="\n\n\n", progress=False)
        assert all(seen) and len(seen) > 2 and not head._forward_pre_hooks
        assert answers == generate_answers(gpt2, smol_tokenizer, PROMPTS, max_new_tokens=4, stop="\n\n\n",
                                           progress=False)
    finally:
        probe.remove()
