"""Small real training set-ups shared by the trainer tests."""

from __future__ import annotations

from typing import Any

import torch

from s2s_core.training.config import resolve
from s2s_core.training.setup import build_trainer
from s2s_core.training.trainer import Trainer


def tiny_run(vocab: int, **overrides: Any) -> dict:
    """Plain-data run config for transformer-tiny on CPU: small batches, frequent milestones."""
    data = {"preset": "transformer-tiny", "model": {"src_vocab_size": vocab, "tgt_vocab_size": vocab},
            "max_steps": 20, "seed": 3, "log_every": 1,
            "optim": {"lr": 2e-3}, "schedule": {"warmup_steps": 5},
            "batching": {"max_tokens": 800},
            "validation": {"every_steps": 0}, "checkpoint": {"every_steps": 10}}
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        if field:
            data.setdefault(section, {})[field] = value
        else:
            data[key] = value
    return data


def make_trainer(pairs, run: dict) -> Trainer:
    train, model = resolve(run)
    return build_trainer(pairs, train, model, torch.device("cpu"))


def parameters(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trainer.module.named_parameters()}
