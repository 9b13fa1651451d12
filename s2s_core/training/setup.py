"""Assembling a Trainer from tokenised pairs and configs (shared by the Ray worker and tests)."""

from __future__ import annotations

from typing import Any, Callable

import torch

from s2s_core.models import build_model
from s2s_core.training.batching import BatchStream, TokenizedPairs, plan_batches, usable_rows
from s2s_core.training.config import TrainConfig
from s2s_core.training.schedule import build_optimizer, build_scheduler
from s2s_core.training.streaming import ShardedStream, ShardSource, StreamLimits
from s2s_core.training.trainer import Trainer


def build_trainer(data: TokenizedPairs | ShardedStream, train: TrainConfig, model_config: Any, device: torch.device,
                  rank: int = 0, world_size: int = 1,
                  wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None) -> Trainer:
    """Plan the batch stream (over `data` in memory, or the given sharded stream), build the
    model (seeded: identical on every worker), optimiser and scheduler. `wrap` turns the module
    into its distributed form (e.g. DDP) for the training pass."""
    stream = data if isinstance(data, ShardedStream) else memory_stream(data, train)
    torch.manual_seed(train.seed)
    module = build_model(model_config).to(device)
    model = wrap(module) if wrap is not None else module
    optimizer = build_optimizer(module, train.optim)
    scheduler = build_scheduler(optimizer, train.schedule, train.max_steps, train.max_minutes * 60)
    return Trainer(model, module, optimizer, scheduler, stream, train, device, rank, world_size)


def memory_stream(pairs: TokenizedPairs, train: TrainConfig) -> BatchStream:
    """The batch stream over pairs held in memory, planned across all of them."""
    rows = usable_rows(pairs, train.batching.max_source_len, train.batching.max_target_len)
    return BatchStream(pairs, plan_batches(pairs, rows, train.batching.max_tokens, train.seed), train.seed)


def sharded_stream(source: ShardSource, train: TrainConfig) -> ShardedStream:
    """The batch stream over token-id shards, a window of `batching.window_shards` at a time."""
    batching = train.batching
    limits = StreamLimits(batching.max_tokens, batching.max_source_len, batching.max_target_len)
    return ShardedStream(source, limits, batching.window_shards, train.seed)
