"""s2s_core.data.hashing: pair ids, buckets (shards) and split keys."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from s2s_core.data.hashing import (
    SPLIT_KEY_SPACE,
    assign_splits,
    buckets,
    fraction_threshold,
    ids_from_digests,
    pair_digests,
    split_keys,
)

N = 20_000


def digests_of(pairs: list[tuple[str, str]]) -> list[bytes]:
    return pair_digests(pa.array([s for s, _ in pairs], pa.string()), pa.array([t for _, t in pairs], pa.string()))


def ids_of(pairs: list[tuple[str, str]]) -> list[str]:
    return ids_from_digests(digests_of(pairs)).to_pylist()


@pytest.fixture(scope="module")
def synthetic() -> list[bytes]:
    return digests_of([(f"source sentence {i}", f"frase di arrivo {i}") for i in range(N)])


# ---------------------------------------------------------------- ids


def test_ids_are_32_lowercase_hex_chars_of_the_digest():
    pairs = [("Hello", "Ciao"), ("", ""), ("é", "ü"), ("a" * 10_000, "b")]
    digests = digests_of(pairs)
    assert all(isinstance(d, bytes) and len(d) == 16 for d in digests)
    ids = ids_from_digests(digests)
    assert ids.type == pa.string()
    for i, d in zip(ids.to_pylist(), digests):
        assert re.fullmatch(r"[0-9a-f]{32}", i)
        assert bytes.fromhex(i) == d


def test_same_pair_same_id_in_any_order_and_batch():
    a, b, c = ("The cat.", "Il gatto."), ("Dog", "Cane"), ("x", "y")
    first = ids_of([a, b, c])
    second = ids_of([c, a, b, a])
    assert second == [first[2], first[0], first[1], first[0]]
    assert len(set(first)) == 3


def test_swapped_pair_gets_another_id():
    assert ids_of([("Hello", "Ciao")]) != ids_of([("Ciao", "Hello")])


@pytest.mark.parametrize("one, other", [
    (("ab", "c"), ("a", "bc")),
    (("", "abc"), ("abc", "")),
    (("1:", "x"), ("1", ":x")),
    (("é", "a"), ("", "éa")),
    (("a b", "c"), ("a", " bc")),
])
def test_boundary_between_source_and_target_matters(one, other):
    assert one[0] + one[1] == other[0] + other[1]
    assert ids_of([one]) != ids_of([other])


def test_ids_are_case_and_whitespace_sensitive():
    ids = ids_of([("a", "b"), ("A", "b"), ("a ", "b"), ("a", "b ")])
    assert len(set(ids)) == 4


def test_ids_are_unique_on_many_distinct_pairs(synthetic):
    assert len(set(synthetic)) == N


def test_ids_are_stable_across_processes():
    code = ("import pyarrow as pa; from s2s_core.data.hashing import pair_digests, ids_from_digests; "
            "print(ids_from_digests(pair_digests(pa.array(['Hello', 'ab']), pa.array(['Ciao', 'c']))).to_pylist())")
    outputs = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        outputs.add(done.stdout.strip())
    assert outputs == {str(ids_of([("Hello", "Ciao"), ("ab", "c")]))}


# ---------------------------------------------------------------- buckets


def test_buckets_of_constructed_digests():
    lowest, highest = b"\x00" * 16, b"\xff" * 16
    middle = b"\x80\x00\x00\x00" + b"\x00" * 12
    just_below_middle = b"\x7f\xff\xff\xff" + b"\xff" * 12
    assert buckets([lowest, highest, middle, just_below_middle], 2).tolist() == [0, 1, 1, 0]
    assert buckets([lowest, highest, middle], 1).tolist() == [0, 0, 0]
    assert buckets([lowest, highest, middle], 100_000).tolist() == [0, 99_999, 50_000]
    # only the first 32 bits decide
    assert buckets([b"\x12\x34\x56\x78" + b"\x00" * 12, b"\x12\x34\x56\x78" + b"\xff" * 12], 1000).tolist() == [71, 71]
    assert (0x12345678 * 1000) >> 32 == 71


def test_buckets_empty():
    out = buckets([], 8)
    assert out.shape == (0,) and out.dtype == np.int64


@pytest.mark.parametrize("num_buckets", [1, 3, 16, 1000, 100_000])
def test_buckets_in_range(synthetic, num_buckets):
    b = buckets(synthetic, num_buckets)
    assert b.dtype == np.int64 and b.shape == (N,)
    assert b.min() >= 0 and b.max() < num_buckets


@pytest.mark.parametrize("num_buckets", [2, 7, 64])
def test_buckets_are_contiguous_id_ranges(synthetic, num_buckets):
    ids = ids_from_digests(synthetic).to_pylist()
    b = buckets(synthetic, num_buckets)
    order = sorted(range(N), key=ids.__getitem__)
    sorted_buckets = b[order]
    assert np.all(np.diff(sorted_buckets) >= 0)  # monotone in id
    assert set(b.tolist()) == set(range(num_buckets))  # 20k ids fill every bucket
    for k in range(num_buckets - 1):
        assert max(i for i, x in zip(ids, b) if x == k) < min(i for i, x in zip(ids, b) if x == k + 1)


def test_buckets_are_roughly_even(synthetic):
    counts = np.bincount(buckets(synthetic, 10), minlength=10)
    assert counts.min() > N / 10 * 0.9 and counts.max() < N / 10 * 1.1


def test_duplicates_share_a_bucket():
    d = digests_of([("x", "y"), ("z", "w"), ("x", "y")])
    b = buckets(d, 50)
    assert b[0] == b[2]


# ---------------------------------------------------------------- split keys and splits


def test_split_keys_seed_zero_are_the_last_eight_digest_bytes():
    d = bytes(range(16))
    keys = split_keys([d], 0)
    assert keys.dtype == np.uint64
    assert int(keys[0]) == int.from_bytes(bytes(range(8, 16)), "big")


def test_split_keys_are_deterministic_and_seed_dependent(synthetic):
    k0, k0_again, k1, k2 = (split_keys(synthetic, s) for s in (0, 0, 1, 2))
    assert np.array_equal(k0, k0_again)
    assert np.array_equal(split_keys(synthetic, 5), split_keys(synthetic, 5))
    for a, b in ((k0, k1), (k1, k2), (k0, k2)):
        assert np.mean(a == b) < 0.001


def test_fraction_threshold():
    assert fraction_threshold(0) == 0
    assert fraction_threshold(0.5) == SPLIT_KEY_SPACE // 2
    assert fraction_threshold(0.25) == SPLIT_KEY_SPACE // 4
    assert fraction_threshold(1.0) == SPLIT_KEY_SPACE - 1  # clipped to the key space
    assert fraction_threshold(2.0) == SPLIT_KEY_SPACE - 1


def test_assign_splits_thresholds():
    top = SPLIT_KEY_SPACE - 1
    keys = np.array([0, 99, 100, 101, 199, 200, 201, top], dtype=np.uint64)
    out = assign_splits(keys, 100, 200)
    assert out.dtype == np.int8
    assert out.tolist() == [1, 1, 2, 2, 2, 0, 0, 0]
    assert assign_splits(keys, 0, 0).tolist() == [0] * len(keys)            # no valid, no test
    assert assign_splits(keys, 0, 100).tolist() == [2, 2, 0, 0, 0, 0, 0, 0]  # test only
    assert assign_splits(keys, 100, 100).tolist() == [1, 1, 0, 0, 0, 0, 0, 0]  # valid only
    # thresholds beyond the key space are clipped instead of overflowing uint64
    assert assign_splits(keys, 150, SPLIT_KEY_SPACE + 5).tolist() == [1, 1, 1, 1, 2, 2, 2, 0]
    assert assign_splits(np.zeros(0, np.uint64), 1, 2).shape == (0,)


@pytest.mark.parametrize("seed", [0, 1, 12345])
@pytest.mark.parametrize("valid, test", [(0.05, 0.02), (0.01, 0.01), (0.2, 0.1)])
def test_split_fractions_are_approximately_right(synthetic, seed, valid, test):
    keys = split_keys(synthetic, seed)
    splits = assign_splits(keys, fraction_threshold(valid), fraction_threshold(valid + test))
    share = np.bincount(splits, minlength=3) / N
    for got, want in zip(share, (1 - valid - test, valid, test)):
        # within 0.5 percentage points, or 4 binomial standard deviations for large shares
        assert abs(got - want) < max(0.005, 4 * np.sqrt(want * (1 - want) / N)), (got, want)


def test_seed_changes_which_pairs_go_to_valid(synthetic):
    chosen = []
    for seed in (0, 1):
        splits = assign_splits(split_keys(synthetic, seed), fraction_threshold(0.1), fraction_threshold(0.1))
        chosen.append(set(np.flatnonzero(splits == 1).tolist()))
    overlap = len(chosen[0] & chosen[1]) / len(chosen[0])
    assert 0.05 < overlap < 0.15  # independent choices overlap by about the fraction itself


def test_split_is_independent_of_the_bucket(synthetic):
    # Split keys use other digest bits than buckets: every shard gets its share of valid rows.
    b = buckets(synthetic, 4)
    splits = assign_splits(split_keys(synthetic, 0), fraction_threshold(0.1), fraction_threshold(0.1))
    for k in range(4):
        share = np.mean(splits[b == k] == 1)
        assert 0.08 < share < 0.12


def test_any_valid_config_seed_can_make_split_keys():
    from s2s_core.config import build
    from s2s_core.data.config import PrepareConfig
    from s2s_core.errors import ConfigError

    seed = 2**128
    try:
        build(PrepareConfig, {"split": {"seed": seed}})
    except ConfigError:
        return  # rejected up front: fine
    assert split_keys([b"\x00" * 16], seed).shape == (1,)
