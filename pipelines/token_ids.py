"""Token-id shards: a prepared dataset's pairs tokenized once, read by training a window at a time.

Layout, beside the text shards: `ids/<split>/part-NNNNN.parquet`, one per text shard, same rows
in the same order, columns `id` (string), `src` and `tgt` (list<int32>: the text's ids, the
source encoded with the source tokenizer and the target with the target one, as Marian's two
SentencePiece models need), `src_len` and `tgt_len` (int32: what batch planning reads without
the ids). The tokens a model row adds around the text (EOS; an imported model's language codes)
are not stored: training adds them from the same tokenizer's templates (`RowLayout`), so its
rows are exactly those the model's own tokenizer makes.
The manifest's `token_ids` records the format, the digest of the tokenizer that made them, the
vocabulary sizes, and per shard its rows, token counts, bytes and SHA-256.

`prepare` writes them (one Ray task per shard, `tokenize_shard`); `train` reads them through
`StorageShards`, which checks each shard's checksum and vocabulary as it loads it.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.datasets import download_tokenizer
from pipelines.storage import Storage, join
from s2s_core.errors import InputError
from s2s_core.tokenizer import Tokenizer
from s2s_core.training.batching import TokenizedPairs

FORMAT = "parquet: id string, src/tgt list<int32>, src_len/tgt_len int32"
ENCODE_CHUNK = 20_000
"""Pairs per SentencePiece call: bounds the Python lists alive at once."""


def ids_path(text_path: str) -> str:
    """`train/part-00003.parquet` -> `ids/train/part-00003.parquet`."""
    return f"ids/{text_path}"


def tokenizer_digest(files: dict[str, str]) -> str:
    """Identity of a tokenizer: the SHA-256s of its model files ({path: sha256}); settings.json,
    which also records how many pairs it was trained on, does not change any id."""
    models = sorted((Path(path).name, sha) for path, sha in files.items() if not path.endswith("settings.json"))
    return hashlib.sha256(repr(models).encode()).hexdigest()[:16]


def dataset_tokenizer_digest(manifest: dict) -> str:
    """The digest of the tokenizer a dataset's manifest lists."""
    return tokenizer_digest({f["path"]: f["sha256"] for f in (manifest.get("tokenizer") or {}).get("files", [])})


def tokenize_shard(storage: Storage, data: str, manifest: dict, text_path: str) -> dict:
    """Tokenize one text shard into its id shard; returns the id shard's manifest entry.
    (The prepare job runs this as one Ray task per shard.)"""
    with tempfile.TemporaryDirectory(prefix="s2s-ids-") as tmp:
        tokenizer_dir = download_tokenizer(storage, data, manifest, Path(tmp))
        source, target = Tokenizer.from_dir(tokenizer_dir, "source"), Tokenizer.from_dir(tokenizer_dir, "target")
        with storage.open_read(join(data, text_path)) as handle:
            table = pq.read_table(handle, columns=["id", "source", "target"])
        pairs = _encode(table.column("source").to_pylist(), table.column("target").to_pylist(), source, target)
    ids_table = pa.table({"id": table.column("id"),
                          "src": _list_array(pairs.src_ids, pairs.src_offsets),
                          "tgt": _list_array(pairs.tgt_ids, pairs.tgt_offsets),
                          "src_len": pa.array(pairs.src_lengths.astype(np.int32)),
                          "tgt_len": pa.array(pairs.tgt_lengths.astype(np.int32))})
    sink = io.BytesIO()
    pq.write_table(ids_table, sink, compression="zstd")
    data_bytes = sink.getvalue()
    path = ids_path(text_path)
    storage.write_bytes(join(data, path), data_bytes)
    return {"path": path, "from": text_path, "rows": len(pairs), "bytes": len(data_bytes),
            "sha256": hashlib.sha256(data_bytes).hexdigest(),
            "source_tokens": int(pairs.src_lengths.sum()), "target_tokens": int(pairs.tgt_lengths.sum())}


def _encode(sources: list[str], targets: list[str], source: Tokenizer, target: Tokenizer) -> TokenizedPairs:
    parts = [TokenizedPairs.from_lists(source.encode_batch(sources[i:i + ENCODE_CHUNK]),
                                       target.encode_batch(targets[i:i + ENCODE_CHUNK]))
             for i in range(0, len(sources), ENCODE_CHUNK)]
    return TokenizedPairs.concat(parts)


