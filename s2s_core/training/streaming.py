"""A global batch stream over token-id shards that holds a bounded window of shards in memory.

The in-memory `BatchStream` plans batches over the whole train split, so every worker holds
all of it. Here the split stays in its shards (written once by `prepare`):

- each shard's batches are planned from its length columns alone (length-sorted, seeded ties,
  token budget), so the stream knows every shard's batch count without loading token ids;
- epoch e visits the shards in a seeded order, `window` shards at a time; the batches of one
  window are shuffled together (seeded by epoch and window), so consecutive steps mix shards;
- only the token ids of the window in use (and the next one, when a step straddles two) are
  in memory: memory depends on the window, not on the corpus.

It keeps the promises of `BatchStream`: micro-batch g is the same whatever the number of
workers (worker r takes g = r, r+W, ...), and the stream can be entered at any position, so a
resumed run repeats an uninterrupted one. What changes is which pairs share a batch: lengths are
sorted within a shard instead of across the split (padding stays low for shards of thousands of
pairs), and pairs of different windows never share a batch.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from s2s_core.errors import ConfigError
from s2s_core.training.batching import (
    NO_USABLE_PAIRS,
    OUR_ROWS,
    Batch,
    RowLayout,
    TokenizedPairs,
    make_batch,
    plan_batches,
)


class ShardSource(Protocol):
    """Where the stream's shards come from (the Ray adapter reads them from storage)."""

    def shard_count(self) -> int:
        """How many shards the split has."""
        ...

    def lengths(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        """(source lengths, target lengths) of the shard's pairs, in tokens without BOS/EOS: (N,), (N,)."""
        ...

    def pairs(self, shard: int) -> TokenizedPairs:
        """The shard's token ids (checked by the source: checksum, vocabulary)."""
        ...


@dataclass(frozen=True)
class StreamLimits:
    """What a batch may hold: the token budget and the longest pair kept (tokens)."""

    max_tokens: int
    max_source_len: int
    max_target_len: int


def plan_shard(src_len: np.ndarray, tgt_len: np.ndarray, limits: StreamLimits, seed: int,
               layout: RowLayout = OUR_ROWS) -> list[np.ndarray]:
    """The shard's batches as arrays of row indices within it: (N,), (N,) text lengths -> [(B_i,)];
    the budget counts the tokens `layout` adds to each row.

    Pairs that are empty on a side or longer than the limits are left out."""
    usable = np.flatnonzero((src_len >= 1) & (tgt_len >= 1) & (src_len <= limits.max_source_len)
                            & (tgt_len <= limits.max_target_len))
    lengths = TokenizedPairs(np.zeros(0, np.int32), np.concatenate([[0], np.cumsum(src_len)]),
                             np.zeros(0, np.int32), np.concatenate([[0], np.cumsum(tgt_len)]))
    return plan_batches(lengths, usable, limits.max_tokens, seed, layout)


class ShardedStream:
    """The run's global micro-batch sequence over `source`'s shards (see the module docstring);
    `layout` makes the model rows of each pair (`RowLayout`)."""

    def __init__(self, source: ShardSource, limits: StreamLimits, window: int, seed: int,
                 layout: RowLayout = OUR_ROWS) -> None:
        if window < 1:
            raise ValueError(f"the window must hold at least one shard, but is {window}")
        self.source, self.limits, self.window, self.seed = source, limits, window, seed
        self.layout = layout
        self.shards = source.shard_count()
        # Batch counts need lengths only: the shard's ids are read when its window is used.
        self.counts = [len(self._plan(shard)) for shard in range(self.shards)]
        if not sum(self.counts):
            raise ConfigError([NO_USABLE_PAIRS])
        self._windows: OrderedDict[tuple[int, int], _Window] = OrderedDict()

    @property
    def batches_per_epoch(self) -> int:
        return sum(self.counts)

    def epoch_of(self, position: int) -> int:
        return position // self.batches_per_epoch

    def batch(self, position: int) -> Batch:
        window, index = self._locate(position)
        shard, rows = window.batches[index]
        return make_batch(window.pairs[shard], rows, self.layout)

    def target_tokens(self, position: int) -> int:
        """Label tokens (EOS included) of micro-batch `position`: what the loss is normalised by."""
        window, index = self._locate(position)
        shard, rows = window.batches[index]
        return int(window.pairs[shard].tgt_lengths[rows].sum()) + len(rows) * self.layout.target_extra

    def shard_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.shards)

    def _plan(self, shard: int) -> list[np.ndarray]:
        src_len, tgt_len = self.source.lengths(shard)
        return plan_shard(src_len, tgt_len, self.limits, self.seed + shard, self.layout)

    def _locate(self, position: int) -> tuple[_Window, int]:
        """The window holding micro-batch `position`, and the batch's index in it."""
        epoch, offset = divmod(position, self.batches_per_epoch)
        order = self.shard_order(epoch)
        groups = [order[i:i + self.window] for i in range(0, self.shards, self.window)]
        ends = np.cumsum([sum(self.counts[s] for s in group) for group in groups]).tolist()
        number = bisect.bisect_right(ends, offset)
        start = ends[number - 1] if number else 0
        return self._window(epoch, number, groups[number]), offset - start

    def _window(self, epoch: int, number: int, shards: np.ndarray) -> _Window:
        key = (epoch, number)
        if key not in self._windows:
            self._windows[key] = _Window.load(self, epoch, number, shards)
            while len(self._windows) > 2:  # the window in use and the next one: a step may straddle them
                self._windows.popitem(last=False)
        return self._windows[key]


@dataclass
class _Window:
    """The token ids of a few shards and their batches, in the window's seeded order."""

    pairs: dict[int, TokenizedPairs]
    batches: list[tuple[int, np.ndarray]]
    """(shard, row indices in it) per batch."""

    @classmethod
    def load(cls, stream: ShardedStream, epoch: int, number: int, shards: np.ndarray) -> _Window:
        batches = [(int(shard), rows) for shard in shards for rows in stream._plan(int(shard))]
        order = np.random.default_rng([stream.seed, epoch, number, 1]).permutation(len(batches))
        return cls({int(shard): stream.source.pairs(int(shard)) for shard in shards},
                   [batches[i] for i in order])
