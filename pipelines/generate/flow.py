"""Prefect flow `bulk_generate`: translate or summarize a whole dataset, exactly once per row.

The flow holds no tensor code: one Prefect task wraps the whole actor-pool job. Running the
same command again after any failure finishes the job: committed units are skipped, which is
also why the pool task may be retried after a transient cluster failure. With `submission`,
the run records its progress on that submission (see pipelines/orchestrate/submissions.py).
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass

import pyarrow.parquet as pq
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pipelines import ray_runtime
from pipelines.generate import job
from pipelines.generate.units import Columns, Unit, plan_units
from pipelines.generate.worker import FLAGS, JobSpec, output_uri, package_id, resolve_generation
from pipelines.orchestrate.submissions import Registry
from pipelines.retry import io_task_options
from pipelines.settings import Settings, load_settings, with_ray_address
from pipelines.storage import Storage, absolute, basename
from s2s_core.generation import GenerationConfig

EXAMPLES = 5


@dataclass(frozen=True)
class PlannedJob:
    spec: JobSpec
    units: list[Unit]
    identity: dict


def plan_job(storage: Storage, task_name: str, model: str, input_uri: str, output: str, columns: Columns,
             config: GenerationConfig, cpus_per_worker: float, gpus_per_worker: float, unit_mb: float) -> PlannedJob:
    """Check the model package and the input, cut the input into units. No Ray, no Prefect."""
    spec = JobSpec(storage=storage, task=task_name, model=model, model_id=package_id(storage, model), config=config,
                   columns=columns, output=output, device="cuda" if gpus_per_worker > 0 else "cpu",
                   threads=max(1, round(cpus_per_worker)))
    units = plan_units(storage, input_uri, columns, unit_mb)
    return PlannedJob(spec, units, job.job_identity(spec, input_uri, units, unit_mb))


@task
def plan(storage: Storage, task_name: str, model: str, input_uri: str, output: str, columns: Columns,
         config: GenerationConfig, cpus_per_worker: float, gpus_per_worker: float, unit_mb: float) -> PlannedJob:
    return plan_job(storage, task_name, model, input_uri, output, columns, config, cpus_per_worker,
                    gpus_per_worker, unit_mb)


@task
def actor_pool(planned: PlannedJob, workers: int, cpus_per_worker: float, gpus_per_worker: float) -> dict:
    return job.run_job(planned.spec, planned.units, planned.identity, workers, cpus_per_worker,
                       gpus_per_worker, sys.stderr)


def run_name(task_name: str, input_uri: str) -> str:
    """`translate-<dataset>-<date>`: the dataset is the input's name (a file's without extension)."""
    dataset = basename(input_uri.rstrip("/*")).split(".")[0] or "dataset"
    return f"{task_name}-{dataset}-{dt.date.today():%Y%m%d}"


def _run_name() -> str:
    from prefect.runtime import flow_run
    return run_name(flow_run.parameters.get("task", "generate"), flow_run.parameters.get("input", ""))


@flow(name="bulk_generate", flow_run_name=_run_name)
def bulk_generate(task: str, model: str, input: str, output: str, column: str = "source",  # noqa: A002
                  id_column: str | None = None, workers: int = 1, cpus_per_worker: float = 1.0,
                  gpus_per_worker: float = 0.0, config_file: str | None = None, overrides: list[str] | None = None,
                  overwrite: bool = False, unit_mb: float = 32.0, submission: str | None = None,
                  ray_address: str | None = None) -> dict:
    """`task` ('translate' or 'summarize') every row of `input` with the package `model` into
    `output`; returns the `_SUCCESS` summary (counts, options, throughput). `submission`: the
    id of the submission this run processes; `ray_address`: a Ray cluster instead of the
    process's default."""
    logger = get_run_logger()
    model, input, output = absolute(model), absolute(input), absolute(output)
    settings = load_settings()
    if ray_address:
        settings = with_ray_address(settings, ray_address)
    storage = Storage(settings.s3)
    registry = Registry(storage, settings.state) if submission else None
    if registry:
        from prefect.runtime import flow_run

        from pipelines.orchestrate.runs import live_run
        registry.claim(submission, str(flow_run.id), live_run)
    try:
        summary = _run(settings, storage, task, model, input, output, Columns(column, id_column),
                       resolve_generation(config_file, overrides or [], task), workers, cpus_per_worker,
                       gpus_per_worker, overwrite, unit_mb)
    except BaseException as err:
        if registry:
            registry.mark(submission, "failed", error=first_line(err))
        raise
    if registry:
        registry.mark(submission, "done", rows_out=summary["rows_out"])
    logger.info("%s: %d rows in, %d out (%d errors) -> %s", task, summary["rows_in"], summary["rows_out"],
                summary["error"], output)
    return summary


def _run(settings: Settings, storage: Storage, task_name: str, model: str, input_uri: str, output: str,
         columns: Columns, config: GenerationConfig, workers: int, cpus_per_worker: float, gpus_per_worker: float,
         overwrite: bool, unit_mb: float) -> dict:
    io = io_task_options(settings)
    planned = plan.with_options(**io)(storage, task_name, model, input_uri, output, columns, config,
                                      cpus_per_worker, gpus_per_worker, unit_mb)
    ray_runtime.ensure_ray(settings)
    ray_runtime.check_resources(workers, cpus_per_worker, gpus_per_worker, settings.scale_wait_s)
    job.claim_output(storage, output, planned.identity, overwrite)
    summary = actor_pool.with_options(**io)(planned, workers, cpus_per_worker, gpus_per_worker)
    create_markdown_artifact(summary_markdown(summary, output), key=f"{task_name}-summary",
                             description=f"bulk {task_name} -> {output}")
    create_table_artifact(examples(storage, output, planned.units), key=f"{task_name}-examples",
                          description="the first rows of the output")
    return summary


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def summary_markdown(summary: dict, output: str) -> str:
    throughput = summary["throughput"]
    rows = [("output", f"`{output}`"), ("model id", summary["model_id"]), ("units", summary["units"]),
            ("rows in", summary["rows_in"]), ("rows out", summary["rows_out"]), ("ok", summary["ok"]),
            ("errors", summary["error"]), *((flag, summary[flag]) for flag in FLAGS),
            ("generated tokens", f"{summary['tokens']:,}"), ("rows/s (this run)", throughput["rows_per_s"]),
            ("tokens/s (this run)", throughput["tokens_per_s"])]
    return "| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def examples(storage: Storage, output: str, units: list[Unit], count: int = EXAMPLES) -> list[dict]:
    """The first `count` good rows of the first unit's output (source and output text)."""
    if not units:
        return []
    with storage.open_read(output_uri(output, units[0].id)) as handle:
        table = pq.read_table(handle, columns=["id", "source", "output", "score", "error"])
    rows = [r for r in table.to_pylist() if r["error"] is None]
    return [{k: r[k] for k in ("id", "source", "output", "score")} for r in rows[:count]]
