"""The sharded batch stream: every usable pair once per epoch, entered anywhere, a bounded window
of shards in memory, and the trainer's promises (exact resume, workers = accumulation) kept."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from s2s_core.errors import ConfigError
from s2s_core.training.batching import RowLayout, TokenizedPairs
from s2s_core.training.config import resolve
from s2s_core.training.setup import build_trainer, sharded_stream
from s2s_core.training.streaming import ShardedStream, StreamLimits
from s2s_core.training.trainer import Callbacks, fit
from tests.s2s_core.training.common import parameters, tiny_run

LIMITS = StreamLimits(max_tokens=600, max_source_len=40, max_target_len=40)


class MemoryShards:
    """Shards cut from tokenised pairs, counting which are held at once (what storage would read)."""

    def __init__(self, pairs: TokenizedPairs, shards: int) -> None:
        bounds = np.linspace(0, len(pairs), shards + 1).astype(int)
        self.parts = [subset(pairs, range(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]
        self.first_row = bounds[:-1]
        self.loads: list[int] = []

    def shard_count(self) -> int:
        return len(self.parts)

    def lengths(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        return self.parts[shard].src_lengths, self.parts[shard].tgt_lengths

    def pairs(self, shard: int) -> TokenizedPairs:
        self.loads.append(shard)
        return self.parts[shard]


def subset(pairs: TokenizedPairs, rows) -> TokenizedPairs:
    return TokenizedPairs.from_lists([pairs.source(i) for i in rows], [pairs.target(i) for i in rows])


def usable(pairs: TokenizedPairs) -> int:
    src, tgt = pairs.src_lengths, pairs.tgt_lengths
    return int(((src >= 1) & (tgt >= 1) & (src <= LIMITS.max_source_len) & (tgt <= LIMITS.max_target_len)).sum())


def epoch_pairs(stream: ShardedStream, epoch: int) -> Counter:
    """(source, target) token tuples of every batch of one epoch."""
    seen: Counter = Counter()
    n = stream.batches_per_epoch
    for position in range(epoch * n, (epoch + 1) * n):
        batch = stream.batch(position)
        for row in range(batch.src.shape[0]):
            src = batch.src[row][batch.src[row] > 2].tolist()  # drop PAD (0), BOS (1), EOS (2)
            seen[tuple(src)] += 1
    return seen


def test_every_usable_pair_is_seen_once_per_epoch_within_the_budget(real_pairs):
    source = MemoryShards(real_pairs, shards=7)
    stream = ShardedStream(source, LIMITS, window=2, seed=5)
    first, second = epoch_pairs(stream, 0), epoch_pairs(stream, 1)
    assert sum(first.values()) == sum(second.values()) == usable(real_pairs)
    assert first == second  # the same pairs, in another order
    order = [tuple(stream.batch(p).src[0].tolist()) for p in range(stream.batches_per_epoch)]
    again = [tuple(stream.batch(p).src[0].tolist()) for p in range(stream.batches_per_epoch,
                                                                    2 * stream.batches_per_epoch)]
    assert order != again
    for position in range(stream.batches_per_epoch):
        batch = stream.batch(position)
        assert batch.src.shape[0] * max(batch.src.shape[1], batch.target.shape[1]) <= LIMITS.max_tokens


def test_the_stream_is_entered_anywhere_with_the_same_batches(real_pairs):
    walked = ShardedStream(MemoryShards(real_pairs, 5), LIMITS, window=2, seed=9)
    positions = list(range(2 * walked.batches_per_epoch))
    expected = {p: walked.batch(p).src.tolist() for p in positions}
    for start in (0, 3, walked.batches_per_epoch - 1, walked.batches_per_epoch + 4):
        fresh = ShardedStream(MemoryShards(real_pairs, 5), LIMITS, window=2, seed=9)
        assert fresh.batch(start).src.tolist() == expected[start]
        assert fresh.target_tokens(start) == int((fresh.batch(start).target != 0).sum())


def test_at_most_two_windows_of_shards_are_held(real_pairs):
    source = MemoryShards(real_pairs, shards=8)
    stream = ShardedStream(source, LIMITS, window=2, seed=1)
    for position in range(stream.batches_per_epoch):
        stream.batch(position)
        held = {shard for window in stream._windows.values() for shard in window.pairs}
        assert len(held) <= 4
    assert len(source.loads) == 8  # each shard read once in the epoch: the windows go in order


def test_a_window_must_hold_a_shard_and_a_split_needs_a_usable_pair(real_pairs):
    with pytest.raises(ValueError, match="at least one shard"):
        ShardedStream(MemoryShards(real_pairs, 2), LIMITS, window=0, seed=1)
    too_short = StreamLimits(max_tokens=600, max_source_len=0, max_target_len=0)
    with pytest.raises(ConfigError, match=r"no training batches: .* `batching\.max_source_len`"):
        ShardedStream(MemoryShards(real_pairs, 2), too_short, window=1, seed=1)


def streamed_trainer(pairs: TokenizedPairs, run: dict, rank: int = 0, world: int = 1):
    train, model = resolve(run)
    return build_trainer(sharded_stream(MemoryShards(pairs, 6), train), train, model, torch.device("cpu"), rank, world)


def test_a_resumed_streamed_run_repeats_an_uninterrupted_one(real_pairs, tokenizer, tokenizer_dir, tmp_path):
    run = tiny_run(tokenizer.vocab_size, max_steps=12, **{"batching.window_shards": 2})
    straight = streamed_trainer(real_pairs, run)
    fit(straight, None, tokenizer, Callbacks())
    first = streamed_trainer(real_pairs, run)

    def checkpoint_then_die(trainer, final):
        trainer.save(tmp_path / "ckpt", run, tokenizer_dir)
        raise KeyboardInterrupt

    first.config.checkpoint.every_steps = 5
    with pytest.raises(KeyboardInterrupt):
        fit(first, None, tokenizer, Callbacks(on_checkpoint=checkpoint_then_die))
    resumed = streamed_trainer(real_pairs, run)
    resumed.resume_from(tmp_path / "ckpt")
    assert resumed.state.step == 5
    fit(resumed, None, tokenizer, Callbacks())
    assert [r["loss"] for r in resumed.history.train] == [r["loss"] for r in straight.history.train]
    for name, value in parameters(straight).items():
        torch.testing.assert_close(parameters(resumed)[name], value, rtol=0, atol=0)


def test_a_layout_shapes_the_streamed_rows_and_the_trainer_refuses_another_start(real_pairs, tokenizer):
    layout = RowLayout(target_prefix=(7,), decoder_start=0)
    stream = ShardedStream(MemoryShards(real_pairs, 3), LIMITS, window=2, seed=1, layout=layout)
    for position in range(5):
        batch = stream.batch(position)
        assert (batch.target[:, 0] == 7).all() and (batch.prev[:, 0] == 0).all()
        assert stream.target_tokens(position) == batch.target_tokens
    train, model = resolve(tiny_run(tokenizer.vocab_size))  # our Transformer starts from BOS
    with pytest.raises(ValueError, match="start the decoder from id 0 but the model from 2"):
        build_trainer(stream, train, model, torch.device("cpu"))
