"""The trivia stages on tiny inputs, and the ablation that runs them once per step (training and generation stubbed)."""

import dataclasses
import json

import pytest
import torch

from cinephile import replies
from cinephile.trivia import ablation, evaluate, films, pipeline, results, zero_shot
from cinephile.trivia.ablation import ablation_steps
from cinephile.trivia.config import TriviaConfig, resolve_hardware
from tests.conftest import ROOT
from tests.helpers import HashEmbedder, WhitespaceTokenizer, tiny_llama

CONTEXT = "Jaws is a film directed by Steven Spielberg.\n\nThe score was composed by John Williams."
QUESTIONS = [("Who directed Jaws?", "Steven Spielberg"), ("Who composed the score of Jaws?", "John Williams")]


def _records(prefix):
    return [{"id": f"{prefix}{i}", "question": q, "answer": a, "answer_aliases": [a], "context": CONTEXT,
             "kind": "single"} for i, (q, a) in enumerate(QUESTIONS)]


def _tok():
    tok = WhitespaceTokenizer()
    tok.chat_template = None
    return tok


def _resolved(**changes):
    return dataclasses.replace(TriviaConfig(model_name="tiny", lexical_weight=0.5, chunk_tokens=8, top_k=1,
                                            prompt_style="plain", bf16=False, lora_targets=("q_proj", "v_proj"),
                                            frozen_dtype="float32", epochs=1, lr=1e-3), **changes)


def test_config_from_params_reads_the_notebook_names_and_resolves_auto_once(monkeypatch):
    cfg = TriviaConfig.from_params({"MODEL_NAME": "gpt2", "TOP_K": 3, "COMPARISON_PAIRS": [4, 1], "RUN_NAME": "x"})
    assert (cfg.model_name, cfg.top_k, cfg.comparison_pairs, cfg.epochs) == ("gpt2", 3, (4, 1), 2)
    with pytest.raises(ValueError, match="resolve the config with resolve_hardware"):
        cfg.train_config()
    monkeypatch.setattr(pipeline.models, "native_bf16", lambda: True)
    resolved = resolve_hardware(cfg)
    assert resolved.bf16 is True and resolved.lora_targets == ("c_attn", "c_proj", "c_fc")
    assert cfg.bf16 == "auto" and cfg.lora_targets == "auto"  # a new config; the given one is unchanged
    assert resolved.train_config().bf16 is True and resolved.train_config().lr == cfg.lr
    assert not resolved.resolved() and _resolved().resolved()  # lexical weight, chunks, k, style still auto
    assert TriviaConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(_resolved())))) == _resolved()


def test_load_and_split_holds_out_whole_films_or_ids():
    cfg = TriviaConfig(data_csv=str(ROOT / "Data" / "movie_trivia_qa.csv"), facts_csv=str(ROOT / "Data" /
                       "film_facts.csv"), max_questions=40, comparison_pairs=(3, 1))
    split = pipeline.load_and_split(cfg)
    assert len(split.records) == 40
    train_films = {r["film"] for r in split.train_raw if r.get("film")}
    assert split.val_films() and not train_films & set(split.val_films())
    assert {r["kind"] for r in split.train_raw} == {"single", "comparison"}
    table = split.table()
    assert table.loc[("validation", "single"), "questions"] == sum(r["kind"] == "single" for r in split.val_raw)
    by_id = pipeline.load_and_split(dataclasses.replace(cfg, split="id"))
    assert {r["kind"] for r in by_id.train_raw + by_id.val_raw} == {"single"}
    assert len(by_id.train_raw) + len(by_id.val_raw) == 40 and not by_id.val_ids & {r["id"] for r in by_id.train_raw}
    with pytest.raises(ValueError, match='split must be "film" or "id"'):
        pipeline.load_and_split(dataclasses.replace(cfg, split="year"))
    similar = pipeline.load_and_split(dataclasses.replace(cfg, similar_distractors=2))
    assert [r["question"] for r in similar.train_raw] == [r["question"] for r in split.train_raw]
    with pytest.raises(ValueError, match='set split="film", or similar_distractors=None'):
        pipeline.load_and_split(dataclasses.replace(cfg, split="id", similar_distractors=2))
    single = [r for r in similar.val_raw if r["kind"] == "single"]  # comparisons draw from fewer films here
    blocks = [sum(1 for p in films.paragraphs(r["context"]) if films.BLOCK_START.match(p)) for r in single]
    assert single and blocks == [3] * len(single)  # the film's own block and two distractors


