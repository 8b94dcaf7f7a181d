"""The ablation loop: one reader per step on the same validation questions (training and generation stubbed)."""

import pytest
import torch

from cinephile.trivia import pipeline
from cinephile.trivia.pipeline import ablation_steps


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


def test_ablation_trains_and_generates_each_step_with_its_epochs_and_precision(monkeypatch):
    """Steps without epochs / bf16 keep the notebook's TrainConfig; a step's own values reach training and generation."""
    from cinephile.train import TrainConfig
    from tests.helpers import HashEmbedder, WhitespaceTokenizer, tiny_llama

    context = "Jaws is a film directed by Steven Spielberg.\n\nThe score was composed by John Williams."
    recs = [{"id": f"q{i}", "question": q, "answer": a, "answer_aliases": [a], "context": context, "kind": "single"}
            for i, (q, a) in enumerate([("Who directed Jaws?", "Steven Spielberg"),
                                        ("Who composed the score of Jaws?", "John Williams")])]
    tok = WhitespaceTokenizer()
    tok.chat_template = None
    seen, inits = [], []
    # the stub moves the global generator on by a different amount each call, as real steps would
    monkeypatch.setattr(pipeline.models, "load_base_model",
                        lambda name: (tiny_llama(), tok, torch.rand(7 * len(seen) + 1))[:2])

    def fake_train(model, tok, train_ex, val_ex, cfg):
        seen.append(("train", cfg))
        inits.append([p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n])
    monkeypatch.setattr(pipeline, "train", fake_train)
    monkeypatch.setattr(pipeline, "generate_answers",
                        lambda model, tok, prompts, progress, bf16: seen.append(("generate", bf16)) or
                        ["Steven Spielberg"] * len(prompts))
    base = {"model": "tiny", "chunk_tokens": 8, "k": 1, "lexical_weight": 0.5, "comparisons": True, "p_gold": None,
            "train_pairs": 1}
    steps = [{"name": "as configured", **base},
             {"name": "longer", **base, "epochs": 3, "bf16": True, "train_pairs": 2}]
    kwargs = dict(model_name="tiny", lora_kwargs={"r": 2}, train_cfg=TrainConfig(epochs=1, lr=1e-3), style="plain")
    with pytest.raises(ValueError, match=r"steps train on \[2\] comparison pairs but train_sets has \[1\]"):
        pipeline.ablation({1: recs}, recs, HashEmbedder(), steps, **kwargs)
    assert not seen  # checked before any training
    table = pipeline.ablation({1: recs[:1], 2: recs}, recs, HashEmbedder(), steps, **kwargs)
    assert table["n_train"].tolist() == [1, 2]  # each step trains on its own pair count's records
    assert [(kind, getattr(x, "epochs", x), getattr(x, "bf16", x)) for kind, x in seen] == [
        ("train", 1, None), ("generate", False, False), ("train", 3, True), ("generate", True, True)]
    assert seen[0][1].lr == seen[2][1].lr == 1e-3  # everything else from train_cfg
    assert table["em_all"].tolist() == [50.0, 50.0] and table["n_all"].tolist() == [2, 2]
    # every step's adapters start from the same seeded draw, whatever ran before it
    assert inits[0] and all(torch.equal(a, b) for a, b in zip(inits[0], inits[1]))


@pytest.mark.parametrize("change, message", [
    ({"lexical_weight": -0.5}, r"need k >= 1, .*got k=1, chunk_tokens=8, lexical_weight=-0.5, p_gold=None"),
    ({"k": 0}, r"step 'bad': need k >= 1.*got k=0"),
    ({"p_gold": 1.5}, r"p_gold=1.5"),
])
def test_ablation_checks_every_step_before_training_the_first(monkeypatch, change, message):
    monkeypatch.setattr(pipeline.models, "load_base_model", lambda name: pytest.fail("a step started"))
    good = {"name": "good", "chunk_tokens": 8, "k": 1, "lexical_weight": 0.5, "comparisons": False,
            "p_gold": None, "train_pairs": 1}
    steps = [good, {**good, "name": "bad", **change}]
    with pytest.raises(ValueError, match=message):
        pipeline.ablation({1: []}, [], None, steps, model_name="tiny", lora_kwargs={}, train_cfg=None, style="plain")
    with pytest.raises(ValueError, match=r"ablation step 1 \('bad'\) has no \['k'\]; build steps with ablation_steps"):
        pipeline.ablation({1: []}, [], None, [good, {k: v for k, v in steps[1].items() if k != "k"}],
                        model_name="tiny", lora_kwargs={}, train_cfg=None, style="plain")
