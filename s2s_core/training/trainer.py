"""The training step and loop, independent of how workers are launched.

One optimiser step consumes W*A global micro-batches (W workers, A accumulation steps);
worker r takes positions p+r, p+W+r, ... of the global `BatchStream`. The loss of each
micro-batch is divided by the target-token count of the whole global step (every worker can
compute it, since all plan the same batches), times W because DDP averages gradients: the
update is then exactly the token-mean gradient of the global batch, for any W and A. Dropout
is seeded per global micro-batch, so 1 worker x 2 accumulation steps and 2 workers x 1 make
the same updates, and a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from s2s_core.tokenizer import PAD_ID, Tokenizer
from s2s_core.training.batching import BatchStream
from s2s_core.training.checkpoint import TrainerState, load_checkpoint, save_checkpoint
from s2s_core.training.config import TrainConfig
from s2s_core.training.loss import label_smoothed_nll
from s2s_core.training.metrics import History
from s2s_core.training.streaming import ShardedStream
from s2s_core.training.validation import ValidationSet, improved, validate


@dataclass
class Callbacks:
    """What the launcher does at the loop's milestones (rank 0 does the I/O, all ranks are called)."""

    on_log: Callable[["Trainer", dict], None] = lambda trainer, record: None
    on_best: Callable[["Trainer"], None] = lambda trainer: None
    on_checkpoint: Callable[["Trainer", bool], None] = lambda trainer, final: None


