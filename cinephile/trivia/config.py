"""The trivia pipeline's settings: one frozen dataclass, defaults = main.ipynb's parameters.

Fields set to "auto" are measured by a stage (``pipeline.choose_settings``,
``pipeline.choose_prompt_style``) or by ``resolve_hardware``, each of which returns a new config
through ``dataclasses.replace``; the resolved config is what a run saves in ``config.json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from cinephile import io, models
from cinephile.train import TrainConfig


@dataclass(frozen=True)
class TriviaConfig:
    """What the trivia notebook, its ablation and the benchmarks run with."""

    model_name: str = "gemma3-270m"  # reader: bundled Gemma 3 270M; "smollm2-135m", "gpt2" or a local directory
    data_csv: str = "Data/movie_trivia_qa.csv"  # QA sample (id, question, answer, aliases, context)
    facts_csv: str = "Data/film_facts.csv"  # year and director per film, for comparison questions ("": none)
    external_csv: str = "../shared/data/movie_qa/hotpotqa_movie_dev.csv"  # external test set ("": skip)
    triviaqa_source: str = ""  # TriviaQA rc path or "hf": builds data_csv from it ("": use data_csv as is)
    max_questions: int | None = None  # keep only the first N questions (quick runs)
    external_limit: int | None = None  # evaluate only the first N external questions
    split: str = "film"  # "film": hold out whole films; "id": by question id
    val_fraction: float = 0.2  # share of films (or questions) held out for validation
    comparison_pairs: tuple[int, int] = (50, 8)  # film pairs with comparison questions, training / validation
    train_comparisons: bool = True  # train on the comparison questions (False: single-hop only)
    bridges: tuple[int, int] = (0, 0)  # bridge questions (film reached through other facts), training / validation
    similar_distractors: int | None = None  # None: random same-side films beside the question's own (a single-hop
    # question as many as the sample's context had, a comparison one); N: the N same-side films most like the
    # question (HotpotQA's distractor setting; film split only)
    generated_questions: str = "Data/generated_questions.jsonl"  # questions an instruct model wrote (questions.py)
    generated: tuple[int, int] = (0, 0)  # how many of them each side gets, training / validation (by their film)
    lexical_weight: float | str = "auto"  # BM25 share of the hybrid retriever; "auto": best training recall@1
    chunk_tokens: int | str = "auto"  # chunk size in tokens; "auto": best fed-context recall within the budget
    top_k: int | str = "auto"  # chunks fed to the reader; "auto" as chunk_tokens
    chunk_choices: tuple[int, ...] = (48, 64, 96, 128, 192)  # chunk sizes tried by "auto"
    k_choices: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)  # k tried by "auto"
    max_context_tokens: int = 450  # mean fed-context length allowed by "auto" (the time budget)
    raft_p_gold: float | None = 0.8  # share of training contexts holding the evidence (None: retrieved context)
    reserve_tokens: int = 96  # room for prompt template, question and answer
    prompt_style: str = "auto"  # "auto" (lowest base-model answer loss), "plain" or "chat"
    lora_r: int = 16  # adapter rank
    lora_alpha: float = 32  # adapter scaling numerator
    lora_dropout: float = 0.05  # adapter input dropout
    lora_targets: str | tuple[str, ...] = "auto"  # "auto": the model's preset, or module-name suffixes
    lora_layers: tuple[int, ...] | None = None  # blocks with adapters (None: all); the top blocks alone make a
    # training step cheaper, since backpropagation stops below the lowest adapted block
    epochs: int = 2  # passes over the training examples
    lr: float = 5e-4  # peak learning rate
    batch_size: int = 8  # examples per forward pass
    grad_accum: int = 1  # forward passes per optimizer step
    bf16: bool | str | None = "auto"  # bf16 autocast in training and generation; "auto": where the CPU has it
    max_len: int = 640  # longest training example in tokens
    max_train_examples: int | None = None  # a seeded sample of at most N training prompts (None: all)
    keep_read: bool = False  # train only on prompts the untuned reader already reads (its answer shares a word
    # with the gold answer; comparison questions always kept): the tuning then changes the answer's form, not
    # which part of the context the model picks
    answer_format: str = "answer"  # the reader's reply: "answer" (the answer only) or "quote" (the context's words
    # that hold the answer, then the answer: RAFT's chain of thought with quotes; longer generation)
    frozen_dtype: str = "auto"  # the frozen base's weights: "float32", "bfloat16"; "auto": bfloat16 for the
    # Gemma 3 and Qwen readers when bf16 is on (half the memory, no cast per step), float32 for the others
    off_the_shelf: tuple[str, ...] = ("qwen2.5-coder-1.5b",)  # instruct models read the same contexts zero-shot
    reply_cache: str | None = None  # folder of the untuned models' stored replies (off the shelf, keep_read): a
    # second seed or recipe on the same contexts reads them back instead of generating (cinephile.replies)
    device: str | None = None  # None: cuda, then mps, then cpu
    seed: int = 0  # adapter initialisation, shuffling, dropout

    @classmethod
    def from_params(cls, params: Mapping) -> TriviaConfig:
        """The config from the notebook's upper-case parameters (``globals()``); absent names keep defaults."""
        values = {f.name: params[f.name.upper()] for f in dataclasses.fields(cls) if f.name.upper() in params}
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, values: Mapping) -> TriviaConfig:
        """The config from a dict such as a run's ``config.json``; unknown keys are ignored, lists become tuples."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names})

    @classmethod
    def load(cls, path) -> TriviaConfig:
        """The resolved config a run saved in ``config.json`` (``pipeline.train_reader``)."""
        values = io.read_json(path)
        if "model_name" not in values:
            raise ValueError(f"{path} holds no trivia config (no model_name); re-run main.ipynb to write one")
        return cls.from_dict(values)

    def resolved(self) -> bool:
        """True when no field is "auto" any more."""
        return "auto" not in (self.lexical_weight, self.chunk_tokens, self.top_k, self.prompt_style,
                              self.lora_targets, self.bf16, self.frozen_dtype)

    def base_dtype(self):
        """The torch dtype the frozen base loads in (``frozen_dtype``, resolved)."""
        return models.frozen_torch_dtype(self.frozen_dtype)

    def train_config(self) -> TrainConfig:
        """The training settings (``bf16`` False / None: mixed precision on a GPU, fp32 on a CPU)."""
        if self.bf16 == "auto":
            raise ValueError('bf16 is still "auto"; resolve the config with resolve_hardware() first')
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, grad_accum=self.grad_accum,
                           max_len=self.max_len, device=self.device, bf16=self.bf16 or None, seed=self.seed)

    def lora_config(self):
        """The ``lora.LoRAConfig`` of the reader."""
        return models.lora_preset(self.model_name, r=self.lora_r, alpha=self.lora_alpha, dropout=self.lora_dropout,
                                  targets=self.lora_targets if self.lora_targets == "auto" else list(self.lora_targets),
                                  layers=self.lora_layers)


def resolve_hardware(cfg: TriviaConfig) -> TriviaConfig:
    """``bf16="auto"`` -> native bf16 of this CPU; ``lora_targets="auto"`` -> the model's preset modules;
    ``frozen_dtype="auto"`` -> bfloat16 for the Gemma 3 and Qwen readers with bf16 on (a faster training step and
    generation, ``benchmarks/roofline.py``), else float32."""
    bf16 = models.native_bf16() if cfg.bf16 == "auto" else (None if cfg.bf16 is None else bool(cfg.bf16))
    targets = dataclasses.replace(cfg, lora_layers=None).lora_config().target_modules  # suffixes; layers apart
    frozen = cfg.frozen_dtype
    if frozen == "auto":
        bf16_base = models.part_model(cfg.model_name) or cfg.model_name in models.GEMMA3_ALIASES
        frozen = "bfloat16" if bf16 and bf16_base else "float32"
    return dataclasses.replace(cfg, bf16=bf16, lora_targets=targets if isinstance(targets, str) else tuple(targets),
                               frozen_dtype=frozen)


def with_reader(cfg: TriviaConfig, model_name: str, **changes) -> TriviaConfig:
    """``cfg`` (e.g. a run's saved config) with another reader and ``changes``, its hardware fields resolved again.

    ``bf16``, ``frozen_dtype`` and ``lora_targets`` depend on the model, so the saved values of the run's
    own reader are reset to "auto" and resolved for ``model_name`` (``resolve_hardware``).
    """
    return resolve_hardware(dataclasses.replace(cfg, model_name=model_name, bf16="auto", frozen_dtype="auto",
                                                lora_targets="auto", **changes))
