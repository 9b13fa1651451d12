"""Assembling a Trainer from tokenised pairs and configs (shared by the Ray worker and tests)."""

from __future__ import annotations

from typing import Any, Callable

import torch

from s2s_core.models import build_model
from s2s_core.tokenizer import BOS_ID, Tokenizer
from s2s_core.training.batching import OUR_ROWS, BatchStream, RowLayout, TokenizedPairs, plan_batches, usable_rows
from s2s_core.training.config import TrainConfig
from s2s_core.training.schedule import build_optimizer, build_scheduler
from s2s_core.training.streaming import ShardedStream, ShardSource, StreamLimits
from s2s_core.training.trainer import Trainer


def row_layout(source: Tokenizer, target: Tokenizer, model_config: Any) -> RowLayout:
    """The model rows a run trains on: the tokenizers' templates (ours: `text </s>`; an imported
    model's language codes and EOS) and the model's decoder start token (BOS unless imported)."""
    return RowLayout.of(source, target, getattr(model_config, "decoder_start_id", BOS_ID))


def build_trainer(data: TokenizedPairs | ShardedStream, train: TrainConfig, model_config: Any, device: torch.device,
                  rank: int = 0, world_size: int = 1,
                  wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
                  layout: RowLayout = OUR_ROWS) -> Trainer:
    """Plan the batch stream (over `data` in memory with `layout`, or the given sharded stream,
    which has its own), build the model (seeded: identical on every worker), optimiser and
    scheduler. `wrap` turns the module into its distributed form (e.g. DDP) for the training pass.

    Raises:
        ValueError: the batches start the decoder from another token than the model does.
    """
    stream = data if isinstance(data, ShardedStream) else memory_stream(data, train, layout)
    torch.manual_seed(train.seed)
    module = build_model(model_config).to(device)
    if stream.layout.decoder_start != module.decoder_start_id:
        raise ValueError(f"the batches start the decoder from id {stream.layout.decoder_start} but the model "
                         f"from {module.decoder_start_id}: make the layout with `row_layout`")
    model = wrap(module) if wrap is not None else module
    optimizer = build_optimizer(module, train.optim)
    scheduler = build_scheduler(optimizer, train.schedule, train.max_steps, train.max_minutes * 60)
    return Trainer(model, module, optimizer, scheduler, stream, train, device, rank, world_size)


def memory_stream(pairs: TokenizedPairs, train: TrainConfig, layout: RowLayout = OUR_ROWS) -> BatchStream:
    """The batch stream over pairs held in memory, planned across all of them."""
    rows = usable_rows(pairs, train.batching.max_source_len, train.batching.max_target_len)
    batches = plan_batches(pairs, rows, train.batching.max_tokens, train.seed, layout)
    return BatchStream(pairs, batches, train.seed, layout)


def sharded_stream(source: ShardSource, train: TrainConfig, layout: RowLayout = OUR_ROWS) -> ShardedStream:
    """The batch stream over token-id shards, a window of `batching.window_shards` at a time."""
    batching = train.batching
    limits = StreamLimits(batching.max_tokens, batching.max_source_len, batching.max_target_len)
    return ShardedStream(source, limits, batching.window_shards, train.seed, layout)
