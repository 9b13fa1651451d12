"""Token-budget batching, the global batch stream, the loss and the schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from s2s_core.tokenizer import BOS_ID, EOS_ID, PAD_ID
from s2s_core.training.batching import (
    OUR_ROWS,
    BatchStream,
    RowLayout,
    TokenizedPairs,
    make_batch,
    padding_fraction,
    plan_batches,
    usable_rows,
)
from s2s_core.training.config import ScheduleConfig
from s2s_core.training.loss import label_smoothed_nll
from s2s_core.training.schedule import lr_factor


def test_batches_keep_the_budget_and_cover_every_usable_row_once(real_pairs):
    rows = usable_rows(real_pairs, 64, 64)
    batches = plan_batches(real_pairs, rows, max_tokens=300, seed=3)
    for batch_rows in batches:
        longest = max(max(len(real_pairs.source(i)), len(real_pairs.target(i))) + 1 for i in batch_rows)
        assert len(batch_rows) == 1 or len(batch_rows) * longest <= 300
    assert sorted(np.concatenate(batches).tolist()) == sorted(rows.tolist())


def test_length_buckets_pad_far_less_than_random_batches(real_pairs):
    rows = usable_rows(real_pairs, 256, 256)
    bucketed = plan_batches(real_pairs, rows, max_tokens=400, seed=1)
    shuffled = np.random.default_rng(0).permutation(rows)
    sizes = np.cumsum([len(b) for b in bucketed])[:-1]
    random_batches = np.split(shuffled, sizes)  # same batch sizes, random members
    ours = padding_fraction(make_batch(real_pairs, b) for b in bucketed)
    theirs = padding_fraction(make_batch(real_pairs, b) for b in random_batches)
    print(f"padding: length buckets {ours:.1%}, random batches {theirs:.1%}")
    assert ours < 0.15 and theirs > 2 * ours


def test_rows_over_the_length_limits_are_left_out(real_pairs):
    rows = usable_rows(real_pairs, 10, 12)
    assert len(rows) < len(real_pairs)
    assert (real_pairs.src_lengths[rows] <= 10).all() and (real_pairs.tgt_lengths[rows] <= 12).all()


def test_make_batch_adds_eos_to_source_and_shifts_the_target():
    pairs = TokenizedPairs.from_lists([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]])
    batch = make_batch(pairs, [0, 1])
    assert batch.src.tolist() == [[5, 6, 7, EOS_ID], [8, EOS_ID, PAD_ID, PAD_ID]]
    assert batch.prev.tolist() == [[BOS_ID, 9, 10, PAD_ID], [BOS_ID, 11, 12, 13]]
    assert batch.target.tolist() == [[9, 10, EOS_ID, PAD_ID], [11, 12, 13, EOS_ID]]
    assert (batch.source_tokens, batch.target_tokens, batch.padded_tokens) == (6, 7, 16)


def test_concat_keeps_every_pair():
    a = TokenizedPairs.from_lists([[1, 2], [3]], [[4], [5, 6]])
    b = TokenizedPairs.from_lists([[7]], [[8, 9, 10]])
    both = TokenizedPairs.concat([a, b])
    assert len(both) == 3
    assert [both.source(i).tolist() for i in range(3)] == [[1, 2], [3], [7]]
    assert [both.target(i).tolist() for i in range(3)] == [[4], [5, 6], [8, 9, 10]]


def test_stream_visits_every_batch_once_per_epoch_in_a_new_order(real_pairs):
    batches = plan_batches(real_pairs, usable_rows(real_pairs, 256, 256), 500, seed=1)
    stream = BatchStream(real_pairs, batches, seed=7)
    n = stream.batches_per_epoch
    epoch0 = [tuple(stream.rows(p)) for p in range(n)]
    epoch1 = [tuple(stream.rows(p)) for p in range(n, 2 * n)]
    assert sorted(epoch0) == sorted(epoch1) == sorted(tuple(b) for b in batches)
    assert epoch0 != epoch1
    again = BatchStream(real_pairs, batches, seed=7)
    assert [tuple(again.rows(p)) for p in range(n + 3, n + 9)] == epoch1[3:9]  # enter anywhere (resume)


def test_label_smoothed_loss_matches_torch_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(13, 50), torch.randint(0, 50, (13,))
    loss, nll = label_smoothed_nll(logits, target, 0.1)
    assert torch.allclose(loss, F.cross_entropy(logits, target, label_smoothing=0.1, reduction="sum"), atol=1e-4)
    assert torch.allclose(nll, F.cross_entropy(logits, target, reduction="sum"), atol=1e-4)
    plain, _ = label_smoothed_nll(logits, target, 0.0)
    assert torch.allclose(plain, nll)


def test_inverse_sqrt_warms_up_linearly_then_decays():
    factor = lr_factor(ScheduleConfig(kind="inverse_sqrt", warmup_steps=100), max_steps=1000)
    assert factor(0) == pytest.approx(0.01) and factor(49) == pytest.approx(0.5)
    assert factor(99) == pytest.approx(1.0)
    assert factor(399) == pytest.approx(math.sqrt(100 / 400))


def test_cosine_ends_at_the_minimum_ratio():
    factor = lr_factor(ScheduleConfig(kind="cosine", warmup_steps=10, min_lr_ratio=0.1), max_steps=110)
    assert factor(9) == pytest.approx(1.0)
    assert factor(59) == pytest.approx(0.1 + 0.9 * 0.5)
    assert factor(109) == pytest.approx(0.1)


def test_linear_decays_to_the_minimum_ratio_at_max_steps():
    factor = lr_factor(ScheduleConfig(kind="linear", warmup_steps=10, min_lr_ratio=0.0), max_steps=110)
    assert factor(4) == pytest.approx(0.5) and factor(9) == pytest.approx(1.0)
    assert factor(59) == pytest.approx(0.5)
    assert factor(109) == pytest.approx(0.0) and factor(500) == pytest.approx(0.0)


def test_a_time_budget_ends_the_decay_where_the_budget_will_run_out():
    """1 s a step and a 60 s budget: training ends at step 60, long before max_steps."""
    factor = lr_factor(ScheduleConfig(kind="linear", warmup_steps=10), max_steps=100_000, max_seconds=60)
    assert factor(9, seconds=9.0) == pytest.approx(1.0)  # warm-up is counted in steps
    assert factor(34, seconds=34.0) == pytest.approx(0.5)  # (35 - 10) / (60 - 10) of the way
    assert factor(59, seconds=59.0) == pytest.approx(0.0, abs=1e-9)
    # Twice as fast: the projection moves the end to step 120.
    assert factor(64, seconds=32.0) == pytest.approx(1 - 55 / 110)
    cosine = lr_factor(ScheduleConfig(kind="cosine", warmup_steps=10), max_steps=100_000, max_seconds=60)
    assert cosine(34, seconds=34.0) == pytest.approx(0.5)
    # Without a budget, or when max_steps comes first, steps decide.
    assert lr_factor(ScheduleConfig(kind="linear", warmup_steps=10), max_steps=60)(34) == pytest.approx(0.5)
    assert lr_factor(ScheduleConfig(kind="linear", warmup_steps=10), max_steps=60,
                     max_seconds=3600)(34, seconds=34.0) == pytest.approx(0.5)


IMPORTED = RowLayout(source_prefix=(40,), source_suffix=(EOS_ID,), target_prefix=(41,), target_suffix=(EOS_ID, 42),
                     decoder_start=PAD_ID)
"""An imported model's rows: language codes 40/41 around the text, a code after the target's EOS,
the decoder starting from PAD (as Marian's does)."""


def test_make_batch_builds_the_rows_of_a_layout_and_starts_the_decoder_from_its_token():
    pairs = TokenizedPairs.from_lists([[5, 6], [7]], [[9], [10, 11]])
    batch = make_batch(pairs, [0, 1], IMPORTED)
    assert batch.src.tolist() == [[40, 5, 6, EOS_ID], [40, 7, EOS_ID, PAD_ID]]
    assert batch.target.tolist() == [[41, 9, EOS_ID, 42, PAD_ID], [41, 10, 11, EOS_ID, 42]]
    assert batch.prev.tolist() == [[PAD_ID, 41, 9, EOS_ID, PAD_ID], [PAD_ID, 41, 10, 11, EOS_ID]]
    assert make_batch(pairs, [0, 1], OUR_ROWS).prev.tolist() == make_batch(pairs, [0, 1]).prev.tolist()
    stream = BatchStream(pairs, [np.array([0, 1])], seed=0, layout=IMPORTED)
    assert stream.target_tokens(0) == batch.target_tokens == 9  # what the loss is normalised by


def test_the_token_budget_counts_the_tokens_a_layout_adds(real_pairs):
    rows = usable_rows(real_pairs, 64, 64)
    for batch_rows in plan_batches(real_pairs, rows, max_tokens=300, seed=3, layout=IMPORTED):
        batch = make_batch(real_pairs, batch_rows, IMPORTED)
        assert len(batch_rows) == 1 or batch.src.shape[0] * max(batch.src.shape[1], batch.target.shape[1]) <= 300
