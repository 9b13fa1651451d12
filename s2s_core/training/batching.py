"""Token-budget batches from length-sorted buckets, and a world-size independent batch stream.

Tokenised pairs are kept as two flat int32 arrays with offsets (a few bytes per token, not a
Python list per sentence). Batches are planned once: pairs sorted by (source, target) length
with a seeded tie-break, then cut greedily so that rows x max(padded source, padded target
length) stays within the budget. That keeps padding to a few percent. Each epoch visits the
same batches in a new seeded order.

A pair's ids are its text's tokens only; a `RowLayout` says what each side's model row adds
around them (our EOS; an imported model's language codes and EOS) and which token the decoder
starts from (our BOS; Marian's PAD, BART's and NLLB's EOS, mBART-25's target language code), so
that training feeds a model exactly the rows its tokenizer and `generate` make.

The stream is global: micro-batch g of the run is the same whatever the number of workers.
Worker r of W takes micro-batches r, r+W, r+2W... so W workers with A accumulation steps see
exactly the batches one worker sees with W*A accumulation steps (as fairseq shards its
iterator). The data position in a checkpoint is just g.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from s2s_core.errors import ConfigError
from s2s_core.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer

NO_USABLE_PAIRS = ("no training batches: no train pair is non-empty on both sides and within "
                   "`batching.max_source_len`/`max_target_len` (raise them, or check the dataset)")


@dataclass(frozen=True)
class RowLayout:
    """How a pair's text ids become model rows: `source_prefix + ids + source_suffix` on the
    source side; on the target side the labels `target_prefix + ids + target_suffix` and the
    decoder input `decoder_start` + labels[:-1] (teacher forcing). The default is ours."""

    source_prefix: tuple[int, ...] = ()
    """Ids a source row starts with (a language code)."""
    source_suffix: tuple[int, ...] = (EOS_ID,)
    """Ids a source row ends with (EOS, then a language code for some families)."""
    target_prefix: tuple[int, ...] = ()
    """Ids the labels start with: what generation forces first (a target language code, BART's <s>)."""
    target_suffix: tuple[int, ...] = (EOS_ID,)
    """Ids the labels end with."""
    decoder_start: int = BOS_ID
    """The decoder's first input: the model's `decoder_start_id`."""

    @classmethod
    def of(cls, source: Tokenizer, target: Tokenizer, decoder_start: int) -> "RowLayout":
        """The rows the tokenizers' templates make (`Tokenizer.row`), for a model starting from `decoder_start`."""
        return cls(tuple(source.prefix), tuple(source.suffix), tuple(target.prefix), tuple(target.suffix),
                   int(decoder_start))

    @property
    def source_extra(self) -> int:
        """Ids a source row has beyond its text's."""
        return len(self.source_prefix) + len(self.source_suffix)

    @property
    def target_extra(self) -> int:
        """Ids the labels have beyond the text's."""
        return len(self.target_prefix) + len(self.target_suffix)


OUR_ROWS = RowLayout()
"""Rows of the models we train: `text </s>` on both sides, the decoder starting from BOS."""


@dataclass
class TokenizedPairs:
    """Ragged token ids of N pairs: each text's ids only (no BOS/EOS/language codes: a
    `RowLayout` adds them). `*_offsets` has N+1 entries."""

    src_ids: np.ndarray
    src_offsets: np.ndarray
    tgt_ids: np.ndarray
    tgt_offsets: np.ndarray

    @classmethod
    def from_lists(cls, sources: Iterable[Sequence[int]], targets: Iterable[Sequence[int]]) -> "TokenizedPairs":
        src_ids, src_offsets = _flatten(sources)
        tgt_ids, tgt_offsets = _flatten(targets)
        if len(src_offsets) != len(tgt_offsets):
            raise ValueError(f"{len(src_offsets) - 1} sources but {len(tgt_offsets) - 1} targets")
        return cls(src_ids, src_offsets, tgt_ids, tgt_offsets)

    @classmethod
    def concat(cls, parts: Sequence["TokenizedPairs"]) -> "TokenizedPairs":
        if not parts:
            return cls.from_lists([], [])
        return cls(*_concat_ragged([(p.src_ids, p.src_offsets) for p in parts]),
                   *_concat_ragged([(p.tgt_ids, p.tgt_offsets) for p in parts]))

    def __len__(self) -> int:
        return len(self.src_offsets) - 1

    @property
    def src_lengths(self) -> np.ndarray:
        return np.diff(self.src_offsets)

    @property
    def tgt_lengths(self) -> np.ndarray:
        return np.diff(self.tgt_offsets)

    def source(self, i: int) -> np.ndarray:
        return self.src_ids[self.src_offsets[i]:self.src_offsets[i + 1]]

    def target(self, i: int) -> np.ndarray:
        return self.tgt_ids[self.tgt_offsets[i]:self.tgt_offsets[i + 1]]


def _flatten(seqs: Iterable[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths, chunks = [0], []
    for seq in seqs:
        lengths.append(len(seq))
        chunks.append(np.asarray(seq, dtype=np.int32))
    ids = np.concatenate(chunks) if chunks else np.zeros(0, np.int32)
    return ids, np.cumsum(lengths, dtype=np.int64)


def _concat_ragged(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.concatenate([p[0] for p in parts])
    bases = np.cumsum([0] + [len(p[0]) for p in parts[:-1]])
    offsets = np.concatenate([parts[0][1][:1]] + [p[1][1:] + base for p, base in zip(parts, bases)])
    return ids, offsets


@dataclass
class Batch:
    """One micro-batch, padded with PAD_ID on the right (the loss skips PAD_ID targets).

    src: (B, S) source rows (ours: ids + EOS). target: (B, T) labels, what the decoder must
    predict (ours: ids + EOS). prev: (B, T) the decoder input: the start token, then the labels
    shifted right by one (ours: BOS + ids). See `RowLayout`.
    """

    src: torch.Tensor
    prev: torch.Tensor
    target: torch.Tensor

    @property
    def target_tokens(self) -> int:
        return int((self.target != PAD_ID).sum())

    @property
    def source_tokens(self) -> int:
        return int((self.src != PAD_ID).sum())

    @property
    def padded_tokens(self) -> int:
        return self.src.numel() + self.target.numel()

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.src.to(device, non_blocking=True), self.prev.to(device, non_blocking=True),
                     self.target.to(device, non_blocking=True))


def make_batch(pairs: TokenizedPairs, rows: Sequence[int] | np.ndarray, layout: RowLayout = OUR_ROWS) -> Batch:
    """Pad the pairs `rows` into a Batch of the model rows `layout` makes (ours: source gets
    EOS; target gets BOS in, EOS out)."""
    rows = np.asarray(rows, dtype=np.int64)
    src = _padded_rows(pairs.src_ids, pairs.src_offsets, rows, layout.source_prefix, layout.source_suffix)  # (B, S)
    target = _padded_rows(pairs.tgt_ids, pairs.tgt_offsets, rows, layout.target_prefix, layout.target_suffix)  # (B, T)
    prev = np.empty_like(target)  # (B, T): teacher forcing, the labels shifted right behind the start token
    prev[:, 0], prev[:, 1:] = layout.decoder_start, target[:, :-1]
    prev[target == PAD_ID] = PAD_ID  # past a row's end (labels are never PAD)
    return Batch(torch.from_numpy(src), torch.from_numpy(prev), torch.from_numpy(target))


def _padded_rows(ids: np.ndarray, offsets: np.ndarray, rows: np.ndarray, prefix: tuple[int, ...],
                 suffix: tuple[int, ...]) -> np.ndarray:
    """Rows `prefix + text + suffix` of the texts `rows` (flat ids (N_ids,), offsets (N+1,)),
    right-padded with PAD_ID: (B, len(prefix) + longest text + len(suffix))."""
    starts, lengths = offsets[rows], offsets[rows + 1] - offsets[rows]  # (B,), (B,)
    longest = int(lengths.max(initial=0))
    out = np.full((len(rows), longest + len(prefix) + len(suffix)), PAD_ID, dtype=np.int64)
    if longest:
        columns = np.arange(longest)  # (L,)
        inside = columns[None, :] < lengths[:, None]  # (B, L)
        text = ids[np.minimum(starts[:, None] + columns[None, :], len(ids) - 1)]  # (B, L), clamped at the end
        out[:, len(prefix):len(prefix) + longest] = np.where(inside, text, PAD_ID)
    out[:, :len(prefix)] = prefix
    for k, token in enumerate(suffix):
        out[np.arange(len(rows)), lengths + len(prefix) + k] = token
    return out


def usable_rows(pairs: TokenizedPairs, max_source_len: int, max_target_len: int) -> np.ndarray:
    """Indices of pairs within the length limits (non-empty on both sides)."""
    src, tgt = pairs.src_lengths, pairs.tgt_lengths
    return np.flatnonzero((src >= 1) & (tgt >= 1) & (src <= max_source_len) & (tgt <= max_target_len))


def plan_batches(pairs: TokenizedPairs, rows: np.ndarray, max_tokens: int, seed: int,
                 layout: RowLayout = OUR_ROWS) -> list[np.ndarray]:
    """Cut `rows` into length-sorted batches within the token budget.

    Budget: len(batch) * max(longest source, longest target) <= max_tokens, lengths counting
    the tokens `layout` adds to each side (ours: EOS / BOS). Ties in length are broken by a
    seeded shuffle so equal-length pairs from different shards mix.
    """
    src_len = pairs.src_lengths[rows] + layout.source_extra
    tgt_len = pairs.tgt_lengths[rows] + layout.target_extra
    tie_break = np.random.default_rng(seed).permutation(len(rows))
    sorting = np.lexsort((tie_break, tgt_len, src_len))
    order = rows[sorting]
    batches, start, longest = [], 0, 0
    cost = np.maximum(src_len[sorting], tgt_len[sorting])
    for end in range(len(order)):
        longest_with = max(longest, int(cost[end]))
        if (end - start + 1) * longest_with > max_tokens and end > start:
            batches.append(order[start:end])
            start, longest_with = end, int(cost[end])
        longest = longest_with
    if start < len(order):
        batches.append(order[start:])
    return batches


class BatchStream:
    """The run's global sequence of micro-batches: epoch e visits all batches in a seeded order.

    Micro-batch g is batch `order(g // N)[g % N]` for N batches per epoch, so the stream can be
    entered at any position (resume) and split among workers by striding.
    """

    def __init__(self, pairs: TokenizedPairs, batches: list[np.ndarray], seed: int,
                 layout: RowLayout = OUR_ROWS) -> None:
        if not batches:
            raise ConfigError([NO_USABLE_PAIRS])
        self.pairs, self.batches, self.seed, self.layout = pairs, batches, seed, layout
        self._orders: dict[int, np.ndarray] = {}

    @property
    def batches_per_epoch(self) -> int:
        return len(self.batches)

    def epoch_of(self, position: int) -> int:
        return position // len(self.batches)

    def rows(self, position: int) -> np.ndarray:
        """Pair indices of global micro-batch `position`."""
        epoch, index = divmod(position, len(self.batches))
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.batches))}
        return self.batches[self._orders[epoch][index]]

    def batch(self, position: int) -> Batch:
        return make_batch(self.pairs, self.rows(position), self.layout)

    def target_tokens(self, position: int) -> int:
        """Label tokens (EOS included) of micro-batch `position`: what the loss is normalised by."""
        rows = self.rows(position)
        return int(self.pairs.tgt_lengths[rows].sum()) + len(rows) * self.layout.target_extra


def padding_fraction(batches: Iterable[Batch]) -> float:
    """Share of padded positions (source + target) that are padding."""
    real = padded = 0
    for batch in batches:
        real += batch.source_tokens + batch.target_tokens
        padded += batch.padded_tokens
    return 1 - real / padded if padded else 0.0
