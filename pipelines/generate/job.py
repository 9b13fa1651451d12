"""Driver side of a bulk job: claim the output, skip committed units, run the actor pool, sum up.

Output layout (local directory or s3:// prefix):
    _job.json                 what this output holds: task, model id, options, input, columns, units
    <unit id>.parquet         one per unit: id, source, output, score, tokens, flags, error, model_id
    _commits/<unit id>.json   written after its part: the unit is done, with its counts
    _SUCCESS                  written last: totals over every unit, options, throughput
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections import deque
from typing import TextIO

import ray

from pipelines import ray_runtime
from pipelines.generate.units import Unit
from pipelines.generate.worker import FLAGS, JobSpec, UnitWorker, marker_uri
from pipelines.progress import Progress
from pipelines.storage import NotFound, Storage, basename, join
from s2s_core.config import to_dict
from s2s_core.errors import OutputError

JOB_FILE, SUCCESS, COMMITS = "_job.json", "_SUCCESS", "_commits"
IN_FLIGHT_PER_WORKER = 2  # one running, one queued: the actor never waits for the driver
ACTOR_RESTARTS = 3  # a killed actor process is restarted and its unfinished unit retried


def job_identity(spec: JobSpec, input_uri: str, units: list[Unit], unit_mb: float) -> dict:
    """What must match for a rerun to continue into the same output."""
    options = to_dict(spec.config)
    options.pop("max_tokens")  # batching changes speed, not outputs (batch invariance)
    return {"task": spec.task, "model_id": spec.model_id, "generation": options, "input": input_uri,
            "columns": {"text": spec.columns.text, "id": spec.columns.id}, "unit_mb": unit_mb,
            "units": len(units), "units_sha256": hashlib.sha256("\n".join(u.id for u in units).encode()).hexdigest()}


def check_output(storage: Storage, output: str, identity: dict, overwrite: bool) -> bool:
    """Refuse an output that holds another job (or other files) unless `overwrite`.

    Returns True when `overwrite` must clear it first.
    """
    try:
        existing = json.loads(storage.read_bytes(join(output, JOB_FILE)))
    except NotFound:
        existing = None
    if existing is None:
        try:
            foreign = [e.uri for e in storage.list(output)]
        except NotFound:
            foreign = []
        if foreign and not overwrite:
            raise OutputError(output, f"is not empty and holds no bulk job ({basename(foreign[0])}, ...); "
                                      "use another --output or --overwrite")
        return bool(foreign)
    changed = [key for key in sorted(set(existing) | set(identity)) if existing.get(key) != identity.get(key)]
    if changed and not overwrite:
        raise OutputError(output, f"holds a bulk job with a different {', '.join(changed)}; "
                                  "use another --output, or --overwrite to replace it")
    return bool(changed)


def claim_output(storage: Storage, output: str, identity: dict, overwrite: bool) -> None:
    if check_output(storage, output, identity, overwrite):
        storage.delete(output, recursive=True)
    storage.write_bytes(join(output, JOB_FILE), (json.dumps(identity, indent=2, sort_keys=True) + "\n").encode())


def committed_units(storage: Storage, output: str) -> set[str]:
    """Ids of the units whose commit marker exists."""
    try:
        return {basename(e.uri).removesuffix(".json") for e in storage.list(join(output, COMMITS))
                if e.uri.endswith(".json")}
    except NotFound:
        return set()


def run_pool(spec: JobSpec, units: list[Unit], workers: int, cpus_per_worker: float, gpus_per_worker: float,
             stream: TextIO = sys.stderr) -> list[dict]:
    """Process `units` on `workers` actors; returns their commit records (plus peak memory).

    Actors are restarted by Ray when their process dies, and the unit they held is retried
    (`max_task_retries`), so one killed worker does not fail the job.
    """
    actor_class = ray.remote(UnitWorker).options(
        num_cpus=cpus_per_worker, num_gpus=gpus_per_worker,
        max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)
    actors = [actor_class.remote(spec) for _ in range(min(workers, len(units)))]
    progress = Progress(spec.task, total=sum(u.weight for u in units) or 1, stream=stream)
    pending, in_flight, records = deque(units), {}, []
    try:
        for actor in actors * IN_FLIGHT_PER_WORKER:
            if pending:
                unit = pending.popleft()
                in_flight[actor.process.remote(unit)] = (actor, unit)
        while in_flight:
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            actor, unit = in_flight.pop(ref)
            record = {**ray_runtime.get(ref), "done_at": time.monotonic()}
            records.append(record)
            progress.update(unit.weight, units=1, rows=record["rows_in"], tokens=record["tokens"])
            if pending:
                following = pending.popleft()
                in_flight[actor.process.remote(following)] = (actor, following)
    finally:
        for actor in actors:
            ray.kill(actor)
    progress.finish()
    return records


def summarize(storage: Storage, output: str, identity: dict, units: list[Unit], records: list[dict],
              seconds: float) -> dict:
    """Totals over every unit's commit marker (this run's and earlier runs'); written as `_SUCCESS`."""
    markers = [json.loads(storage.read_bytes(marker_uri(output, u.id))) for u in units]
    counts = {key: sum(m[key] for m in markers) for key in ("rows_in", "rows_out", "ok", "error", "tokens", *FLAGS)}
    done_now = {key: sum(r[key] for r in records) for key in ("rows_in", "tokens")}
    # Past start-up (Ray workers, model loading): the rate between the first and last unit done.
    finished = sorted(records, key=lambda r: r["done_at"])
    steady_seconds = finished[-1]["done_at"] - finished[0]["done_at"] if len(finished) > 1 else 0.0
    steady_rows = sum(r["rows_in"] for r in finished[1:])
    return {
        "task": identity["task"], "model_id": identity["model_id"], "generation": identity["generation"],
        "input": identity["input"], "units": len(units), "units_this_run": len(records),
        **counts,
        "throughput": {"seconds": round(seconds, 3), "rows_per_s": round(done_now["rows_in"] / max(seconds, 1e-9), 2),
                       "tokens_per_s": round(done_now["tokens"] / max(seconds, 1e-9), 2),
                       "rows_per_s_after_first_unit": round(steady_rows / steady_seconds, 2) if steady_seconds else None,
                       "worker_peak_rss_mb": max((r["peak_rss_mb"] for r in records), default=0.0)},
    }


def write_success(storage: Storage, output: str, summary: dict) -> None:
    storage.write_bytes(join(output, SUCCESS), (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())


def run_job(spec: JobSpec, units: list[Unit], identity: dict, workers: int, cpus_per_worker: float,
            gpus_per_worker: float, stream: TextIO = sys.stderr) -> dict:
    """Every uncommitted unit through the pool, then `_SUCCESS`; returns the summary."""
    start = time.monotonic()
    done = committed_units(spec.storage, spec.output)
    todo = [u for u in units if u.id not in done]
    if done:
        print(f"{len(units) - len(todo)} of {len(units)} units already committed: skipped", file=stream)
    records = run_pool(spec, todo, workers, cpus_per_worker, gpus_per_worker, stream) if todo else []
    summary = summarize(spec.storage, spec.output, identity, units, records, time.monotonic() - start)
    write_success(spec.storage, spec.output, summary)
    return summary
