"""Off-the-shelf readers: chat prompts, answer cleaning, rows scored and paired by question id."""

import pytest
import torch

from cinephile.replies import ReplyCache
from cinephile.trivia import evaluate, zero_shot

RECORDS = [
    {"id": "q1", "question": "Who directed Jaws?", "answer": "Steven Spielberg",
     "answer_aliases": ["Steven Spielberg", "Spielberg"], "retrieved_context": "Jaws (1975) by Steven Spielberg.",
     "gold_context": "Jaws is a 1975 film directed by Steven Spielberg."},
    {"id": "q2", "question": "When was Alien released?", "answer": "1979", "answer_aliases": ["1979"],
     "retrieved_context": "Alien is a science fiction horror film.", "gold_context": "Alien was released in 1979."},
]


def test_prompt_is_the_chat_template_with_the_system_message(smol_tokenizer):
    text = zero_shot.prompt(smol_tokenizer, " Who directed Jaws? ", "Jaws (1975) by Steven Spielberg.")
    assert zero_shot.CHAT_SYSTEM in text and "Context:\nJaws (1975) by Steven Spielberg.\n\nQuestion: Who directed Jaws?" in text
    assert text.endswith("<|im_start|>assistant\n")  # the answer starts right after the prompt
    assert "Context" not in zero_shot.prompt(smol_tokenizer, "Who directed Jaws?", None)


def test_a_tokenizer_without_chat_template_is_refused(smol_tokenizer):
    import copy

    plain = copy.copy(smol_tokenizer)
    plain.chat_template = None
    with pytest.raises(ValueError, match="needs a chat template"):
        zero_shot.prompt(plain, "Who?", "ctx")


@pytest.mark.parametrize("raw, clean", [("Steven Spielberg.", "Steven Spielberg"), (" 1979\nBecause it was", "1979"),
                                        ("Dr.  ", "Dr"), ("", ""), ("U.S.A.", "U.S.A")])
def test_an_answer_reply_is_its_first_line_without_a_final_period(raw, clean):
    assert zero_shot.answer_of(raw) == clean


def test_rows_are_scored_per_context_and_pair_with_tuned_rows(smol_tokenizer, monkeypatch):
    seen = []

    def fake_generate(model, tokenizer, prompts, **kw):
        seen.append(prompts)
        gold = "Alien was released" in prompts[1]
        return ["Spielberg.", "1979" if gold else "1975"]

    monkeypatch.setattr(zero_shot, "generate_answers", fake_generate)
    table, lines = zero_shot.evaluate_zero_shot(None, smol_tokenizer, RECORDS, "qwen2.5-coder-1.5b", progress=False)
    assert list(table["row"]) == ["Qwen2.5-Coder-1.5B-Instruct, zero-shot + retrieved context",
                                  "Qwen2.5-Coder-1.5B-Instruct, zero-shot + gold context"]
    assert list(table["em"]) == [50.0, 100.0] and len(lines) == 4 and lines[0]["prediction"] == "Spielberg"
    assert "Jaws (1975) by Steven Spielberg." in seen[0][0] and "directed by Steven" in seen[1][0]
    tuned = [{"row": "tuned", "id": r["id"], "em": 1.0} for r in RECORDS]
    paired = evaluate.paired_difference(tuned + lines, "tuned", table["row"][0])
    assert paired["diff"] == 50.0 and paired["n"] == 2


def test_records_without_the_context_or_unknown_keys_are_refused(smol_tokenizer):
    with pytest.raises(ValueError, match="records lack \\['gold_context'\\]"):
        zero_shot.evaluate_zero_shot(None, smol_tokenizer, [{k: v for k, v in RECORDS[0].items() if k != "gold_context"}],
                                     "smollm2-135m")
    with pytest.raises(ValueError, match="unknown context keys"):
        zero_shot.evaluate_zero_shot(None, smol_tokenizer, RECORDS, "smollm2-135m", context_keys=["closed"])


def test_read_with_loads_each_model_once_in_bf16_and_reads_every_set(smol_llama, smol_tokenizer, monkeypatch):
    loads = []

    def fake_load(name, dtype, device):
        loads.append((name, dtype))
        return smol_llama, smol_tokenizer

    monkeypatch.setattr(zero_shot.models, "load_base_model", fake_load)
    monkeypatch.setattr(zero_shot, "generate_answers", lambda m, t, prompts, **kw: ["1979"] * len(prompts))
    out = zero_shot.read_with(["smollm2-135m"], {"validation": RECORDS, "external": RECORDS[1:]}, bf16=True,
                              context_keys=["retrieved_context"], progress=False)
    assert loads == [("smollm2-135m", torch.bfloat16)]
    table, lines = out["external"]
    assert list(table["row"]) == ["SmolLM2-135M-Instruct, zero-shot + retrieved context"] and table["em"][0] == 100.0
    assert len(out["validation"][1]) == 2


