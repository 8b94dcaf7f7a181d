"""The ratings run's one config: every setting of llm.ipynb, resolved once (system prompt, answer format)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cinephile import io, models
from cinephile.ratings.scoring import Answers, answer_format
from cinephile.train import TrainConfig


@dataclass(frozen=True)
class RatingsConfig:
    """Every setting of a ratings run (the defaults are llm.ipynb's)."""

    model_name: str = "smollm2-135m"  # as for models.load_base_model
    movielens_dir: str = "Data/ml-latest-small"  # downloaded from GroupLens into this folder when missing
    movielens_alternatives: tuple[str, ...] = ("../shared/data/movielens",)  # local copies tried first
    test_per_user: int = 5  # each user's last ratings that are test pairs
    val_per_user: int = 5  # the ratings just before those: validation pairs
    max_per_user: int | None = 8  # training instructions per user (see pick)
    pick: str = "latest"  # "latest": each user's most recent train ratings; "random": a seeded sample
    train_limit: int | None = None  # keep only the first N training instructions (quick runs)
    history_size: int = 20  # most recent earlier ratings considered per prompt
    predictors: tuple[str, ...] = ("bias", "SVD", "SVD++")  # recommenders whose prediction the prompt shows
    predictor_folds: int = 1  # refits for the training prompts' predictions
    residual_to: str | None = "SVD++"  # answer the adjustment to this recommender's prediction; None: the rating
    show_counts: bool = True  # show how many ratings the user / movie averages rest on
    recent_ratings: int = 0  # show the latest N (<= 8) training-period ratings with their values instead of the
    # liked / disliked titles (0: liked and disliked)
    shared_history: bool = True  # a user's training instructions show one history (before the earliest of them)
    # and are batched together, so training runs it once per user (scoring.RatingLoss)
    surprise_baselines: tuple[str, ...] = ("KNNBaseline", "SVD", "SVD++")  # scikit-surprise models in the table
    tune_baselines: bool = True  # SVD / SVD++ settings chosen on the validation pairs (tuning.GRIDS)
    baseline_seeds: int = 5  # SVD / SVD++ fitted with this many seeds (mean and spread of RMSE)
    cold_max: int = 5  # a "cold" movie has at most this many training ratings
    n_eval: int | None = None  # test users scored by the language models, every test pair of each (None: all)
    n_zero_shot: int = 64  # users whose last test rating the untuned model scores (a reference)
    n_val: int = 64  # validation instructions for the best-adapter choice (a seeded sample)
    loss: str = "rating"  # "rating": squared error of the expected rating + rating_lambda x CE; "token": CE
    rating_lambda: float = 0.1  # weight of the answer's cross-entropy in the rating loss
    lora_r: int = 16  # LoRA rank
    lora_alpha: float = 32  # LoRA alpha (scaling alpha / r)
    lora_dropout: float = 0.1  # dropout on the LoRA input
    lora_layers: tuple[int, ...] | None = tuple(range(20, 30))  # blocks with adapters (None: all)
    epochs: int = 1  # passes over the training instructions
    lr: float = 5e-4  # peak learning rate
    batch_size: int = 8  # examples per forward pass (training and scoring)
    max_len: int = 448  # longest tokenised example
    n_agreement: int = 24  # validation prompts answered by both PyTorch and llama.cpp
    device: str | None = None  # None: cuda, then mps, then cpu
    bf16: bool | str | None = "auto"  # bf16 autocast in training and scoring; "auto": where the CPU has it natively
    frozen_dtype: str = "auto"  # the frozen base's weights: "float32", "bfloat16" (adapters stay fp32, and
    # autocast no longer casts the base's weights at every step: SmolLM2's step 1.12x in the roofline); "auto":
    # bfloat16 when bf16 autocast is on
    run_name: str = "ratings"  # outputs go to runs/<run_name>/
    data_out: str = "Data"  # where the instruction JSONL files go
    results_json: str = "results/ratings.json"  # the final table ("" to skip)
    system: str | None = None  # system prompt; None: the answer format's
    run_variants: bool = False  # retrain the variants of results/ratings_variants.json

    @classmethod
    def from_params(cls, params: dict) -> RatingsConfig:
        """The config from a notebook's upper-case parameters (``MAX_PER_USER`` -> ``max_per_user``), resolved."""
        names = {f.name.upper(): f.name for f in dataclasses.fields(cls)}
        return cls(**{names[k]: v for k, v in params.items() if k in names}).resolved()

    def resolved(self) -> RatingsConfig:
        """A new config with the system prompt chosen, ``bf16="auto"`` decided for this machine
        (``models.native_bf16``), ``frozen_dtype="auto"`` following it, and lists (from ``-p``) turned into tuples."""
        tuples = {k: tuple(getattr(self, k)) for k in ("movielens_alternatives", "predictors", "surprise_baselines",
                                                       "lora_layers") if getattr(self, k) is not None}
        bf16 = models.native_bf16() if self.bf16 == "auto" else (None if self.bf16 is None else bool(self.bf16))
        frozen = ("bfloat16" if bf16 else "float32") if self.frozen_dtype == "auto" else self.frozen_dtype
        if frozen not in ("float32", "bfloat16"):
            raise ValueError(f'frozen_dtype must be "float32", "bfloat16" or "auto", got {self.frozen_dtype!r}')
        return dataclasses.replace(self, system=self.system or self.answers.system, bf16=bf16, frozen_dtype=frozen,
                                   **tuples)

    @property
    def answers(self) -> Answers:
        """The answer format: ratings, or adjustments to ``residual_to``."""
        return answer_format(self.residual_to)

    @property
    def label(self) -> str:
        """The tuned model's name in the tables."""
        return f"LoRA-tuned, adjusting {self.residual_to}" if self.residual_to else "LoRA-tuned"

    def train_config(self) -> TrainConfig:
        """The training settings (``bf16`` False / None: mixed precision on a GPU, fp32 on a CPU)."""
        if self.bf16 == "auto":
            raise ValueError('bf16 is still "auto"; resolve the config with resolved() first')
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, max_len=self.max_len,
                           device=self.device, bf16=self.bf16 or None,
                           group_by="user_id" if self.shared_history else None)


def start_run(cfg: RatingsConfig) -> Path:
    """``runs/<run_name>/`` with the resolved config in ``config.json``."""
    run_dir = io.make_run_dir(cfg.run_name)
    io.save_json(run_dir / "config.json", asdict(cfg))
    return run_dir


class Timer:
    """Seconds per stage: ``with timer("training_s"): ...`` records into ``timer.seconds``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.start = time.time()

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.time()
        try:
            yield
        finally:
            self.seconds[name] = time.time() - t0

    def total(self) -> dict[str, float]:
        """The stage times plus ``total_s`` since the timer started."""
        self.seconds["total_s"] = time.time() - self.start
        return self.seconds
