"""The Ray actor of a bulk job: loads the model package once, then turns units into committed outputs.

Per unit: read its rows, generate (length-sorted token-budget batches, in the text layer; with
a target language column, each row into its own language: a row whose code the model does not
have is a bad row with the reason),
write `part-<unit>.parquet` atomically, THEN the commit marker `_commits/<unit>.json`. A unit
is done exactly when its marker exists; a crash before the marker leaves at most an output
that a rerun overwrites with the same rows (the step is deterministic).
"""

from __future__ import annotations

import io
import os
import resource
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.generate.rows import UnitRows, read_unit
from pipelines.generate.units import Columns, Unit
from pipelines.packages import STAGING_PREFIX, open_text_layer
from pipelines.storage import Storage, join
from s2s_core.errors import LocationError, S2SError
from s2s_core.generation import GenerationConfig, TextResult

FLAGS = ("split", "truncated", "empty")
OUTPUT_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("output", pa.string()), ("score", pa.float64()),
    ("tokens", pa.int32()), ("split", pa.bool_()), ("truncated", pa.bool_()), ("empty", pa.bool_()),
    ("error", pa.string()), ("model_id", pa.string()), ("target_lang", pa.string()),
])


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs; the same for every unit of a job."""

    storage: Storage
    task: str
    """'translate' or 'summarize'."""
    model: str
    """Model package URI (local directory or s3:// prefix)."""
    model_id: str
    config: GenerationConfig
    columns: Columns
    output: str
    device: str = "cpu"
    threads: int = 1


def output_uri(output: str, unit_id: str) -> str:
    return join(output, f"{unit_id}.parquet")


def marker_uri(output: str, unit_id: str) -> str:
    return join(output, "_commits", f"{unit_id}.json")


class UnitWorker:
    """Actor body: one model in memory, one unit at a time.

    A user's problem found while loading (a damaged or incompatible package: an S2SError) does
    not kill the actor: Ray would report only "the actor died in its creation task", whose text
    has the error but not the error itself, and the CLI could not give it its exit code. The
    actor keeps the error and raises it from every call instead, so it reaches the driver as a
    task error that `ray_runtime.unwrap` turns back into the CheckpointError itself.
    """

    def __init__(self, spec: JobSpec) -> None:
        import ray
        import torch

        torch.set_num_threads(max(1, spec.threads))
        self.spec = spec
        self.node_id = ray.get_runtime_context().get_node_id()
        self.failed: S2SError | None = None
        try:
            self.text = open_text_layer(spec.storage, spec.model, spec.task, spec.config, spec.device, spec.threads)
        except S2SError as err:
            self.failed = _named_in_package(err, spec.model)

    def pid(self) -> int:
        return os.getpid()

    def ping(self) -> bool:
        """Answers once the actor is up (model loaded): the driver's sign that it may take work."""
        if self.failed is not None:
            raise self.failed
        return True

    def process(self, unit: Unit) -> dict:
        """Generate and commit one unit; returns its commit record plus this actor's peak memory."""
        self.ping()
        start = time.monotonic()
        spec = self.spec
        rows = read_unit(spec.storage, unit, spec.columns)
        if spec.columns.lang is not None:
            self._check_languages(rows)
        good = [i for i, error in enumerate(rows.errors) if error is None]
        langs = [rows.langs[i] for i in good] if spec.columns.lang is not None else None
        results = self.text([rows.texts[i] for i in good], target_langs=langs)
        table = output_table(rows, dict(zip(good, results)), spec.model_id)
        spec.storage.write_bytes(output_uri(spec.output, unit.id), _parquet(table))
        record = commit_record(unit, rows, results, time.monotonic() - start, self.node_id)
        spec.storage.write_json(marker_uri(spec.output, unit.id), record, indent=None)
        # Peak memory of this actor: model + one unit in flight, whatever the dataset's size.
        return {**record, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}

    def _check_languages(self, rows: UnitRows) -> None:
        """Reject the rows whose target language the model does not have (one check per code)."""
        problems: dict[str, str | None] = {}
        for i, (code, error) in enumerate(zip(rows.langs, rows.errors)):
            if error is None and code is not None:
                if code not in problems:
                    problems[code] = self.text.target_problem(code)
                problem = problems[code]
                if problem is not None:
                    rows.reject(i, problem)


def _named_in_package(err: S2SError, model: str) -> S2SError:
    """`err` naming the file by the package's own URI, not by the temporary copy that an s3://
    package is loaded from (`pipelines.packages.staged_package`): the user knows only the former."""
    if not isinstance(err, LocationError) or STAGING_PREFIX not in err.uri:
        return err
    inside = err.uri.split(STAGING_PREFIX, 1)[1].split("/", 1)  # [temporary name, path in the package]
    return type(err)(join(model, inside[1]) if len(inside) > 1 else model, err.reason)


def output_table(rows: UnitRows, results: dict[int, TextResult], model_id: str) -> pa.Table:
    """One output row per input row, in input order; bad rows carry their error and no output."""
    columns: dict[str, list] = {name: [] for name in OUTPUT_SCHEMA.names}
    for i, (row_id, text, error) in enumerate(zip(rows.ids, rows.texts, rows.errors)):
        result = results.get(i)
        columns["id"].append(row_id)
        columns["source"].append(text)
        columns["output"].append(result.text if result else None)
        columns["score"].append(result.score if result else None)
        columns["tokens"].append(result.tokens if result else 0)
        for flag in FLAGS:
            columns[flag].append(bool(result and getattr(result, flag)))
        columns["error"].append(error)
        columns["model_id"].append(model_id)
        columns["target_lang"].append(result.target_lang if result else rows.langs[i])
    return pa.table(columns, schema=OUTPUT_SCHEMA)


def commit_record(unit: Unit, rows: UnitRows, results: list[TextResult], seconds: float, node_id: str) -> dict:
    """The commit marker's content: the unit's counts (they add up: rows_in = rows_out = ok + error)
    and the Ray node that processed it."""
    errors = sum(e is not None for e in rows.errors)
    return {"unit": unit.id, "input": unit.uri, "rows_in": len(rows.ids), "rows_out": len(rows.ids),
            "ok": len(results), "error": errors, "tokens": sum(r.tokens for r in results),
            **{flag: sum(bool(getattr(r, flag)) for r in results) for flag in FLAGS},
            "weight": unit.weight, "seconds": round(seconds, 3), "node_id": node_id}


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()