def test_compare_picks_the_best_row_on_validation_only_and_pairs_every_set(smol_llama, smol_tokenizer, monkeypatch,
                                                                           tmp_path):
    monkeypatch.setattr(zero_shot.models, "load_base_model", lambda name, dtype, device: (name, smol_tokenizer))

    def fake_generate(model, tokenizer, prompts, **kw):  # "good-val" is right on validation only, "good-ext" on external
        external = "Alien" in prompts[0]
        right = (model == "good-ext") == external
        return [("1979" if right else "1975") if "Alien" in p else ("Spielberg" if right else "Lucas") for p in prompts]

    monkeypatch.setattr(zero_shot, "generate_answers", fake_generate)
    tuned = lambda recs: [{"row": "tuned", "id": r["id"], "em": 1.0, "f1": 1.0} for r in recs]  # noqa: E731
    shelf = zero_shot.compare(["good-val", "good-ext"], {"validation": (RECORDS[:1], tuned(RECORDS[:1])),
                                                         "external": (RECORDS[1:], tuned(RECORDS[1:]))},
                              "tuned", out_dir=tmp_path, progress=False)
    assert shelf.best_row == "good-val, zero-shot + retrieved context"  # the external set did not choose it
    assert shelf.paired["validation"]["em"]["diff"] == 0.0 and shelf.paired["external"]["em"]["diff"] == 100.0
    assert len(shelf.tables["external"]) == 4 and (tmp_path / "predictions_off_the_shelf_external.jsonl").is_file()
    assert "external: tuned - good-val" in shelf.paired_text()
    with pytest.raises(ValueError, match="needs the validation set"):
        zero_shot.compare(["good-val"], {"external": (RECORDS, tuned(RECORDS))}, "tuned")


def test_compare_needs_the_retrieved_context_it_pairs_on():
    with pytest.raises(ValueError, match="must include 'retrieved_context'"):
        zero_shot.compare(["any"], {"validation": (RECORDS, [])}, "tuned", context_keys=["gold_context"])


def test_the_quote_prompt_is_its_own_row_scored_on_the_answer_after_the_evidence(smol_tokenizer, monkeypatch):
    seen = []

    def fake_generate(model, tokenizer, prompts, **kw):
        seen.append((prompts, kw["max_new_tokens"]))
        return ['Evidence: "Jaws (1975) by Steven Spielberg." Answer: Steven Spielberg.', "Evidence: none. Answer: 1975"]

    monkeypatch.setattr(zero_shot, "generate_answers", fake_generate)
    table, lines = zero_shot.evaluate_zero_shot(None, smol_tokenizer, RECORDS, "qwen2.5-coder-1.5b", progress=False,
                                                context_keys=["retrieved_context"], answer_format="quote")
    assert list(table["row"]) == ["Qwen2.5-Coder-1.5B-Instruct, zero-shot, evidence first + retrieved context"]
    assert [x["prediction"] for x in lines] == ["Steven Spielberg", "1975"] and table["em"][0] == 50.0
    assert zero_shot.QUOTE_SYSTEM in seen[0][0][0] and seen[0][1] == zero_shot.REPLY_TOKENS["quote"] == 96


def test_a_second_reading_of_the_same_prompts_comes_from_the_reply_cache(smol_tokenizer, monkeypatch, tmp_path):
    calls = []

    def fake_generate(model, tokenizer, prompts, **kw):
        calls.append(len(prompts))
        return ["1979"] * len(prompts)

    monkeypatch.setattr(zero_shot, "generate_answers", fake_generate)
    cache = ReplyCache(tmp_path, "qwen2.5-coder-1.5b", weights=torch.float32, bf16=False)
    first, _ = zero_shot.evaluate_zero_shot(None, smol_tokenizer, RECORDS, "qwen2.5-coder-1.5b", progress=False,
                                            context_keys=["retrieved_context"], cache=cache)
    again = ReplyCache(tmp_path, "qwen2.5-coder-1.5b", weights=torch.float32, bf16=False)
    second, _ = zero_shot.evaluate_zero_shot(None, smol_tokenizer, RECORDS, "qwen2.5-coder-1.5b", progress=False,
                                             context_keys=["retrieved_context", "gold_context"], cache=again)
    assert calls == [2, 2]  # the retrieved-context prompts were read back; only the gold ones were generated
    assert first["em"][0] == second["em"][0] == 50.0