def test_choose_settings_resolves_only_the_auto_fields_on_training_questions():
    split = pipeline.Split(_records("t"), _records("t"), _records("v"))
    cfg = TriviaConfig(chunk_choices=(8, 16), k_choices=(1, 2), max_context_tokens=100, reserve_tokens=40)
    got = pipeline.choose_settings(cfg, split, _tok(), HashEmbedder(), window=50)
    assert got.cfg.lexical_weight in set(got.weight_table["lexical_weight"])
    assert got.cfg.top_k in (1, 2) and got.cfg.chunk_tokens <= 10  # capped by window - reserve_tokens
    assert set(got.context_table["chunk_tokens"]) == {8, 16}
    given = pipeline.choose_settings(dataclasses.replace(cfg, lexical_weight=0.25, top_k=2, chunk_tokens=6), split,
                                     _tok(), HashEmbedder(), window=50)
    assert (given.cfg.lexical_weight, given.cfg.top_k, given.cfg.chunk_tokens, given.weight_table) == (0.25, 2, 6, None)


def test_chunk_and_retrieve_writes_the_jsonl_and_keeps_the_split(tmp_path):
    comparison = {**_records("c")[0], "id": "c0", "kind": "comparison"}
    split = pipeline.Split([], _records("t") + [comparison], _records("v"))
    got = pipeline.chunk_and_retrieve(_resolved(), split, _tok(), HashEmbedder(), tmp_path)
    assert [r["id"] for r in got.val] == ["v0", "v1"] and {r["id"] for r in got.train} == {"t0", "t1", "c0"}
    assert all(r["retrieved_context"] and "gold_context" in r for r in got.train + got.val)
    for name in ("processed_chunks_with_qa.jsonl", "training_data.jsonl", "validation_data.jsonl"):
        assert (tmp_path / name).stat().st_size > 0
    assert set(got.precision_recall) == {"MiniLM", "BM25", "hybrid (w=0.5)"}
    single = pipeline.chunk_and_retrieve(_resolved(train_comparisons=False), split, _tok(), HashEmbedder(),
                                         compare=False)
    assert {r["id"] for r in single.train} == {"t0", "t1"} and single.precision_recall is None


def test_train_reader_saves_the_resolved_config_and_evaluate_returns_its_lines(monkeypatch, tmp_path):
    cfg = _resolved()
    model, tok = tiny_llama(), _tok()
    split = pipeline.Split([], _records("t"), _records("v"))
    retrieved = pipeline.chunk_and_retrieve(cfg, split, tok, HashEmbedder(), compare=False)
    seen = {}
    monkeypatch.setattr(pipeline, "train", lambda m, t, tr, va, tc: seen.update(n=len(tr), tc=tc) or {"best_epoch": 1})
    monkeypatch.setattr(pipeline, "save_run", lambda m, d, weights_name, config: {"config": config,
                                                                                  "weights": weights_name})
    with pytest.raises(ValueError, match="resolve the config before training"):
        pipeline.train_reader(dataclasses.replace(cfg, prompt_style="auto"), model, tok, retrieved, tmp_path)
    trained = pipeline.train_reader(cfg, model, tok, retrieved, tmp_path)
    assert seen["n"] == 2 and seen["tc"] == cfg.train_config() and trained.n_with_evidence is not None
    assert trained.saved["config"] == {**dataclasses.asdict(cfg), "history": {"best_epoch": 1}}
    assert trained.saved["weights"] == "lora_tiny_triviaqa_weights.pth"
    # the base rows answer wrong, the tuned rows right
    monkeypatch.setattr(evaluate, "disable_lora", lambda m: seen.update(base=True) or _Base(seen))
    monkeypatch.setattr(evaluate, "generate_answers", lambda m, t, prompts, **kw: [
        "nobody" if seen.get("inside") else a for a in ["Steven Spielberg", "John Williams"]][:len(prompts)])
    got = pipeline.evaluate_reader(cfg, model, tok, retrieved, tmp_path)
    assert got.lines == [json.loads(x) for x in (tmp_path / "predictions_validation.jsonl").read_text().splitlines()]
    assert got.table.set_index("row")["em"].to_dict() == {"closed-book (base)": 0.0, "base + retrieved context": 0.0,
                                                          "tuned + retrieved context": 100.0,
                                                          "tuned + gold context (upper bound)": 100.0}
    assert got.paired["diff"] == 100.0 and got.paired["n"] == 2
    assert got.by_kind().loc["tuned + retrieved context", "single"] == 100.0
    assert pipeline.validation_scores(cfg, model, tok, retrieved)["all"]["em"] == 100.0
    counts, examples = results.error_tables(results.error_analysis({"validation": got, "external": None}))
    assert list(counts.columns.levels[0]) == ["validation"] and examples.empty  # no tuned failure