class Trainer:
    """Owns model, optimiser, scheduler, data stream and counters of one worker."""

    def __init__(self, model: torch.nn.Module, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler, stream: BatchStream | ShardedStream, config: TrainConfig, device: torch.device,
                 rank: int = 0, world_size: int = 1) -> None:
        self.model = model  # possibly DDP-wrapped: used for the training forward/backward
        self.module = module  # the bare model: validation, checkpoints
        self.optimizer, self.scheduler, self.stream = optimizer, scheduler, stream
        self.config, self.device = config, device
        self.rank, self.world_size = rank, world_size
        self.state = TrainerState(world_size=world_size)
        self.history = History()

    @property
    def micro_batches_per_step(self) -> int:
        return self.world_size * self.config.optim.accumulation

    def done(self) -> bool:
        epochs_done = self.config.max_epochs and self.state.epoch >= self.config.max_epochs
        out_of_time = self.config.max_minutes and self.state.wall_seconds >= self.config.max_minutes * 60
        return self.state.step >= self.config.max_steps or bool(epochs_done) or bool(out_of_time) or self.stopped_early

    @property
    def stopped_early(self) -> bool:
        patience = self.config.validation.patience
        return bool(patience) and self.state.bad_validations >= patience

    def save(self, directory: Path, run_config: dict, tokenizer_dir: Path) -> None:
        """Write a checkpoint (with the history so far under `metrics/`) into local `directory`."""
        self.history.write(directory / "metrics")
        save_checkpoint(directory, self.module, self.optimizer, self.scheduler, self.state, run_config, tokenizer_dir)

    def resume_from(self, directory: Path) -> None:
        """Continue from a checkpoint written by `save`: weights, optimiser, scheduler, RNG,
        counters and history (any worker count: positions are global)."""
        self.state = load_checkpoint(directory, self.module, self.optimizer, self.scheduler)
        self.state.world_size = self.world_size
        history = History.read(directory / "metrics")
        self.history = History(train=[r for r in history.train if r["step"] <= self.state.step],
                               valid=[r for r in history.valid if r["step"] <= self.state.step])

    def train_step(self) -> dict:
        """One optimiser step over this worker's micro-batches; returns global step statistics."""
        start = time.perf_counter()
        lr = self.scheduler.set(self.state.step, self.state.wall_seconds)
        positions = range(self.state.position, self.state.position + self.micro_batches_per_step)
        mine = positions[self.rank::self.world_size]
        total_target = sum(self.stream.target_tokens(p) for p in positions)
        self.model.train()
        stats = torch.zeros(6, dtype=torch.float64)  # loss, nll, target, source, padded tokens, seconds
        no_sync = getattr(self.model, "no_sync", None)  # DDP's: skip the gradient all-reduce
        for i, position in enumerate(mine):
            sync = i == len(mine) - 1
            with no_sync() if (not sync and no_sync is not None) else contextlib.nullcontext():
                stats[:5] += self._micro_step(position, total_target)
        grad_norm = self._update()
        stats[5] = time.perf_counter() - start
        stats = self._all_reduce(stats)
        # The mean step time over workers: the same number on every rank, so a time budget
        # (`max_minutes`) stops them all at the same step.
        return self._advance(stats[:5], grad_norm, float(stats[5]) / self.world_size, lr)

    def _micro_step(self, position: int, total_target: int) -> torch.Tensor:
        batch = self.stream.batch(position).to(self.device)
        torch.manual_seed(self.config.seed * 1_000_003 + position)  # dropout masks depend on the data only
        mask = batch.target != PAD_ID  # (B, T)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            logits = self.model(batch.src, batch.prev, output_mask=mask)  # (N, V)
        loss, nll = label_smoothed_nll(logits, batch.target[mask], self.config.optim.label_smoothing)
        (loss * (self.world_size / total_target)).backward()
        return torch.tensor([loss.item(), nll.item(), batch.target_tokens, batch.source_tokens,
                             batch.padded_tokens], dtype=torch.float64)

    def _update(self) -> float:
        clip = self.config.optim.clip_norm or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm)

    def _all_reduce(self, stats: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(stats)
        return stats

    def _advance(self, stats: torch.Tensor, grad_norm: float, seconds: float, lr: float) -> dict:
        loss, nll, target, source, padded = stats.tolist()
        self.state.step += 1
        self.state.position += self.micro_batches_per_step
        self.state.epoch = self.stream.epoch_of(self.state.position)
        self.state.tokens_seen += int(target + source)
        self.state.wall_seconds += seconds
        return {"step": self.state.step, "epoch": self.state.epoch, "loss": loss / target, "nll": nll / target,
                "lr": lr, "grad_norm": grad_norm,
                "tokens_per_s": (target + source) / seconds, "padding": 1 - (target + source) / padded,
                "tokens_seen": self.state.tokens_seen, "seconds_per_step": seconds}

    def run_validation(self, data: ValidationSet, tokenizer: Tokenizer) -> tuple[dict, bool]:
        """Validate on rank 0 and share the scores; returns (scores, improved the best)."""
        scores: dict[str, float] = {}  # other ranks receive rank 0's below
        if self.rank == 0:
            cfg = self.config
            scores = validate(self.module, data, cfg.validation, tokenizer, cfg.optim.label_smoothing,
                              cfg.batching.max_tokens, self.device)
            scores["step"] = self.state.step
        if self.world_size > 1:
            box = [scores]
            dist.broadcast_object_list(box, src=0)
            scores = box[0]
        metric = self.config.validation.metric
        score = scores["valid_loss" if metric == "loss" else metric]
        better = improved(metric, score, self.state.best_score)
        if better:
            self.state.best_score, self.state.best_step, self.state.bad_validations = score, self.state.step, 0
            self.state.best_scores = {k: v for k, v in scores.items() if k != "step"}
        else:
            self.state.bad_validations += 1
        self.history.valid.append(scores)
        return scores, better


def fit(trainer: Trainer, valid: ValidationSet | None, tokenizer: Tokenizer, callbacks: Callbacks) -> None:
    """Step until max_steps / max_epochs / early stopping, validating and checkpointing on schedule.

    With several workers every rank must pass the same `valid` (or None everywhere): validation
    and checkpoints are collective, and a rank that skipped one would leave the others waiting.
    """
    cfg = trainer.config
    while not trainer.done():
        record = trainer.train_step()
        step = trainer.state.step
        if step % cfg.log_every == 0 or trainer.done():
            trainer.history.train.append(record)
            callbacks.on_log(trainer, record)
        every = cfg.validation.every_steps
        if valid is not None and every and (step % every == 0 or trainer.done()):
            _, better = trainer.run_validation(valid, tokenizer)
            if better:
                callbacks.on_best(trainer)
        if step % cfg.checkpoint.every_steps == 0 or trainer.done():
            callbacks.on_checkpoint(trainer, trainer.done())
