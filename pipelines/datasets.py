"""Prepared datasets on storage: what `prepare` writes and `train`, `evaluate` and the nightly flow read.

A dataset (local directory or s3:// prefix) holds `manifest.json`, Parquet shards per split
(`train/`, `valid/`, `test/`, columns id, source, target, origin, ...), `rejects/` and
`tokenizer/`. The manifest lists every shard with its rows and checksum, and the tokenizer's
files. This module is the one reader and writer of that layout; it also holds the line-range
reader that `prepare` and bulk jobs both use to cut text files into byte ranges.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.storage import NotFound, Storage, join
from s2s_core.errors import InputError
from s2s_core.files import short_reason

MANIFEST = "manifest.json"
SPLITS = ("train", "valid", "test")
READ_AHEAD = 1 << 20
"""Bytes read at a time past a range's end to finish its last line."""


def read_manifest(storage: Storage, data: str) -> dict:
    """The manifest of a prepared dataset.

    Raises:
        InputError: naming the data URI when it has no manifest (a bucket that does not exist
            is named as such), or the manifest when it is not a JSON object.
    """
    try:
        manifest = storage.read_json(join(data, MANIFEST))
    except NotFound as missing:  # the input is wrong, not the storage: exit 3
        reason = missing.cause if "bucket" in missing.cause else f"no {MANIFEST}: not a prepared dataset"
        raise InputError(data, f"{reason} (run `s2s prepare` first)") from None
    if not _is_manifest(manifest):
        raise InputError(join(data, MANIFEST), "is not a dataset manifest (a JSON object whose `shards` and "
                                               "`tokenizer.files` list files by `path`)")
    return manifest


def _is_manifest(manifest: object) -> bool:
    """Whether the parts every reader indexes have their shape (a hand-edited or foreign file)."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), dict):
        return False
    tokenizer = manifest.get("tokenizer") or {}
    lists = [*manifest["shards"].values(), tokenizer.get("files", []) if isinstance(tokenizer, dict) else None]
    return all(isinstance(files, list) and all(isinstance(f, dict) and isinstance(f.get("path"), str) for f in files)
               for files in lists)


def write_manifest(storage: Storage, output: str, manifest: dict) -> None:
    """Write the manifest (last: it vouches for the shards it lists)."""
    storage.write_json(join(output, MANIFEST), manifest)


def shard_uris(data: str, manifest: dict, split: str) -> list[str]:
    """The URIs of a split's shards, in order (row ids ascend within and across them)."""
    return [join(data, f["path"]) for f in manifest["shards"].get(split, [])]


def read_split(storage: Storage, data: str, manifest: dict, split: str, columns: list[str],
               limit: int | None = None) -> pa.Table:
    """The named columns of a split (the first `limit` rows when given), read shard by shard.
    Columns missing from the shards are left out rather than refused (e.g. `origin`)."""
    tables: list[pa.Table] = []
    rows = 0
    for uri in shard_uris(data, manifest, split):
        with storage.open_read(uri) as handle:
            try:
                shard = pq.ParquetFile(handle)
                present = [c for c in columns if c in shard.schema_arrow.names]
                tables.append(shard.read(columns=present))
            except pa.ArrowInvalid as err:  # a damaged shard (storage failures are not ArrowInvalid)
                raise InputError(uri, f"is not a readable Parquet shard ({short_reason(err)})") from None
        rows += tables[-1].num_rows
        if limit is not None and rows >= limit:
            break
    if not tables:
        return pa.table({c: pa.array([], pa.string()) for c in columns})
    table = pa.concat_tables(tables, promote_options="default")
    return table.slice(0, limit) if limit is not None else table


def read_pairs(storage: Storage, data: str, manifest: dict, split: str,
               limit: int | None = None) -> tuple[list[str], list[str]]:
    """Source and target texts of a split, in id order (the first `limit` pairs when given)."""
    table = read_split(storage, data, manifest, split, ["source", "target"], limit)
    return table.column("source").to_pylist(), table.column("target").to_pylist()


def download_tokenizer(storage: Storage, data: str, manifest: dict, directory: Path) -> Path:
    """Copy the dataset's tokenizer files into the local `directory` (created); returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    for file in (manifest.get("tokenizer") or {}).get("files", []):
        storage.download(join(data, file["path"]), directory / Path(file["path"]).name)
    return directory


@contextlib.contextmanager
def staged_tokenizer(storage: Storage, data: str, manifest: dict) -> Iterator[Path]:
    """The dataset's tokenizer files in a temporary local directory, removed when the block ends."""
    directory = Path(tempfile.mkdtemp(prefix="s2s-tokenizer-"))
    try:
        yield download_tokenizer(storage, data, manifest, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def read_line_range(storage: Storage, uri: str, offset: int, length: int | None, size: int) -> tuple[int, bytes]:
    """The whole lines of a text file that start in [offset, offset + length): returns the file
    offset of the first of them and their bytes. A line starts in the range if its first byte
    does; the last one is read to its end even past the range. `size` is the file's size."""
    end = size if length is None else min(size, offset + length)
    start = offset - 1 if offset > 0 else 0  # one byte back: was offset itself a line start?
    data = storage.read_bytes(uri, start, end - start)
    if offset > 0:
        first_break = data.find(b"\n")
        start += first_break + 1 if first_break >= 0 else len(data)
        data = data[first_break + 1:] if first_break >= 0 else b""
    position = end
    while data and not data.endswith(b"\n") and position < size:  # finish the last line
        more = storage.read_bytes(uri, position, READ_AHEAD)
        position += len(more)
        cut = more.find(b"\n")
        data += more if cut < 0 else more[:cut + 1]
        if cut >= 0:
            break
    return start, data