class _Base:
    def __init__(self, seen):
        self.seen = seen

    def __enter__(self):
        self.seen["inside"] = True

    def __exit__(self, *exc):
        self.seen["inside"] = False


def test_ablation_steps_change_one_setting_at_a_time():
    steps = ablation_steps(chunk_tokens=128, k=3, lexical_weight=0.5, model="gemma3-270m")
    keys = ["model", "chunk_tokens", "k", "lexical_weight", "comparisons", "train_pairs", "p_gold", "epochs", "bf16"]
    assert steps[0] == {"name": steps[0]["name"], "model": "smollm2-135m", "chunk_tokens": 192, "k": 1,
                        "lexical_weight": 0.0, "comparisons": False, "train_pairs": 36, "p_gold": None,
                        "epochs": 1, "bf16": None}
    changed = [{k for k in keys if a[k] != b[k]} for a, b in zip(steps, steps[1:])]
    assert changed == [{"chunk_tokens", "k", "lexical_weight"}, {"comparisons"}, {"p_gold"}, {"model"}]
    assert len(ablation_steps(chunk_tokens=128, k=3, lexical_weight=0.5, model="smollm2-135m")) == 4
    longer = ablation_steps(chunk_tokens=128, k=3, lexical_weight=0.5, model="gemma3-270m", epochs=2, bf16=True)
    assert longer[:-1] == steps and {k for k in keys if longer[-1][k] != steps[-1][k]} == {"epochs", "bf16"}
    assert longer[-1]["name"] == "+ 2 epochs, bf16 autocast"
    more = ablation_steps(chunk_tokens=128, k=3, lexical_weight=0.5, model="gemma3-270m", epochs=2, bf16=True,
                          train_pairs=50)
    assert more[:-1] == longer and {k for k in keys if more[-1][k] != longer[-1][k]} == {"train_pairs"}
    assert more[-1]["train_pairs"] == 50 and more[-1]["name"] == "+ comparisons over 50 film pairs (not 36)"
    finer = ablation_steps(chunk_tokens=48, k=6, lexical_weight=0.5, model="gemma3-270m", epochs=2, bf16=True,
                           train_pairs=50, first_context=(128, 3))
    assert finer[:-1] == more and {k for k in keys if finer[-1][k] != more[-1][k]} == {"chunk_tokens", "k"}
    assert finer[-1]["name"] == "+ top-6 chunks of 48 tokens (not 3 of 128)"
    assert ablation_steps(chunk_tokens=128, k=3, lexical_weight=0.5, model="gemma3-270m", epochs=2, bf16=True,
                          train_pairs=50, first_context=(128, 3)) == more
    cfg = _resolved(chunk_tokens=48, top_k=6, model_name="gemma3-270m", epochs=2, bf16=True, comparison_pairs=(50, 8))
    assert ablation.steps_for(cfg, first_context=(128, 3)) == finer
    last = ablation.step_config(cfg, finer[-1])
    assert dataclasses.replace(last, lora_targets=cfg.lora_targets) == cfg  # the last step is the notebook's run


def test_ablation_trains_and_generates_each_step_with_its_epochs_and_precision(monkeypatch):
    """Steps without epochs / bf16 keep the config's; a step's own values reach training and generation."""
    tok = _tok()
    seen, inits = [], []
    # the stub moves the global generator on by a different amount each call, as real steps would
    monkeypatch.setattr(pipeline.models, "load_base_model",
                        lambda name, dtype, device=None: (tiny_llama(), tok, torch.rand(7 * len(seen) + 1))[:2])

    def fake_train(model, tok, train_ex, val_ex, cfg):
        seen.append(("train", cfg))
        inits.append([p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n])
    monkeypatch.setattr(pipeline, "train", fake_train)
    monkeypatch.setattr(evaluate, "generate_answers", lambda model, tok, prompts, bf16, **kw:
                        seen.append(("generate", bf16)) or ["Steven Spielberg"] * len(prompts))
    base = {"model": "tiny", "chunk_tokens": 8, "k": 1, "lexical_weight": 0.5, "comparisons": True, "p_gold": None,
            "train_pairs": 1}
    steps = [{"name": "as configured", **base},
             {"name": "longer", **base, "epochs": 3, "bf16": True, "train_pairs": 2}]
    cfg = _resolved(bf16=False)
    val = _records("v")
    one, two = (pipeline.Split([], _records("t")[:n], val) for n in (1, 2))
    with pytest.raises(ValueError, match=r"steps train on \[2\] comparison pairs but split_by_pairs has \[1\]"):
        ablation.ablation(cfg, {1: one}, HashEmbedder(), steps)
    assert not seen  # checked before any training
    table = ablation.ablation(cfg, {1: one, 2: two}, HashEmbedder(), steps)
    assert table["n_train"].tolist() == [1, 2]  # each step trains on its own pair count's records
    assert [(kind, getattr(x, "epochs", x), getattr(x, "bf16", x)) for kind, x in seen] == [
        ("train", 1, None), ("generate", False, False), ("train", 3, True), ("generate", True, True)]
    assert seen[0][1].lr == seen[2][1].lr == 1e-3  # everything else from the config
    assert table["em_all"].tolist() == [50.0, 50.0] and table["n_all"].tolist() == [2, 2]
    # every step's adapters start from the same seeded draw, whatever ran before it
    assert inits[0] and all(torch.equal(a, b) for a, b in zip(inits[0], inits[1]))


