"""Stored greedy replies: only the missing prompts are generated, per model, dtype and reply budget."""

import json

import pytest
import torch

from cinephile import replies


def counting(answer=lambda p: p.upper()):
    calls = []

    def generate(prompts):
        calls.append(list(prompts))
        return [answer(p) for p in prompts]
    return generate, calls


def test_only_missing_prompts_are_generated_and_read_back_by_a_new_cache(tmp_path):
    generate, calls = counting()
    cache = replies.ReplyCache(tmp_path, "qwen2.5-coder-1.5b", weights=torch.float32, bf16=False)
    assert cache.replies(["a", "b", "a"], generate, 16) == ["A", "B", "A"]
    assert calls == [["a", "b"]]  # a repeated prompt is generated once
    again = replies.ReplyCache(tmp_path, "qwen2.5-coder-1.5b", weights=torch.float32, bf16=False)
    assert again.replies(["b", "c"], generate, 16) == ["B", "C"]
    assert calls[1:] == [["c"]]
    stored = [json.loads(line) for line in cache.path.read_text().splitlines()]
    assert len(stored) == 3 and cache.path.name == "qwen2.5-coder-1.5b-float32.jsonl"


def test_the_reply_budget_dtype_and_autocast_keep_replies_apart(tmp_path):
    generate, calls = counting()
    fp32 = replies.ReplyCache(tmp_path, "qwen2.5-coder-1.5b", weights=torch.float32, bf16=False)
    fp32.replies(["a"], generate, 16)
    fp32.replies(["a"], generate, 96)  # another budget: another reply
    bf16 = replies.ReplyCache(tmp_path, "qwen2.5-coder-1.5b", weights=torch.bfloat16, bf16=True)
    bf16.replies(["a"], generate, 16)
    assert calls == [["a"], ["a"], ["a"]]
    assert bf16.path.name == "qwen2.5-coder-1.5b-bfloat16-bf16-autocast.jsonl" and bf16.path != fp32.path


def test_a_generator_that_loses_replies_is_refused_and_nothing_is_stored(tmp_path):
    cache = replies.ReplyCache(tmp_path, "smollm2-135m", weights=torch.float32, bf16=False)
    with pytest.raises(ValueError, match="returned 1 replies for 2 prompts"):
        cache.replies(["a", "b"], lambda prompts: ["only one"], 16)
    assert not cache.path.exists()


def test_a_damaged_cache_file_is_named_with_the_fix(tmp_path):
    cache = replies.ReplyCache(tmp_path, "smollm2-135m", weights=torch.float32, bf16=False)
    cache.path.write_text('{"key": "k", "reply": "r"}\n{"key": ')
    with pytest.raises(ValueError, match="delete .*smollm2-135m-float32.jsonl to generate its replies again"):
        replies.ReplyCache(tmp_path, "smollm2-135m", weights=torch.float32, bf16=False)


def test_unpinned_models_are_not_cached(tmp_path):
    assert replies.pinned("gemma3-270m") and replies.pinned("qwen2.5-coder-0.5b")
    assert not replies.pinned("gpt2") and not replies.pinned(str(tmp_path / "my-model"))
    with pytest.raises(ValueError, match="does not pin its weights"):
        replies.ReplyCache(tmp_path, "gpt2", weights=torch.float32, bf16=False)
    assert replies.open_cache(tmp_path, "gpt2", weights=torch.float32, bf16=False) is None
    assert replies.open_cache(None, "gemma3-270m", weights=torch.float32, bf16=False) is None
    generate, calls = counting()
    assert replies.cached(None, ["x"], generate, 16) == ["X"] and calls == [["x"]]
