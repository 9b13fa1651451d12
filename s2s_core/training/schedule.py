"""Optimiser and learning-rate schedules (linear warm-up, then inverse square root or cosine)."""

from __future__ import annotations

import math
from typing import Callable

import torch

from s2s_core.training.config import OptimConfig, ScheduleConfig


def build_optimizer(model: torch.nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, norms or embeddings' 1-d params)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), eps=config.eps)


def lr_factor(config: ScheduleConfig, max_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at a given step (0-based, the step about to run)."""
    warmup = config.warmup_steps

    def factor(step: int) -> float:
        step += 1  # the first update uses a non-zero rate
        if warmup and step <= warmup:
            return step / warmup
        if config.kind == "inverse_sqrt":
            return math.sqrt(max(warmup, 1) / step)
        if config.kind == "cosine":
            progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
            cosine = 0.5 * (1 + math.cos(math.pi * progress))
            return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine
        return 1.0

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, config: ScheduleConfig,
                    max_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, max_steps))