@pytest.mark.parametrize("change, message", [
    ({"lexical_weight": -0.5}, r"need k >= 1, .*got k=1, chunk_tokens=8, lexical_weight=-0.5, p_gold=None"),
    ({"k": 0}, r"step 'bad': need k >= 1.*got k=0"),
    ({"p_gold": 1.5}, r"p_gold=1.5"),
])
def test_ablation_checks_every_step_before_training_the_first(monkeypatch, change, message):
    monkeypatch.setattr(pipeline.models, "load_base_model", lambda *a, **kw: pytest.fail("a step started"))
    good = {"name": "good", "chunk_tokens": 8, "k": 1, "lexical_weight": 0.5, "comparisons": False,
            "p_gold": None, "train_pairs": 1}
    steps = [good, {**good, "name": "bad", **change}]
    split = {1: pipeline.Split([], [], [])}
    with pytest.raises(ValueError, match=message):
        ablation.ablation(_resolved(), split, None, steps)
    with pytest.raises(ValueError, match=r"ablation step 1 \('bad'\) has no \['k'\]; build steps with ablation_steps"):
        ablation.ablation(_resolved(), split, None, [good, {k: v for k, v in steps[1].items() if k != "k"}])


def test_the_frozen_base_is_bf16_only_for_a_gemma_or_qwen_reader_with_bf16_on():
    qwen = TriviaConfig(model_name="qwen2.5-coder-1.5b", bf16=True)
    assert resolve_hardware(qwen).frozen_dtype == "bfloat16" and resolve_hardware(qwen).base_dtype() == torch.bfloat16
    assert resolve_hardware(dataclasses.replace(qwen, bf16=False)).frozen_dtype == "float32"
    assert resolve_hardware(TriviaConfig(model_name="gemma3-270m", bf16=True)).frozen_dtype == "bfloat16"
    assert resolve_hardware(TriviaConfig(model_name="gemma3-270m", bf16=False)).frozen_dtype == "float32"
    assert resolve_hardware(TriviaConfig(model_name="smollm2-135m", bf16=True)).frozen_dtype == "float32"
    assert resolve_hardware(dataclasses.replace(qwen, frozen_dtype="float32")).frozen_dtype == "float32"
    with pytest.raises(ValueError, match='frozen_dtype must be "float32" or "bfloat16"'):
        dataclasses.replace(qwen, frozen_dtype="fp8").base_dtype()


def test_train_reader_keeps_a_seeded_sample_and_evaluation_runs_only_the_rows_asked(monkeypatch):
    cfg = _resolved(max_train_examples=1)
    model, tok = tiny_llama(), _tok()
    split = pipeline.Split([], _records("t"), _records("v"))
    retrieved = pipeline.chunk_and_retrieve(cfg, split, tok, HashEmbedder(), compare=False)
    monkeypatch.setattr(pipeline, "train", lambda m, t, tr, va, tc: {"n": len(tr), "ids": [e["id"] for e in tr]})
    first = pipeline.train_reader(cfg, model, tok, retrieved).history
    assert first["n"] == 1 and pipeline.train_reader(cfg, model, tok, retrieved).history == first
    monkeypatch.setattr(evaluate, "generate_answers", lambda m, t, prompts, **kw: ["Steven Spielberg"] * len(prompts))
    got = pipeline.evaluate_reader(cfg, model, tok, retrieved, rows=[pipeline.TUNED_ROW])
    assert list(got.table["row"]) == ["tuned + retrieved context"] and got.paired is None


