"""A prepared dataset's pairs as token ids for training and validation."""

from __future__ import annotations

from pipelines.datasets import read_pairs
from pipelines.storage import Storage
from pipelines.token_ids import StorageShards
from s2s_core.tokenizer import Tokenizer
from s2s_core.training.batching import OUR_ROWS, RowLayout, TokenizedPairs
from s2s_core.training.validation import ValidationSet

TOKENIZE_CHUNK = 50_000  # pairs per SentencePiece call: bounds the Python lists alive at once


def tokenize(sources: list[str], targets: list[str], src_tok: Tokenizer, tgt_tok: Tokenizer) -> TokenizedPairs:
    """Token ids of all pairs as flat arrays (sources with the source tokenizer, targets with the
    target one: Marian has a SentencePiece model per side), encoded in chunks to bound peak memory.
    The ids are the texts' only, as in the token-id shards: batching adds each row's template."""
    src_ids: list = []
    tgt_ids: list = []
    parts = []
    for start in range(0, len(sources), TOKENIZE_CHUNK):
        src_ids = src_tok.encode_batch(sources[start:start + TOKENIZE_CHUNK])
        tgt_ids = tgt_tok.encode_batch(targets[start:start + TOKENIZE_CHUNK])
        parts.append(TokenizedPairs.from_lists(src_ids, tgt_ids))
    return TokenizedPairs.concat(parts)


def load_train(storage: Storage, data: str, manifest: dict, src_tok: Tokenizer, tgt_tok: Tokenizer) -> TokenizedPairs:
    sources, targets = read_pairs(storage, data, manifest, "train")
    return tokenize(sources, targets, src_tok, tgt_tok)


def load_valid(storage: Storage, data: str, manifest: dict, src_tok: Tokenizer, tgt_tok: Tokenizer,
               limit: int, layout: RowLayout = OUR_ROWS) -> ValidationSet | None:
    """The first `limit` validation pairs (by id), made into model rows by `layout`, or None
    when the dataset has no valid split."""
    sources, targets = read_pairs(storage, data, manifest, "valid", limit)
    if not sources:
        return None
    if manifest.get("token_ids"):  # tokenized once by prepare: read the ids
        return ValidationSet(read_ids(StorageShards(storage, data, manifest, "valid"), limit), targets, layout)
    return ValidationSet(tokenize(sources, targets, src_tok, tgt_tok), targets, layout)


def read_ids(shards: StorageShards, limit: int) -> TokenizedPairs:
    """The first `limit` pairs of a split's id shards, in id order (as its text shards)."""
    parts, rows = [], 0
    for shard in range(shards.shard_count()):
        if rows >= limit:
            break
        part = shards.pairs(shard)
        parts.append(part if rows + len(part) <= limit else TokenizedPairs.from_lists(
            [part.source(i) for i in range(limit - rows)], [part.target(i) for i in range(limit - rows)]))
        rows += len(parts[-1])
    return TokenizedPairs.concat(parts)
