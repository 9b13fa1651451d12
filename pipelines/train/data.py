"""Reading a prepared dataset for training: shards from storage, tokenised in one native call."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from pipelines.storage import Storage, join
from s2s_core.tokenizer import Tokenizer
from s2s_core.training.batching import TokenizedPairs
from s2s_core.training.validation import ValidationSet

TOKENIZE_CHUNK = 50_000  # pairs per SentencePiece call: bounds the Python lists alive at once


def shard_uris(data: str, manifest: dict, split: str) -> list[str]:
    return [join(data, f["path"]) for f in manifest["shards"].get(split, [])]


def read_texts(storage: Storage, uris: list[str], limit: int | None = None) -> tuple[list[str], list[str]]:
    """Source and target columns of Parquet shards, in shard order (ids ascending in each)."""
    sources: list[str] = []
    targets: list[str] = []
    for uri in uris:
        table = pq.read_table(io.BytesIO(storage.read_bytes(uri)), columns=["source", "target"])
        sources += table.column("source").to_pylist()
        targets += table.column("target").to_pylist()
        if limit is not None and len(sources) >= limit:
            return sources[:limit], targets[:limit]
    return sources, targets


def tokenize(sources: list[str], targets: list[str], src_tok: Tokenizer, tgt_tok: Tokenizer) -> TokenizedPairs:
    """Token ids of all pairs as flat arrays, encoded in chunks to bound peak memory."""
    src_ids: list = []
    tgt_ids: list = []
    parts = []
    for start in range(0, len(sources), TOKENIZE_CHUNK):
        src_ids = src_tok.encode_batch(sources[start:start + TOKENIZE_CHUNK])
        tgt_ids = tgt_tok.encode_batch(targets[start:start + TOKENIZE_CHUNK])
        parts.append(TokenizedPairs.from_lists(src_ids, tgt_ids))
    return TokenizedPairs.concat(parts)


def download_tokenizer(storage: Storage, data: str, manifest: dict, directory: Path | None = None) -> Path:
    """Copy the dataset's tokenizer/ files to a local directory; returns it."""
    local = directory or Path(tempfile.mkdtemp(prefix="s2s-tokenizer-"))
    local.mkdir(parents=True, exist_ok=True)
    for file in (manifest.get("tokenizer") or {}).get("files", []):
        storage.download(join(data, file["path"]), local / Path(file["path"]).name)
    return local


def load_train(storage: Storage, data: str, manifest: dict, src_tok: Tokenizer, tgt_tok: Tokenizer) -> TokenizedPairs:
    sources, targets = read_texts(storage, shard_uris(data, manifest, "train"))
    return tokenize(sources, targets, src_tok, tgt_tok)


def load_valid(storage: Storage, data: str, manifest: dict, src_tok: Tokenizer, tgt_tok: Tokenizer,
               limit: int) -> ValidationSet | None:
    """The first `limit` validation pairs (by id), or None when the dataset has no valid split."""
    uris = shard_uris(data, manifest, "valid")
    if not uris:
        return None
    sources, targets = read_texts(storage, uris, limit)
    if not sources:
        return None
    return ValidationSet(tokenize(sources, targets, src_tok, tgt_tok), targets)