def _list_array(ids: np.ndarray, offsets: np.ndarray) -> pa.ListArray:
    """Flat ids (T,) and offsets (N+1,) as one Arrow list<int32> column of N rows."""
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(ids.astype(np.int32)))


def _ragged(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A list<int32> column of N rows as flat ids (T,) and offsets (N+1,) from 0."""
    lists = column.combine_chunks()
    offsets = lists.offsets.to_numpy().astype(np.int64)
    ids = lists.values.to_numpy()[offsets[0]:offsets[-1]] if len(offsets) else np.zeros(0, np.int32)
    return ids, offsets - offsets[0] if len(offsets) else np.zeros(1, np.int64)


def token_ids_entry(manifest: dict, shards: dict[str, list[dict]], vocab: tuple[int, int]) -> dict:
    """The manifest's `token_ids` section for the id shards of every split."""
    return {"format": FORMAT, "tokenizer": dataset_tokenizer_digest(manifest),
            "vocab_size": {"source": vocab[0], "target": vocab[1]}, "shards": shards}


def check_token_ids(data: str, manifest: dict, loader: str) -> None:
    """A dataset that training will stream must have id shards made with its own tokenizer.

    Raises:
        InputError: no id shards, or id shards of another tokenizer (naming the command that fixes it).
    """
    if loader != "stream":
        return
    section = manifest.get("token_ids")
    fix = f"run `s2s prepare --tokenize-only --output {data}`"
    if not section:
        raise InputError(data, f"has no token-id shards (prepared before they existed): {fix}, "
                               "or train with batching.loader=memory")
    if section.get("tokenizer") != dataset_tokenizer_digest(manifest):
        raise InputError(data, f"its token-id shards were made with another tokenizer than the dataset's: {fix}")


def text_shards(manifest: dict, split: str) -> list[str]:
    """The paths of a split's text shards, in order."""
    return [f["path"] for f in manifest["shards"].get(split, [])]


class StorageShards:
    """A split's id shards on storage, as the `ShardSource` a `ShardedStream` reads.

    Raises (when a shard is loaded) InputError naming the shard: a checksum that does not match
    the manifest, or an id outside the vocabulary.
    """

    def __init__(self, storage: Storage, data: str, manifest: dict, split: str) -> None:
        section = manifest.get("token_ids") or {}
        self.storage, self.data = storage, data
        self.entries: list[dict] = (section.get("shards") or {}).get(split, [])
        sizes = section.get("vocab_size") or {}
        self.vocab = (int(sizes.get("source", 0)), int(sizes.get("target", 0)))

    def shard_count(self) -> int:
        return len(self.entries)

    def lengths(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        with self.storage.open_read(self._uri(shard)) as handle:
            table = pq.read_table(handle, columns=["src_len", "tgt_len"])
        return (table.column("src_len").to_numpy().astype(np.int64),
                table.column("tgt_len").to_numpy().astype(np.int64))

    def pairs(self, shard: int) -> TokenizedPairs:
        uri, entry = self._uri(shard), self.entries[shard]
        data = self.storage.read_bytes(uri)
        if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise InputError(uri, "token-id shard does not match its checksum in the manifest (damaged or "
                                  "replaced): run `s2s prepare --tokenize-only` on the dataset again")
        table = pq.read_table(io.BytesIO(data), columns=["src", "tgt"])
        pairs = TokenizedPairs(*_ragged(table.column("src")), *_ragged(table.column("tgt")))
        self._check_vocabulary(uri, pairs)
        return pairs

    def _check_vocabulary(self, uri: str, pairs: TokenizedPairs) -> None:
        for side, ids, size in (("source", pairs.src_ids, self.vocab[0]), ("target", pairs.tgt_ids, self.vocab[1])):
            if len(ids) and (int(ids.max()) >= size or int(ids.min()) < 0):
                raise InputError(uri, f"{side} ids go up to {int(ids.max())} but the tokenizer has {size} pieces: "
                                      "the shard was made with another tokenizer")

    def _uri(self, shard: int) -> str:
        return join(self.data, self.entries[shard]["path"])

