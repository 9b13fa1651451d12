"""The two steps of the prepare job, as plain functions of (storage, plan pieces, config).

map_chunk:     read one chunk -> parse -> normalise -> filter -> hash -> rows split by shard
reduce_shard:  all rows of one shard (= one id range) -> dedup -> train/valid/test -> Parquet

Duplicates always share an id, hence a shard, so per-shard dedup is global dedup. Both steps
are deterministic: the same inputs and config give the same files, byte for byte.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.datasets import SPLITS, read_line_range
from pipelines.prepare.plan import Chunk, InputSpec
from pipelines.storage import Storage, join
from s2s_core.data import hashing
from s2s_core.data.cleaning import normalize, reject_reasons
from s2s_core.data.config import PrepareConfig
from s2s_core.data.language import language_rejects
from s2s_core.data.readers import parse_aligned, parse_jsonl, parse_parquet_table, parse_tsv
from s2s_core.data.rows import REJECTS_SCHEMA, Parsed, Reason
from s2s_core.errors import InputError
from s2s_core.files import short_reason

OUTPUT_COLUMNS = ["id", "source", "target", "origin"]  # then the inputs' metadata columns
ROLE_CODE = {"auto": 0, "valid": 1, "test": 2}  # role column in map output; also the forced split


@dataclass
class MapResult:
    """What the driver learns from one chunk (the shard tables travel separately)."""

    chunk_index: int
    rows_read: int
    rejected: dict[str, int]
    smallest_keys: list[int]
    """The chunk's smallest distinct split keys of 'auto' rows (for fixed-size valid/test)."""
    metadata_schema: pa.Schema
    bytes_read: int
    rejects: pa.Table = field(repr=False)


def map_chunk(storage: Storage, spec: InputSpec, chunk: Chunk, config: PrepareConfig,
              num_shards: int, keep_smallest: int) -> tuple[MapResult, list[pa.Table]]:
    """Read, clean and hash one chunk. Returns its result and one table per shard.

    Shard tables have columns id, split_key (uint64), pos (int64: chunk index << 32 | row),
    role (int8), origin, row, source, target, then metadata columns.
    """
    parsed, nbytes = _read_chunk(storage, spec, chunk, config)
    rows = parsed.rows
    raw_source, raw_target = rows["source"].combine_chunks(), rows["target"].combine_chunks()
    source, target = normalize(raw_source, config.clean), normalize(raw_target, config.clean)
    reasons = reject_reasons(raw_source, raw_target, source, target, config.clean)
    failed = pc.is_valid(reasons)
    for i in pc.indices_nonzero(failed).to_pylist():
        parsed.rejects.add(rows["row"][i].as_py(), Reason(reasons[i].as_py()),
                           source=raw_source[i].as_py(), target=raw_target[i].as_py())
    if config.clean.language_id.enabled:
        failed = _reject_wrong_language(parsed, rows, source, target, failed, config)
    kept = pc.invert(failed)
    rows = rows.filter(kept).set_column(1, "source", source.filter(kept)).set_column(2, "target", target.filter(kept))
    digests = hashing.pair_digests(rows["source"].combine_chunks(), rows["target"].combine_chunks())
    keys = hashing.split_keys(digests, config.split.seed)
    table = _with_keys(rows, spec, chunk, digests, keys)
    shard_of = hashing.buckets(digests, num_shards)
    shards = [table.filter(pa.array(shard_of == b)) for b in range(num_shards)]
    smallest = sorted(set(keys.tolist()))[:keep_smallest] if spec.role == "auto" and keep_smallest else []
    rejected = pc.value_counts(pa.array(parsed.rejects.reason, pa.string())).to_pylist() if len(parsed.rejects) else []
    result = MapResult(chunk.index, parsed.rows_read, {r["values"]: r["counts"] for r in rejected}, smallest,
                       pa.schema([f for f in rows.schema if f.name not in ("row", "source", "target")]),
                       nbytes, parsed.rejects.to_table(spec.origin))
    return result, shards


def _reject_wrong_language(parsed: Parsed, rows: pa.Table, source: pa.Array, target: pa.Array,
                           failed: pa.Array, config: PrepareConfig) -> pa.Array:
    """Judge the language of the pairs that passed the other checks; returns the updated (N,) mask."""
    candidates = pc.indices_nonzero(pc.invert(failed)).to_pylist()
    found = language_rejects(pc.take(source, candidates).to_pylist(), pc.take(target, candidates).to_pylist(),
                             config.clean.language_id)
    mask = failed.to_numpy(zero_copy_only=False).copy()
    for j, detail in found.items():
        i = candidates[j]
        parsed.rejects.add(rows["row"][i].as_py(), Reason.WRONG_LANGUAGE, detail=detail,
                           source=source[i].as_py(), target=target[i].as_py())
        mask[i] = True
    return pa.array(mask)


def _with_keys(rows: pa.Table, spec: InputSpec, chunk: Chunk, digests: list[bytes], keys: np.ndarray) -> pa.Table:
    n = rows.num_rows
    keyed = pa.table({
        "id": hashing.ids_from_digests(digests),
        "split_key": pa.array(keys, pa.uint64()),
        "pos": pc.add(pc.cast(rows["row"], pa.int64()), chunk.index << 32),
        "role": pa.array(np.full(n, ROLE_CODE[spec.role], np.int8)),
        "origin": pa.array([spec.origin] * n, pa.string()),
    })
    for name in rows.column_names:
        keyed = keyed.append_column(name, rows[name])
    return keyed


