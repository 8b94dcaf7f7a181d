"""The ratings task, one function per stage: MovieLens -> instructions -> baselines -> LoRA -> scores -> export.

``llm.ipynb``, the validation sweeps (``sweeps.train_and_validate``) and ``cinephile.launch`` call these
functions with one resolved ``RatingsConfig``; none of them re-implements a stage. The answer format
(rating or adjustment to a recommender, its system prompt and loss) is chosen once, by
``scoring.answer_format(cfg.residual_to)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lora import disable_lora, export_gguf_adapter, inject_lora, save_adapter

from cinephile import deploy, io, models
from cinephile.prompts import chat_examples
from cinephile.ratings import baselines as recommenders
from cinephile.ratings import data, download, evaluate, instructions, tuning
from cinephile.ratings.config import RatingsConfig
from cinephile.ratings.scoring import (ADJUSTMENT_ANSWERS, RATING_ANSWERS, Answers, greedy_ratings,
                                      score_ratings)
from cinephile.train import TrainConfig, token_loss, train


@dataclass
class Split:
    """MovieLens and its per-user temporal split."""
    ml: data.MovieLens
    split: pd.DataFrame  # ratings with a "split" column

    @property
    def train_df(self) -> pd.DataFrame:
        return self.split[self.split["split"] == "train"]

    @property
    def val_df(self) -> pd.DataFrame:
        return self.split[self.split["split"] == "val"]

    @property
    def test_df(self) -> pd.DataFrame:
        return self.split[self.split["split"] == "test"]


def load_and_split(cfg: RatingsConfig) -> Split:
    """Find (or download) MovieLens, load and clean it, and split each user's ratings in time: the last
    ``cfg.test_per_user`` go to test, the ``cfg.val_per_user`` before them to validation."""
    ml = data.load_movielens(download.resolve_movielens(cfg.movielens_dir, alternatives=cfg.movielens_alternatives))
    return Split(ml, data.temporal_split(ml.ratings, n_test=cfg.test_per_user, n_val=cfg.val_per_user))


def to_target(examples: list[dict], residual_to: str | None) -> list[dict]:
    """Examples answering the adjustment to ``residual_to`` (``instructions.as_residual``), or unchanged (None)."""
    return instructions.as_residual(examples, residual_to) if residual_to else examples


def rating_examples(cfg: RatingsConfig, split: Split, which: tuple[str, ...] = data.SPLITS,
                    params: dict[str, dict] | None = None) -> dict[str, list[dict]]:
    """Instructions of each split in ``which``: prompts, recommender predictions (with ``params``, the settings
    ``baselines`` chose on validation) and the answer target."""
    raw = {w: instructions.build_examples(split.split, split.ml.movies, split.ml.tags, which=w,
                                          history_size=cfg.history_size, counts=cfg.show_counts,
                                          recent=cfg.recent_ratings, shared_history=cfg.shared_history,
                                          max_per_user=cfg.max_per_user, pick=cfg.pick) for w in which}
    if cfg.predictors:
        pairs = {w: [(e["user_id"], e["movie_id"]) for e in ex] for w, ex in raw.items()}
        recs = recommenders.recommender_predictions(split.train_df, pairs, models=tuple(cfg.predictors),
                                                    folds=cfg.predictor_folds, params=params)
        raw = {w: instructions.with_predictions(ex, recs) for w, ex in raw.items()}
    return {w: to_target(ex, cfg.residual_to) for w, ex in raw.items()}


@dataclass
class Instructions:
    """The instructions of every split and the subsets the language model trains and is scored on."""
    raw: dict[str, list[dict]]  # all instructions per split, as written to JSONL
    train: list[dict]  # training instructions (train_limit applied)
    val: list[dict]  # validation instructions for the best-adapter choice
    eval: list[dict]  # test instructions scored by the language models

    @property
    def y_eval(self) -> np.ndarray:
        return np.array([e["rating"] for e in self.eval])

    @property
    def users(self) -> np.ndarray:
        """The user of each eval pair: the bootstrap resamples users, whose pairs are not independent."""
        return np.array([e["user_id"] for e in self.eval])


def build_instructions(cfg: RatingsConfig, split: Split, params: dict[str, dict] | None = None) -> Instructions:
    """Instructions per split, written to ``{data_out}/movielens_{split}.jsonl``, and the train/val/eval subsets.

    ``params``: the recommenders' settings chosen on validation (``Baselines.params``), for the predictions
    the prompts show. ``cfg.n_eval`` test users (seeded sample; None: all) are scored, every test pair of each.
    """
    raw = rating_examples(cfg, split, params=params)
    for w, ex in raw.items():
        io.write_jsonl(Path(cfg.data_out) / f"movielens_{w}.jsonl", ex)
    test = raw["test"]
    users = sorted({e["user_id"] for e in test})
    if cfg.n_eval is not None:
        users = set(np.random.default_rng(0).choice(users, size=min(cfg.n_eval, len(users)), replace=False).tolist())
    val = raw["val"]
    val = [val[i] for i in np.random.default_rng(1).permutation(len(val))[:cfg.n_val]]  # a spread of users
    return Instructions(raw, raw["train"][:cfg.train_limit] if cfg.train_limit else raw["train"],
                        val, [e for e in test if e["user_id"] in users])


def baselines(cfg: RatingsConfig, split: Split, *, progress: bool = True) -> tuning.Baselines:
    """The classic recommenders fitted on the train split and predicting every test pair (``tuning.fit_baselines``
    with ``cfg``'s surprise models, grid on validation when ``cfg.tune_baselines``, and seeds)."""
    return tuning.fit_baselines(split.train_df, split.val_df, split.test_df, cfg.surprise_baselines,
                                seeds=cfg.baseline_seeds, tune=cfg.tune_baselines, progress=progress)


def load_rating_model(cfg: RatingsConfig):
    """The base model (weights in ``cfg.frozen_dtype``) with fp32 LoRA adapters injected as ``cfg`` says, and its
    tokenizer."""
    model, tokenizer = models.load_base_model(cfg.model_name, dtype=models.frozen_torch_dtype(cfg.frozen_dtype),
                                              device=models.pick_device(cfg.device))
    inject_lora(model, models.lora_preset(cfg.model_name, r=cfg.lora_r, alpha=cfg.lora_alpha,
                                          dropout=cfg.lora_dropout, layers=cfg.lora_layers))
    return model, tokenizer


@dataclass
class Examples:
    """Instructions in the chat template, what the model reads: train, val and eval."""
    train: list[dict]
    val: list[dict]
    eval: list[dict]


def chat(cfg: RatingsConfig, tokenizer, instr: Instructions) -> Examples:
    """The train, val and eval instructions in the chat template with ``cfg.system``."""
    return Examples(*(chat_examples(x, tokenizer, cfg.system) for x in (instr.train, instr.val, instr.eval)))


def adjusts(rows: list[dict], path: str = "the examples") -> bool:
    """True when rows answer adjustments (they carry an ``anchor``: ``instructions.as_residual``); mixes refused."""
    kinds = {"anchor" in r for r in rows}
    if len(kinds) > 1:
        raise ValueError(f"{path} mixes rating examples and adjustment examples (with 'anchor'); write it again "
                         "from one notebook run (one RESIDUAL_TO setting)")
    return kinds == {True}


def launch_examples(rows: list[dict], tokenizer, path: str = "the examples") -> tuple[list[dict], Answers]:
    """Prompt/response examples (chat template, the format's system prompt) and their answer format from JSONL rows."""
    answers = ADJUSTMENT_ANSWERS if adjusts(rows, path) else RATING_ANSWERS
    return chat_examples(rows, tokenizer, answers.system), answers


def train_rating_model(model, tokenizer, train_ex: list[dict], val_ex: list[dict], train_config: TrainConfig, *,
                       answers: Answers, loss: str = "rating", rating_lambda: float = 0.1) -> dict:
    """Train the adapters on prompt/response examples with the answer format's loss ("rating") or "token" CE.

    Returns:
        ``cinephile.train.train``'s history.
    """
    if loss not in ("rating", "token"):
        raise ValueError(f"loss must be 'rating' or 'token', got {loss!r}")
    loss_fn = answers.loss(tokenizer, rating_lambda) if loss == "rating" else token_loss
    return train(model, tokenizer, train_ex, val_ex, train_config, loss_fn=loss_fn)


def expected_ratings(cfg: RatingsConfig, model, tokenizer, examples: list[dict], *, progress: bool = True) -> dict:
    """``score_ratings`` of chat examples in ``cfg``'s answer format (anchors taken from the examples)."""
    return score_ratings(model, tokenizer, [e["prompt"] for e in examples], batch_size=cfg.batch_size,
                         answers=cfg.answers, anchors=cfg.answers.anchors(examples), progress=progress, bf16=cfg.bf16)


def last_ratings(examples: list[dict]) -> list[int]:
    """Positions of each user's last pair in ``examples`` (the slice greedy decoding and zero-shot score)."""
    return np.flatnonzero(evaluate.slices(examples)[evaluate.LAST]).tolist()


def zero_shot(cfg: RatingsConfig, model, tokenizer, ex: Examples) -> dict:
    """Expected ratings of the untuned model (adapters off) on the last test pair of ``n_zero_shot`` users."""
    from_base = [ex.eval[i] for i in last_ratings(ex.eval)[:cfg.n_zero_shot]]
    with disable_lora(model):
        return expected_ratings(cfg, model, tokenizer, from_base)


@dataclass
class Scores:
    """The tuned model on the eval pairs next to the baselines, overall and per slice."""
    table: pd.DataFrame  # one row per model on all eval pairs (the results table)
    intervals: pd.DataFrame  # paired bootstrap (users resampled) of the tuned model against the baselines
    preds: dict[str, np.ndarray]  # model name -> predictions (baselines and the tuned model)
    greedy_texts: list[str]  # generated answers on each user's last pair
    n_failed: int  # greedy answers holding no rating
    against: list[str] = field(default_factory=list)  # the baselines of the intervals
    slices: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = field(default_factory=dict)  # name -> (table, intervals)


def score(cfg: RatingsConfig, model, tokenizer, instr: Instructions, ex: Examples, base: tuning.Baselines,
          zero: dict) -> Scores:
    """Expected value and argmax on every eval pair, greedy decoding (what llama.cpp runs) on each user's last
    pair; the results and interval tables overall and per slice (``evaluate.slices``)."""
    tuned = expected_ratings(cfg, model, tokenizer, ex.eval)
    masks = evaluate.slices(instr.eval, cfg.cold_max)  # ex.eval holds the same pairs in the same order
    last = np.flatnonzero(masks[evaluate.LAST]).tolist()
    greedy, texts, n_failed = greedy_ratings(model, tokenizer, [ex.eval[i]["prompt"] for i in last],
                                             batch_size=cfg.batch_size, answers=cfg.answers,
                                             anchors=cfg.answers.anchors([ex.eval[i] for i in last]), bf16=cfg.bf16)
    y, users = instr.y_eval, instr.users
    reported = f"{cfg.label} (expected value)"
    preds = {**base.on(instr.eval), reported: tuned["expected"], f"{cfg.label} (argmax)": tuned["argmax"]}
    seeds = base.seeds_on(instr.eval)
    against = ["user + item bias"] + [tuning.baseline_name(n, base.tuned.get(n)) for n in cfg.surprise_baselines]
    parts = {}
    for name, mask in masks.items():
        if not mask.any():
            continue
        sliced = {k: v[mask] for k, v in preds.items()}
        table = evaluate.results_table(y[mask], sliced, {k: v[:, mask] for k, v in seeds.items()})
        intervals = (evaluate.interval_table(y[mask], sliced, reported, against, groups=users[mask])
                     if len(set(users[mask])) > 1 else pd.DataFrame())
        parts[name] = (table, intervals)
    yl = y[last]
    parsed = np.array([g is not None for g in greedy])
    greedy_row = {"model": f"{cfg.label} (greedy, parsed answers only)",
                  **(evaluate.rating_metrics(yl[parsed], np.array([g for g in greedy if g is not None]))
                     if parsed.any() else {"n": 0})}
    zero_row = {"model": f"zero-shot SmolLM2 (expected value, last rating of the first {len(zero['expected'])} users)",
                **evaluate.rating_metrics(yl[:len(zero["expected"])], zero["expected"])}
    table, intervals = parts[evaluate.LAST]
    parts[evaluate.LAST] = (pd.concat([table, pd.DataFrame([greedy_row, zero_row])], ignore_index=True), intervals)
    table, intervals = parts.pop("all")
    return Scores(table, intervals, preds, texts, n_failed, against, parts)


def plot(cfg: RatingsConfig, instr: Instructions, scores: Scores, path=None):
    """Predicted vs true: the bias model, the last surprise baseline and the tuned model's expected value."""
    names = ["user + item bias", scores.against[-1], f"{cfg.label} (expected value)"]
    return evaluate.plot_predictions(instr.y_eval, {k: scores.preds[k] for k in dict.fromkeys(names)}, path)


@dataclass
class Export:
    adapter_dir: Path  # PEFT-layout adapter
    gguf: Path  # GGUF LoRA adapter
    modelfile: Path  # Ollama Modelfile
    description: str  # the Modelfile and how to run it, with paths a reader can follow
    agreement: float | None  # share of validation prompts where llama.cpp answers as PyTorch (None: no llama.cpp)
    answers: pd.DataFrame | None  # the first answers of both runtimes
    note: str = ""  # why the llama.cpp check did not run


def export(cfg: RatingsConfig, model, tokenizer, run_dir: Path, ex: Examples) -> Export:
    """Adapter directory, GGUF adapter and Modelfile in ``run_dir``; then llama.cpp vs PyTorch on validation."""
    adapter_dir = save_adapter(model, Path(run_dir) / "adapter")
    base_gguf = models.bundled_gguf_path()
    gguf = export_gguf_adapter(adapter_dir, Path(run_dir) / "adapter.gguf", base_gguf=base_gguf)
    modelfile = deploy.write_modelfile(run_dir, base_gguf=base_gguf, adapter_path=gguf, system=cfg.system)
    description = (deploy.describe_modelfile(modelfile) + "\nthen: ollama create cinephile-ratings -f "
                   f"{deploy.display_path(modelfile)} && ollama run cinephile-ratings")
    check = ex.val[:cfg.n_agreement]
    _, pt_texts, _ = greedy_ratings(model, tokenizer, [e["prompt"] for e in check], batch_size=cfg.batch_size,
                                    answers=cfg.answers, anchors=cfg.answers.anchors(check), progress=False,
                                    bf16=cfg.bf16)
    try:
        ids = [tokenizer(e["prompt"], add_special_tokens=False)["input_ids"] for e in check]
        cpp_texts = deploy.llama_cpp_generate(base_gguf, ids, lora_gguf=gguf, max_tokens=8, stop=["<|im_end|>"])
    except ModuleNotFoundError as err:
        return Export(adapter_dir, gguf, modelfile, description, None, None, str(err))
    parse = cfg.answers.parse
    agree = deploy.agreement([parse(t) for t in pt_texts], [parse(t) for t in cpp_texts])  # the answers, not the text
    return Export(adapter_dir, gguf, modelfile, description, agree,
                  pd.DataFrame({"pytorch": pt_texts, "llama.cpp": cpp_texts}))


def baselines_record(base: tuning.Baselines) -> dict:
    """The factor models' grids on validation, chosen settings and seeds, as plain JSON."""
    return {name: {"params": t.params, "seeds": list(t.seeds), "grid": t.grid} for name, t in base.tuned.items()}


def summary(cfg: RatingsConfig, instr: Instructions, ex: Examples, scores: Scores, exported: Export | None,
            history: dict, timings: dict, run_dir: Path, base: tuning.Baselines | None = None) -> dict:
    """The run's record: written to ``run_dir/metrics.json`` (with timings and history) and ``cfg.results_json``."""
    record = evaluate.results_record(
        scores.table, scores.intervals, scores.slices, n_test_pairs=len(ex.eval),
        n_users=len({e["user_id"] for e in instr.eval}), reported=f"{cfg.label} (expected value)",
        greedy_parse_failures=scores.n_failed, greedy_pairs=len(scores.greedy_texts),
        llama_cpp_agreement=exported.agreement if exported else None, wall_time_s=timings["total_s"],
        n_train_examples=len(ex.train), baselines=baselines_record(base) if base else None,
        config={"model": cfg.model_name, "max_per_user": cfg.max_per_user, "predictors": list(cfg.predictors),
                "show_counts": cfg.show_counts, "recent_ratings": cfg.recent_ratings,
                "shared_history": cfg.shared_history, "residual_to": cfg.residual_to,
                "loss": cfg.loss,
                "rating_lambda": cfg.rating_lambda, "pick": cfg.pick, "predictor_folds": cfg.predictor_folds,
                "test_per_user": cfg.test_per_user, "val_per_user": cfg.val_per_user, "cold_max": cfg.cold_max,
                "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
                         "layers": None if cfg.lora_layers is None else list(cfg.lora_layers)},
                "train": asdict(cfg.train_config())})
    io.save_json(Path(run_dir) / "metrics.json", {**record, "timings_s": timings, "history": history})
    if cfg.results_json:
        io.save_json(cfg.results_json, record)
    return record


