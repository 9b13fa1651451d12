"""The bulk job written the way Ray Data's documentation teaches it, for bench/bulk_vs_ray_data.py.

    read_parquet(s3 input) -> map_batches(TranslateBatch, compute=ActorPoolStrategy(size=N), num_cpus=C) -> write_parquet(s3 output)

with Ray Data's own checkpointing (Ray >= 2.55, two-phase commit for file sinks) on the id column:
`DataContext.get_current().checkpoint_config = CheckpointConfig(id_column, checkpoint_path, ...)`.
`TranslateBatch` loads our model package once per actor (`load_package` + `Translator`) and maps a
batch to the same batch plus `output` and `tokens`. Run as its own process (like `s2s translate`),
so that memory and failures are measured the same way; it writes a small JSON result at the end.

Usage: python bench/bulk_ray_data_driver.py --model PKG --input s3://b/in --output s3://b/out
       [--checkpoint s3://b/ckpt --id-column id] [--row-hash] [--workers 2] [--cpus-per-worker 0.5]
       [--batch-size 500] [--ray-address HOST:PORT] [--result FILE] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
import traceback
from pathlib import Path

import pyarrow as pa
import ray
import torch

from pipelines.settings import load_settings
from pipelines.storage import Storage
from s2s_core.generation import GenerationConfig, Translator
from s2s_core.package import load_package


class TranslateBatch:
    """A Ray Data callable class: the model is loaded once per actor, then batch in, batch out."""

    def __init__(self, model: str, options: dict, threads: int) -> None:
        torch.set_num_threads(threads)
        self.translator = Translator(load_package(Path(model)), GenerationConfig(**options), threads=threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        results = self.translator(batch.column("source").to_pylist())
        batch = batch.append_column("output", pa.array([r.text for r in results], pa.string()))
        return batch.append_column("tokens", pa.array([r.tokens for r in results], pa.int32()))


def parse_options(items: list[str]) -> dict:
    """`key=value` decoding options as GenerationConfig takes them (numbers where they parse)."""
    options = {}
    for item in items:
        key, _, value = item.partition("=")
        for kind in (int, float):
            try:
                options[key] = kind(value)
                break
            except ValueError:
                continue
        else:
            options[key] = value
    return options


def enable_checkpointing(path: str, id_column: str, filesystem) -> None:
    """Ray Data's checkpointing, as its API reference shows it: one DataContext option."""
    from ray.data.checkpoint import CheckpointConfig

    ray.data.DataContext.get_current().checkpoint_config = CheckpointConfig(
        id_column=id_column, checkpoint_path=path, override_filesystem=filesystem)


def run(args: argparse.Namespace) -> dict:
    """The job itself; returns its timings (seconds since this process started)."""
    storage = Storage(load_settings().s3)
    input_path, filesystem = storage.ray_location(args.input)
    output_path, _ = storage.ray_location(args.output)
    if args.checkpoint:
        enable_checkpointing(args.checkpoint, args.id_column, filesystem)
    ds = ray.data.read_parquet(input_path, filesystem=filesystem, include_row_hash=args.row_hash)
    # Small inputs come as one block (files are bundled up to DataContext.target_min_block_size): cut
    # them into blocks of one batch, or a single actor would get all the work.
    ds = ds.repartition(target_num_rows_per_block=args.batch_size)
    ds = ds.map_batches(TranslateBatch, fn_constructor_kwargs={
        "model": args.model, "options": parse_options(args.options), "threads": max(1, round(args.cpus_per_worker))},
        compute=ray.data.ActorPoolStrategy(size=args.workers), num_cpus=args.cpus_per_worker, batch_size=args.batch_size, batch_format="pyarrow")
    ds.write_parquet(output_path, filesystem=filesystem)
    return {"stats": ds.stats()[-4000:]}


def cause(err: Exception) -> str:
    """The innermost `SomeError: message` line of an error Ray wrapped (with tracebacks and hints)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    causes = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)]
    return (causes or lines or [type(err).__name__])[-1]


def connect(address: str | None, cpus: int) -> None:
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)


def main() -> None:
    start = time.time()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model package (local directory)")
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--checkpoint", help="checkpoint path (s3://...): turns Ray Data's checkpointing on")
    parser.add_argument("--id-column", default="id")
    parser.add_argument("--row-hash", action="store_true", help="read_parquet(include_row_hash=True)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus-per-worker", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--local-cpus", type=int, default=2, help="CPUs of the local Ray (no --ray-address)")
    parser.add_argument("--ray-address")
    parser.add_argument("--result", type=Path)
    parser.add_argument("options", nargs="*", help="decoding options, key=value")
    args = parser.parse_args()
    connect(args.ray_address, args.local_cpus)
    result: dict = {"ray_ready_s": time.time() - start}
    code = 0
    try:
        result.update(run(args))
    except Exception as err:  # noqa: BLE001 - reported in the result, as the exit code says
        result["error"] = cause(err)
        result["traceback"] = traceback.format_exc()[-6000:]
        code = 1
    result["wall_s"] = time.time() - start
    if args.result:
        args.result.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k not in ("stats", "traceback")}), file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