def _read_chunk(storage: Storage, spec: InputSpec, chunk: Chunk, config: PrepareConfig) -> tuple[Parsed, int]:
    uri = spec.files[0].uri
    if spec.format == "parquet":
        with storage.open_read(uri) as handle:
            try:
                table = pq.ParquetFile(handle).read_row_groups(list(chunk.row_groups)) if chunk.row_groups \
                    else pq.read_table(handle)
            except (OSError, pa.ArrowException) as err:  # corrupt pages or footer: the file, not the storage
                if "AWS Error" in str(err):  # S3 itself failed: transient, left to the task's retries
                    raise
                groups = f"row groups {list(chunk.row_groups)}" if chunk.row_groups else "the file"
                raise InputError(uri, f"{groups} cannot be read ({short_reason(err)}): the file is damaged; "
                                      "replace it and run the same command again") from None
        return parse_parquet_table(table, config.reader), table.nbytes
    if spec.format == "text":
        source, target = (_whole_file(storage, entry.uri) for entry in spec.files)
        return parse_aligned(source, target, spec.files[0].uri, spec.files[1].uri), len(source) + len(target)
    if spec.gzip:
        data, at_start = _whole_file(storage, uri), True
    else:
        data, at_start = read_line_range(storage, uri, chunk.offset, chunk.length, spec.files[0].size)[1], chunk.offset == 0
    if spec.format == "jsonl":
        return parse_jsonl(data, config.reader, at_start), len(data)
    return parse_tsv(data, at_start), len(data)


def _whole_file(storage: Storage, uri: str) -> bytes:
    data = storage.read_bytes(uri)
    if uri.lower().endswith(".gz"):
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise InputError(uri, f"is not a valid gzip file ({err})") from None
    return data


@dataclass
class ShardResult:
    shard: int
    counts: dict[str, int]
    """Rows per split, plus 'duplicate'."""
    files: list[dict]
    """One entry per written file: path (relative to the output), split, rows, bytes, sha256."""


def reduce_shard(storage: Storage, output: str, shard: int, tables: list[pa.Table], schema: pa.Schema,
                 thresholds: tuple[int, int], row_offsets: dict[int, int], compression: str) -> ShardResult:
    """Deduplicate, split and write one shard. `tables` come from the maps in chunk order."""
    rows = pa.concat_tables([_conform(t, schema) for t in tables]).sort_by("pos")
    first = rows.group_by("id", use_threads=False).aggregate([("pos", "min")])
    is_first = pc.is_in(rows["pos"], value_set=first["pos_min"])
    unique, duplicates = rows.filter(is_first), rows.filter(pc.invert(is_first))
    splits = _splits(unique, thresholds)
    files, counts = [], {"duplicate": duplicates.num_rows}
    for code, name in enumerate(SPLITS):
        part = unique.filter(pa.array(splits == code)).sort_by("id").select(OUTPUT_COLUMNS + schema.names)
        counts[name] = part.num_rows
        if part.num_rows:
            files.append(_write(storage, output, f"{name}/part-{shard:05d}.parquet", part, compression) | {"split": name})
    if duplicates.num_rows:
        files.append(_write(storage, output, f"rejects/duplicates-{shard:05d}.parquet",
                            _duplicate_rejects(duplicates, row_offsets), compression) | {"split": "rejects"})
    return ShardResult(shard, counts, files)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Give a map table every metadata column of the job, in the job's types (nulls if absent)."""
    base = ["id", "split_key", "pos", "role", "origin", "row", "source", "target"]
    columns = [table[name] for name in base]
    for f in schema:
        present = f.name in table.column_names
        columns.append(table[f.name].cast(f.type) if present else pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, names=base + schema.names)


def _splits(rows: pa.Table, thresholds: tuple[int, int]) -> np.ndarray:
    role = rows["role"].to_numpy()
    keys = rows["split_key"].to_numpy()
    return np.where(role == 0, hashing.assign_splits(keys, *thresholds), role).astype(np.int8)


def _duplicate_rejects(duplicates: pa.Table, row_offsets: dict[int, int]) -> pa.Table:
    chunk = pc.shift_right(duplicates["pos"], 32).to_numpy()
    rows = duplicates["row"].to_numpy() + np.array([row_offsets[c] for c in chunk.tolist()], np.int64)
    return pa.table({
        "origin": duplicates["origin"], "row": pa.array(rows, pa.int64()),
        "reason": pa.array([Reason.DUPLICATE.value] * duplicates.num_rows, pa.string()),
        "detail": pc.binary_join_element_wise("same pair as kept id ", duplicates["id"], ""),
        "source": duplicates["source"], "target": duplicates["target"],
        "raw": pa.nulls(duplicates.num_rows, pa.binary()),
    }, schema=REJECTS_SCHEMA)


def _write(storage: Storage, output: str, path: str, table: pa.Table, compression: str) -> dict:
    data = parquet_bytes(table, compression)
    storage.write_bytes(join(output, path), data)
    return {"path": path, "rows": table.num_rows, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def parquet_bytes(table: pa.Table, compression: str) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=None if compression == "none" else compression)
    return sink.getvalue()
