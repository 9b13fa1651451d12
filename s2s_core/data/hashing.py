"""Pair identity and placement: a 128-bit hash of the normalised pair decides everything.

- `id` (32 hex chars) is stable across runs, machines and input order: the same pair always
  gets the same id, so exact duplicates share it and dedup is a group-by on `id`.
- The shard (bucket) is the id's hash range, so duplicates always meet in the same reducer
  and rows within a shard sorted by id come out in a random-looking, reproducible order.
- The split key (64 bits, optionally salted by a seed) places a pair in train/valid/test.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

SPLIT_KEY_SPACE = 1 << 64


def pair_digests(source: pa.Array, target: pa.Array) -> list[bytes]:
    """16-byte BLAKE2b digests of (source, target); the length prefix keeps the boundary unambiguous."""
    return [hashlib.blake2b(f"{len(s)}:{s}{t}".encode("utf-8"), digest_size=16).digest()
            for s, t in zip(source.to_pylist(), target.to_pylist())]


def ids_from_digests(digests: list[bytes]) -> pa.Array:
    return pa.array([d.hex() for d in digests], pa.string())


def buckets(digests: list[bytes], num_buckets: int) -> np.ndarray:
    """Bucket of each digest: its first 32 bits scaled to [0, num_buckets). (N,) -> (N,) int64.

    Buckets are contiguous id ranges, so bucket b holds ids below those of bucket b + 1.
    """
    if not digests:
        return np.zeros(0, np.int64)
    high = np.frombuffer(b"".join(d[:4] for d in digests), dtype=">u4").astype(np.uint64)
    return ((high * np.uint64(num_buckets)) >> np.uint64(32)).astype(np.int64)


def split_keys(digests: list[bytes], seed: int) -> np.ndarray:
    """64-bit split keys, uniform and independent of the bucket bits. (N,) -> (N,) uint64."""
    if seed == 0:
        tail = b"".join(d[8:] for d in digests)
    else:
        salt = seed.to_bytes(16, "little")
        tail = b"".join(hashlib.blake2b(d, digest_size=8, salt=salt).digest() for d in digests)
    return np.frombuffer(tail, dtype=">u8").astype(np.uint64)


def fraction_threshold(fraction: float) -> int:
    """Split keys below this are the lowest `fraction` of the key space."""
    return min(int(fraction * SPLIT_KEY_SPACE), SPLIT_KEY_SPACE - 1)


def assign_splits(keys: np.ndarray, valid_below: int, test_below: int) -> np.ndarray:
    """0 = train, 1 = valid (key < valid_below), 2 = test (valid_below <= key < test_below).

    (N,) uint64 -> (N,) int8. Thresholds are clipped to the key space.
    """
    top = SPLIT_KEY_SPACE - 1
    out = np.zeros(len(keys), np.int8)
    out[keys < np.uint64(min(test_below, top))] = 2
    out[keys < np.uint64(min(valid_below, top))] = 1
    return out
