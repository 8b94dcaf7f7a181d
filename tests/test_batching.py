"""Tokenising prompt/response examples, padding them into batches, and length-grouped batch order."""

import pytest
import torch

from cinephile.batching import IGNORE, batches, collate, length_batches, left_pad, tokenize_example
from tests.helpers import CharTokenizer


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


@pytest.mark.parametrize("shuffle", [False, True])
def test_length_batches_group_similar_lengths_and_cover_every_index_once(shuffle):
    lengths = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 11]
    groups = length_batches(lengths, 3, shuffle=shuffle, seed=1)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert sorted(len(g) for g in groups) == [2, 3, 3, 3]
    if not shuffle:  # sorted by length: every batch holds neighbours in length
        assert [[lengths[i] for i in g] for g in groups] == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11]]
    else:  # a seed gives the same order again, another seed another order
        assert groups == length_batches(lengths, 3, shuffle=True, seed=1)
        assert groups != length_batches(lengths, 3, shuffle=True, seed=2)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        length_batches(lengths, 0)


def test_left_pad_puts_padding_and_a_zero_mask_on_the_left():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.dtype == mask.dtype == torch.long
    with pytest.raises(ValueError, match="non-empty list of non-empty token sequences"):
        left_pad([[1], []], pad_id=0)
