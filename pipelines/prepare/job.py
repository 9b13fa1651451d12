"""The prepare job on Ray: fingerprints, map -> reduce shuffle, tokenizer, manifest.

The driver holds only small things (counts, the few smallest split keys, row-level rejects);
the rows themselves go from map tasks to reduce tasks through Ray's object store.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TextIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from pipelines import outputs, ray_runtime
from pipelines.datasets import MANIFEST, SPLITS
from pipelines.outputs import OutputKind
from pipelines.prepare.plan import Plan, tokenizer_directory
from pipelines.prepare.steps import MapResult, ShardResult, map_chunk, parquet_bytes, reduce_shard
from pipelines.progress import Progress
from pipelines.storage import NotFound, Storage, join
from s2s_core.config import to_dict
from s2s_core.data import hashing
from s2s_core.data.config import PrepareConfig
from s2s_core.data.rows import REJECTS_SCHEMA
from s2s_core.errors import InputError
from s2s_core.tokenizer import train_sentencepiece

SCHEMA_VERSION = 1
# Ray Data / actor guidance for 2-core machines applies to tasks too: fractional CPUs let a
# reduce start while the last maps finish, and never starve the driver.
TASK_CPUS = 1.0


@ray.remote(num_cpus=0.5)
def _sha256_task(storage: Storage, uri: str) -> str:
    digest = hashlib.sha256()
    with storage.open_read(uri) as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def fingerprint_inputs(storage: Storage, plan: Plan) -> list[dict]:
    """Size and SHA-256 of every input file (read in parallel), in plan order."""
    files = [f for spec in plan.inputs for f in spec.files]
    digests = dict(zip((f.uri for f in files), ray_runtime.get([_sha256_task.remote(storage, f.uri) for f in files])))
    return [{"origin": spec.origin, "role": spec.role, "format": spec.format,
             "files": [{"uri": f.uri, "size": f.size, "sha256": digests[f.uri]} for f in spec.files]}
            for spec in plan.inputs]


def dataset_id(inputs: list[dict], config: PrepareConfig) -> str:
    """Identity of a dataset: its inputs' contents and every setting that changes the output."""
    settings = to_dict(replace(config, shards=replace(config.shards, chunk_mb=0),
                               tokenizer=replace(config.tokenizer, threads=0)))
    payload = {"schema_version": SCHEMA_VERSION, "config": settings,
               "inputs": [[i["origin"], i["role"], i["format"], [f["sha256"] for f in i["files"]]] for i in inputs]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


DATASET = OutputKind(what="dataset", record=MANIFEST, owned=(*SPLITS, "rejects", "tokenizer", MANIFEST),
                     differences=lambda old, new: [] if old.get("dataset_id") == new["dataset_id"]
                     else [f"id ({str(old.get('dataset_id', '?'))[:12]})"])


def check_output(storage: Storage, output: str, new_id: str, overwrite: bool) -> dict | None:
    """Whether `output` may take the dataset `new_id`: returns the existing manifest when it
    already holds this very dataset (nothing to do), else None.

    Raises:
        OutputError: it holds a different dataset or foreign files, and `overwrite` is off.
    """
    return outputs.check_output(storage, output, DATASET, {"dataset_id": new_id}, overwrite)


def claim_output(storage: Storage, output: str, new_id: str, overwrite: bool) -> dict | None:
    """`check_output`, then clear our old files (a different dataset, or an unfinished run's)."""
    return outputs.claim_output(storage, output, DATASET, {"dataset_id": new_id}, overwrite, write_record=False)


def split_thresholds(results: list[MapResult], plan: Plan, config: PrepareConfig) -> tuple[int, int]:
    """(valid_below, test_below) split-key thresholds for 'auto' rows.

    Fractions map straight onto the key space. Fixed row counts use the globally smallest
    distinct keys, merged from each chunk's smallest ones. A held-out valid/test input
    takes that split's place: then no 'auto' row goes there.
    """
    split = config.split
    roles = {spec.role for spec in plan.inputs}
    keys = sorted(set(k for r in results for k in r.smallest_keys))
    top = hashing.SPLIT_KEY_SPACE - 1

    def below(rows: int | None, fraction: float, start_rank: int, start_key: int) -> int:
        if rows is None:
            return min(start_key + hashing.fraction_threshold(fraction), top)
        rank = start_rank + rows
        return keys[rank] if rank < len(keys) else top

    n_valid = 0 if "valid" in roles else split.valid_rows
    valid_below = 0 if "valid" in roles else below(n_valid, split.valid_fraction, 0, 0)
    if "test" in roles:
        return valid_below, valid_below
    return valid_below, below(split.test_rows, split.test_fraction, n_valid or 0, valid_below)


def run_shard_job(storage: Storage, plan: Plan, config: PrepareConfig, output: str,
                  stream: TextIO | None = None) -> tuple[list[MapResult], list[ShardResult], list[dict]]:
    """Map every chunk, reduce every shard, write the row-level rejects. Returns what happened."""
    results, shard_refs = _run_maps(storage, plan, config, stream)
    schema = pa.unify_schemas([r.metadata_schema for r in results], promote_options="permissive")
    offsets = _row_offsets(plan, results)
    thresholds = split_thresholds(results, plan, config)
    reduce = ray.remote(_reduce_task).options(num_cpus=TASK_CPUS)
    # Tables go as top-level arguments: Ray resolves those refs (not refs nested in a list).
    refs = [reduce.remote(storage, output, b, schema, thresholds, offsets, config.shards.compression,
                          *[shard_refs[r.chunk_index][b] for r in results]) for b in range(plan.num_shards)]
    shards = _wait_all(refs, Progress("prepare: writing shards", len(refs), stream), lambda s: {"shards": 1})
    rejects = _write_map_rejects(storage, output, plan, results, offsets, config.shards.compression)
    return results, shards, rejects


def _run_maps(storage: Storage, plan: Plan, config: PrepareConfig, stream: TextIO | None):
    keep = (config.split.valid_rows or 0) + (config.split.test_rows or 0) + 1
    remote_map = ray.remote(_map_task).options(num_cpus=TASK_CPUS, num_returns=plan.num_shards + 1)
    refs = {}
    for chunk in plan.chunks:
        out = remote_map.remote(storage, plan.inputs[chunk.input_index], chunk, config, plan.num_shards, keep)
        refs[chunk.index] = out if isinstance(out, list) else [out]
    total = sum(spec.size for spec in plan.inputs)
    progress = Progress("prepare: reading", total, stream)
    by_ref = {chunk_refs[0]: index for index, chunk_refs in refs.items()}
    results = _wait_all(list(by_ref), progress, lambda r: {"rows": r.rows_read}, weight=lambda r: r.bytes_read)
    return sorted(results, key=lambda r: r.chunk_index), {i: r[1:] for i, r in refs.items()}


def _map_task(storage, spec, chunk, config, num_shards, keep):
    result, shards = map_chunk(storage, spec, chunk, config, num_shards, keep)
    return (result, *shards)


def _reduce_task(storage, output, shard, schema, thresholds, offsets, compression, *tables):
    return reduce_shard(storage, output, shard, list(tables), schema, thresholds, offsets, compression)


def _wait_all(refs: list, progress: Progress, counters, weight=lambda item: 1) -> list:
    pending, done = list(refs), []
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
        for item in ray_runtime.get(ready):
            done.append(item)
            progress.update(weight(item), **counters(item))
        if not ready:
            progress.update(0)
    progress.finish()
    return done


def _row_offsets(plan: Plan, results: list[MapResult]) -> dict[int, int]:
    """Rows before each chunk in its own input, to report file row numbers."""
    offsets, seen = {}, {}
    for chunk, result in zip(plan.chunks, results):
        offsets[chunk.index] = seen.get(chunk.input_index, 0)
        seen[chunk.input_index] = offsets[chunk.index] + result.rows_read
    return offsets


def _write_map_rejects(storage: Storage, output: str, plan: Plan, results: list[MapResult],
                       offsets: dict[int, int], compression: str) -> list[dict]:
    files = []
    for input_index, spec in enumerate(plan.inputs):
        parts = [r.rejects.set_column(1, "row", pc.add(r.rejects["row"], offsets[c.index]))
                 for c, r in zip(plan.chunks, results) if c.input_index == input_index and r.rejects.num_rows]
        if not parts:
            continue
        table = pa.concat_tables(parts).cast(REJECTS_SCHEMA)
        data = parquet_bytes(table, compression)
        path = f"rejects/input-{input_index:05d}.parquet"
        storage.write_bytes(join(output, path), data)
        files.append({"path": path, "split": "rejects", "origin": spec.origin, "rows": table.num_rows,
                      "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return files


# A worker process of its own, which exits after (max_calls=1): SentencePiece's memory goes back to
# the OS instead of staying in a pooled worker that the token-id tasks reuse next. max_calls alone
# does not give a fresh process: Ray runs the task in any idle pooled worker, one that ran map and
# reduce tasks before and still holds their heap and maps the object-store pages they touched (the
# shuffle: 1.1 GB of a 16x corpus, measured by bench/prepare.py --scale). A runtime environment of
# its own (env_vars only: nothing to install) matches no pooled worker, so Ray starts a new one.
FRESH_WORKER = {"env_vars": {"S2S_FRESH_WORKER": "train_tokenizer"}}


@ray.remote(num_cpus=TASK_CPUS, max_calls=1, runtime_env=FRESH_WORKER)
def train_tokenizer(storage: Storage, output: str, shard_paths: list[str], config: PrepareConfig) -> dict:
    """Train SentencePiece on the first `sample_pairs` train rows in id order; upload it."""
    wanted = config.tokenizer.sample_pairs
    pairs: list[tuple[str, str]] = []
    for path in shard_paths:
        with storage.open_read(join(output, path)) as handle:
            table = pq.read_table(handle, columns=["source", "target"]).slice(0, wanted - len(pairs))
        pairs.extend(zip(table["source"].to_pylist(), table["target"].to_pylist()))
        if len(pairs) >= wanted:
            break
    with tempfile.TemporaryDirectory() as tmp:
        settings = train_sentencepiece(pairs, Path(tmp), config.tokenizer)
        files = []
        for file in sorted(Path(tmp).iterdir()):
            storage.upload(file, join(output, "tokenizer", file.name))
            files.append({"path": f"tokenizer/{file.name}", "sha256": hashlib.sha256(file.read_bytes()).hexdigest()})
    return {"pairs": settings["pairs"], "files": files, "model_files": settings["files"]}


def copy_tokenizer(storage: Storage, output: str, package_or_tokenizer: str) -> dict:
    """Copy the tokenizer of a model package (its `tokenizer/`), or a tokenizer directory, to
    OUTPUT/tokenizer, byte for byte; its manifest entry, as for a trained one.

    Raises:
        InputError: it holds no tokenizer.
    """
    source = tokenizer_directory(storage, package_or_tokenizer)
    try:
        settings = storage.read_json(join(source, "settings.json"))
    except NotFound:
        raise InputError(source, "is not a tokenizer directory (no settings.json) for tokenizer.from") from None
    files, root = [], source.rstrip("/") + "/"
    for entry in storage.list(source):
        data = storage.read_bytes(entry.uri)
        name = entry.uri[len(root):]
        storage.write_bytes(join(output, "tokenizer", name), data)
        files.append({"path": f"tokenizer/{name}", "sha256": hashlib.sha256(data).hexdigest()})
    return {"pairs": settings.get("pairs", 0), "files": files, "model_files": settings["files"], "reused_from": source}


def build_manifest(new_id: str, inputs: list[dict], config: PrepareConfig, maps: list[MapResult],
                   shards: list[ShardResult], rejects: list[dict], tokenizer: dict | None, plan: Plan) -> dict:
    """The dataset's manifest: deterministic (no timestamps), so a re-run writes the same bytes."""
    rejected: dict[str, int] = {}
    for result in maps:
        for reason, n in result.rejected.items():
            rejected[reason] = rejected.get(reason, 0) + n
    per_input = {}
    for chunk, result in zip(plan.chunks, maps):
        entry = per_input.setdefault(chunk.input_index, {"rows_read": 0, "rows_rejected": 0})
        entry["rows_read"] += result.rows_read
        entry["rows_rejected"] += sum(result.rejected.values())
    splits = {name: sum(s.counts[name] for s in shards) for name in SPLITS}
    files = sorted((f for s in shards for f in s.files), key=lambda f: f["path"]) + rejects
    return {
        "schema_version": SCHEMA_VERSION,
        "dataset_id": new_id,
        "inputs": [i | per_input.get(n, {}) for n, i in enumerate(inputs)],
        "config": to_dict(config),
        "counts": {"read": sum(r.rows_read for r in maps), "kept": sum(splits.values()), "splits": splits,
                   "rejected": dict(sorted(rejected.items())), "duplicates": sum(s.counts["duplicate"] for s in shards)},
        "shards": {name: [f for f in files if f["split"] == name] for name in (*SPLITS, "rejects")},
        "tokenizer": tokenizer,
    }
