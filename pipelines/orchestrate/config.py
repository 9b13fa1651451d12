"""The nightly flow's configuration (deploy/nightly.yaml, overlaid by `key=value` overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from s2s_core.config import at_least, resolve


@dataclass(kw_only=True)
class NightlyConfig:
    drops: str = ""
    """Prefix (local or s3://) where corpus drops arrive; each entry under it is one drop."""
    root: str = ""
    """Where the nightly flow keeps its datasets/, runs/ and models/ (local or s3://)."""
    valid: list[str] = field(default_factory=list)
    """Held-out validation inputs (the same every night, so scores stay comparable)."""
    test: list[str] = field(default_factory=list)
    """Held-out test inputs."""
    prepare_config: str | None = None
    """YAML overlay of the prepare config."""
    prepare_overrides: list[str] = field(default_factory=list)
    """`key=value` prepare overrides, e.g. tokenizer.vocab_size=16000."""
    on_new_data: Literal["retrain", "continue", "skip"] = "retrain"
    """When the drops changed: train a new model on all of them; continue training the promoted
    model on them (its tokenizer is reused; retrain when none is promoted yet); or only prepare."""
    train_config: str | None = None
    """YAML overlay of the training config."""
    train_overrides: list[str] = field(default_factory=list)
    """`key=value` training overrides, e.g. max_steps=20000."""
    workers: int = 1
    """Ray workers for training and for bulk jobs."""
    gpus_per_worker: float = 0.0
    """GPUs per worker; 0 runs on CPU."""
    metric: Literal["bleu", "chrf"] = "bleu"
    """Validation metric that decides promotion."""
    min_improvement: float = 0.0
    """A new model is promoted when it beats the promoted one by more than this."""
    eval_sentences: int = 500
    """Validation pairs both models translate for the promotion decision."""

    def problems(self) -> list[str]:
        missing = [f"`{name}` is required" for name in ("drops", "root") if not getattr(self, name)]
        return missing + at_least(self, 1, "workers", "eval_sentences") + at_least(self, 0, "gpus_per_worker")


def resolve_nightly(config_file: str | None, overrides: list[str]) -> NightlyConfig:
    """Defaults <- YAML file <- overrides, validated together (ConfigError lists every problem)."""
    return resolve(NightlyConfig, config_file, overrides)
