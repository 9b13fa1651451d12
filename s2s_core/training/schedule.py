"""Optimiser and learning-rate schedules (linear warm-up, then inverse square root, cosine or
linear decay, or constant)."""

from __future__ import annotations

import math
from typing import Callable

import torch

from s2s_core.training.config import OptimConfig, ScheduleConfig


def build_optimizer(model: torch.nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, norms or embeddings' 1-d params)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.betas[0], config.betas[1]), eps=config.eps)


def lr_factor(config: ScheduleConfig, max_steps: int, max_seconds: float = 0.0) -> Callable[..., float]:
    """`factor(step, seconds=0.0)`: the multiplier of the peak learning rate for the step about to
    run (0-based), after `seconds` of training steps.

    Cosine and linear decay to `min_lr_ratio` at the end of training: `max_steps`, or with a time
    budget (`max_seconds`, from `max_minutes`) the step the run reaches when its budget is spent,
    projected from the speed so far, if that comes first. So a run of an hour spends its whole
    schedule in that hour, whatever the machine's speed; the projection is the same on every
    worker, since the step times it reads are averaged over them.
    """
    warmup = config.warmup_steps

    def last_step(step: int, seconds: float) -> float:
        if not max_seconds or seconds <= 0:
            return max_steps
        return min(max_steps, step * max_seconds / seconds)

    def factor(step: int, seconds: float = 0.0) -> float:
        done = step  # steps already taken: the projection's speed
        step += 1  # the first update uses a non-zero rate
        if warmup and step <= warmup:
            return step / warmup
        if config.kind == "inverse_sqrt":
            return math.sqrt(max(warmup, 1) / step)
        if config.kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1.0, last_step(done, seconds) - warmup))
        remaining = 0.5 * (1 + math.cos(math.pi * progress)) if config.kind == "cosine" else 1 - progress
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * remaining

    return factor


class LearningRateSchedule:
    """Sets every parameter group's learning rate to its peak x `lr_factor` before each step.

    The rate is a function of the trainer's counters (step, seconds), which checkpoints keep:
    it holds no state of its own, and `state_dict` is empty (older checkpoints stored a
    LambdaLR's counter there, which `load_state_dict` ignores for the same reason)."""

    def __init__(self, optimizer: torch.optim.Optimizer, factor: Callable[..., float]) -> None:
        self.optimizer, self.factor = optimizer, factor
        self.peaks = [group["lr"] for group in optimizer.param_groups]
        self.set(0, 0.0)

    def set(self, step: int, seconds: float) -> float:
        """Apply the rate of `step` (0-based, about to run) and return it (of the first group)."""
        scale = self.factor(step, seconds)
        for group, peak in zip(self.optimizer.param_groups, self.peaks):
            group["lr"] = peak * scale
        return self.peaks[0] * scale

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def build_scheduler(optimizer: torch.optim.Optimizer, config: ScheduleConfig, max_steps: int,
                    max_seconds: float = 0.0) -> LearningRateSchedule:
    return LearningRateSchedule(optimizer, lr_factor(config, max_steps, max_seconds))
