"""Training configuration: optimiser, schedule, batching, validation and checkpoint sections.

The model itself is a named preset (`preset`) plus overrides (the config's `model` mapping),
resolved by `resolve()` into the typed model config `TrainConfig.model`; the run writes it out
in full.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from s2s_core import config as config_lib
from s2s_core.errors import ConfigError
from s2s_core.models.config import PRESETS, ModelConfig, model_config

DEFAULT_PRESET = "transformer-small"


@dataclass(kw_only=True)
class OptimConfig:
    lr: float = 7e-4
    """Peak learning rate (reached at the end of warm-up)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    weight_decay: float = 0.0001
    """AdamW decoupled weight decay."""
    clip_norm: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    label_smoothing: float = 0.1
    """Probability mass spread over the vocabulary in the loss."""
    accumulation: int = 1
    """Micro-batches per worker summed into one optimiser step."""

    def problems(self) -> list[str]:
        out = config_lib.at_least(self, 1, "accumulation") + config_lib.at_least(self, 0, "weight_decay", "clip_norm")
        if self.lr <= 0:
            out.append(f"`lr` must be > 0, but is {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            out.append(f"`betas` must be two numbers in [0, 1), but is {self.betas}")
        if not 0 <= self.label_smoothing < 1:
            out.append(f"`label_smoothing` must be in [0, 1), but is {self.label_smoothing}")
        return out


@dataclass(kw_only=True)
class ScheduleConfig:
    kind: Literal["inverse_sqrt", "cosine", "linear", "constant"] = "inverse_sqrt"
    """Learning-rate shape after the linear warm-up. Cosine and linear decay to `min_lr_ratio`
    at the end of training: `max_steps`, or the end of `max_minutes` if that comes first."""
    warmup_steps: int = 4000
    """Steps of linear warm-up from 0 to `optim.lr`."""
    min_lr_ratio: float = 0.0
    """Cosine and linear: final learning rate as a share of the peak."""

    def problems(self) -> list[str]:
        out = config_lib.at_least(self, 0, "warmup_steps")
        if not 0 <= self.min_lr_ratio <= 1:
            out.append(f"`min_lr_ratio` must be in [0, 1], but is {self.min_lr_ratio}")
        return out


@dataclass(kw_only=True)
class BatchConfig:
    max_tokens: int = 4096
    """Token budget of one micro-batch: rows x max(padded source, padded target length)."""
    max_source_len: int = 256
    """Longer training pairs (in tokens) are skipped and counted."""
    max_target_len: int = 256
    """Longer training pairs (in tokens) are skipped and counted."""
    loader: Literal["stream", "memory"] = "stream"
    """stream: read the dataset's token-id shards a window at a time (memory bounded by the
    window); memory: read and tokenize the whole train split in every worker (datasets prepared
    before token-id shards existed; small corpora)."""
    window_shards: int = 4
    """stream: shards whose batches are shuffled together and held in memory at once (two
    windows at most, when a step straddles them)."""

    def problems(self) -> list[str]:
        out = config_lib.at_least(self, 1, "max_tokens", "max_source_len", "max_target_len", "window_shards")
        longest = max(self.max_source_len, self.max_target_len) + 1
        if not out and self.max_tokens < longest:
            out.append(f"`max_tokens` must be >= the longest allowed sequence ({longest}), but is {self.max_tokens}")
        return out


@dataclass(kw_only=True)
class ValidationConfig:
    every_steps: int = 1000
    """Validate every this many steps (and at the end); 0 disables validation."""
    metric: Literal["bleu", "chrf", "loss"] = "bleu"
    """Score that picks the best checkpoint and drives early stopping."""
    patience: int = 0
    """Stop after this many validations without improvement; 0 never stops early."""
    decode_sentences: int = 200
    """Validation pairs greedily decoded for BLEU/chrF (the first ones by id); 0 skips decoding."""
    loss_sentences: int = 2000
    """Validation pairs used for the loss (the first ones by id)."""
    max_len_a: float = 1.5
    """Greedy decoding stops at `max_len_a * source_len + max_len_b` tokens."""
    max_len_b: int = 10
    """See `max_len_a`."""

    def problems(self) -> list[str]:
        return config_lib.at_least(self, 0, "every_steps", "patience", "decode_sentences", "max_len_b") + \
            config_lib.at_least(self, 1, "loss_sentences")


@dataclass(kw_only=True)
class CheckpointConfig:
    every_steps: int = 1000
    """Write a checkpoint every this many steps (and always at the end)."""
    keep_last: int = 2
    """Checkpoints kept for resuming; the best model is kept apart in `best/`."""

    def problems(self) -> list[str]:
        return config_lib.at_least(self, 1, "every_steps", "keep_last")


@dataclass(kw_only=True)
class TrainConfig:
    preset: str = DEFAULT_PRESET
    """Named model preset (see `s2s_core.models.PRESETS`)."""
    model: ModelConfig = field(default_factory=PRESETS[DEFAULT_PRESET])
    """The model: `preset` overlaid with the config's `model` mapping of overrides (e.g.
    `model.dropout=0.2`), as `resolve()` builds it."""
    max_steps: int = 10000
    """Optimiser steps to train for."""
    max_epochs: int = 0
    """Also stop after this many passes over the train split; 0 means no limit."""
    max_minutes: float = 0
    """Also stop after this many minutes of training steps (validation and checkpoints not
    counted; the same step on every worker; kept across resumes); 0 means no limit."""
    seed: int = 1
    """Seeds parameter init, batch order and dropout (reproducible for any worker count)."""
    log_every: int = 10
    """Write a metrics record every this many steps."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser and loss."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Learning-rate schedule."""
    batching: BatchConfig = field(default_factory=BatchConfig)
    """Token-budget batches."""
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    """Validation, best-model selection and early stopping."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoint frequency and retention."""
    init_from: str | None = None
    """A model package (local or s3://) whose weights start the training instead of random ones:
    fine-tuning an imported model, or continued training. The model is the package's (its config;
    `preset` does not apply, `model.dropout`/`model.attention_dropout` may change), trained on the
    rows its tokenizer makes from the decoder start token it was made with; the dataset must use
    the package's tokenizer (prepare it with `tokenizer.from=PKG`). A run's own checkpoint, when
    resuming, wins."""

    def problems(self) -> list[str]:
        return config_lib.at_least(self, 1, "max_steps", "log_every") + config_lib.at_least(self, 0, "max_epochs", "max_minutes")


def resolve(data: dict[str, Any]) -> tuple[TrainConfig, ModelConfig]:
    """Build the training config, with its typed model config, from plain data (where `model`
    holds overrides of the preset's fields), reporting every problem of both at once.

    Returns:
        (TrainConfig, its `model`).
    Raises:
        ConfigError: every unknown key, bad value and unknown preset together.
    """
    problems: list[str] = []
    plain = data if isinstance(data, dict) else {}
    try:
        train = config_lib.build(TrainConfig, {key: value for key, value in plain.items() if key != "model"}
                                 if isinstance(data, dict) else data)
    except ConfigError as err:
        problems += err.problems
        train = None
    overrides = plain.get("model", {})
    if not isinstance(overrides, dict):
        problems.append(f"`model` must be a mapping of the preset's fields, not {type(overrides).__name__}")
        overrides = {}
    try:
        model = model_config(str(plain.get("preset", DEFAULT_PRESET)), overrides)
    except ConfigError as err:
        problems += [p if p.startswith("unknown model preset") else _in_model(p) for p in err.problems]
        model = None
    if problems or train is None or model is None:  # None only with problems
        raise ConfigError(problems)
    train = replace(train, model=model)
    return train, train.model


def _in_model(problem: str) -> str:
    """Prefix a model-config problem's field path with `model.`."""
    return problem.replace("`", "`model.", 1) if problem.count("`") >= 2 else f"model: {problem}"