def test_keep_read_trains_only_on_what_the_untuned_reader_reads_and_counts_the_rest(monkeypatch, tmp_path):
    cfg = _resolved(keep_read=True)
    model, tok = tiny_llama(), _tok()
    comparison = {**_records("c")[0], "id": "c0", "kind": "comparison"}
    split = pipeline.Split([], _records("t") + [comparison], _records("v"))
    retrieved = pipeline.chunk_and_retrieve(cfg, split, tok, HashEmbedder(), compare=False)
    answers = {r["question"]: r["answer"] for r in retrieved.train}
    off = []

    class Off:
        def __enter__(self):
            off.append(True)

        def __exit__(self, *exc):
            off.append(False)

    asked = []

    def generate(m, t, prompts, **kw):  # the untuned reader: a near-miss on t0, wrong on t1
        assert off == [True], "answers must come from the base model, adapters off"
        asked.extend(prompts)
        return [answers[QUESTIONS[0][0]].split()[-1] if QUESTIONS[0][0] in p else "nobody" for p in prompts]

    monkeypatch.setattr(zero_shot, "disable_lora", lambda m: Off())
    monkeypatch.setattr(zero_shot, "generate_answers", generate)
    monkeypatch.setattr(pipeline, "train", lambda m, t, tr, va, tc: {"questions": sorted(e["prompt"] for e in tr)})
    trained = pipeline.train_reader(cfg, model, tok, retrieved)
    assert trained.read_filter == {"single": {"kept": 1, "dropped": 1}, "comparison": {"kept": 1, "dropped": 0}}
    assert len(asked) == 2  # the two single-hop prompts: the comparison is kept unread
    monkeypatch.setattr(replies, "pinned", lambda name: True)  # let the tiny model's replies be stored
    stored = dataclasses.replace(cfg, reply_cache=str(tmp_path))
    asked.clear()
    off.clear()
    assert pipeline.train_reader(stored, model, tok, retrieved).read_filter == trained.read_filter
    assert pipeline.train_reader(stored, model, tok, retrieved).read_filter == trained.read_filter
    assert len(asked) == 2  # the second filter read its replies back
    kept = trained.history["questions"]
    assert len(kept) == 2 and any(QUESTIONS[0][0] in p for p in kept) and not any(QUESTIONS[1][0] in p for p in kept)
    assert pipeline.train_reader(_resolved(), model, tok, retrieved).read_filter is None


def test_with_reader_resolves_the_hardware_fields_again_for_the_new_model():
    from cinephile.trivia.config import with_reader

    saved = resolve_hardware(TriviaConfig(model_name="gemma3-270m", lexical_weight=0.5, chunk_tokens=48, top_k=6,
                                          prompt_style="plain", bf16=True, lora_targets=("q_proj",)))
    swapped = with_reader(saved, "gpt2", top_k=10)
    assert (swapped.model_name, swapped.top_k, swapped.chunk_tokens) == ("gpt2", 10, 48)
    assert swapped.frozen_dtype == "float32" and swapped.lora_targets == ("c_attn", "c_proj", "c_fc")  # GPT-2 preset
    assert swapped.bf16 == resolve_hardware(dataclasses.replace(saved, bf16="auto")).bf16


def test_lora_layers_adapt_only_those_blocks_and_survive_the_saved_config(monkeypatch):
    cfg = resolve_hardware(dataclasses.replace(_resolved(), lora_targets="auto", lora_layers=(1,)))
    assert cfg.lora_targets == ("q_proj", "k_proj", "v_proj", "o_proj")  # suffixes; the layers stay their own field
    monkeypatch.setattr(pipeline.models, "load_base_model", lambda *a, **kw: (tiny_llama(), _tok()))
    model, _, names = pipeline.load_reader(cfg)
    assert len(names) == 4 and all(".layers.1." in n for n in names)
    needs_grad = {}

    def record(i):
        def hook(module, args, out):
            needs_grad[i] = (out[0] if isinstance(out, tuple) else out).requires_grad
        return hook
    for i, block in enumerate(model.model.layers):
        block.register_forward_hook(record(i))
    ids = torch.randint(0, 64, (2, 6))
    model(input_ids=ids, labels=ids).loss.backward()
    assert needs_grad == {0: False, 1: True}  # backpropagation stops at the lowest adapted block
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(".layers.1." in n and ".lora_" in n for n in grads)
    saved = TriviaConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert saved == cfg and saved.lora_config() == cfg.lora_config()
    every = dataclasses.replace(cfg, lora_layers=None)
    assert len(pipeline.load_reader(every)[2]) == 8  # the tiny model has two blocks
