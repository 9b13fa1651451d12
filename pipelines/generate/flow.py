"""Prefect flow `bulk_generate`: translate or summarize a whole dataset, exactly once per row.

The flow holds no tensor code: one Prefect task wraps the whole actor-pool job. Running the
same command again after any failure finishes the job: committed units are skipped, which is
also why the pool task may be retried after a transient cluster failure. A submitted job
(`s2s submit`) runs inside orchestrate's `bulk_submission` flow, which records its outcome.
"""

from __future__ import annotations

import datetime as dt
import sys

import pyarrow.parquet as pq
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pipelines import outputs, ray_runtime
from pipelines.generate import job
from pipelines.generate.plan import BULK_JOB, BulkPlan, BulkRequest, claim_output, plan
from pipelines.generate.units import Unit
from pipelines.generate.worker import FLAGS, output_uri
from pipelines.retry import io_task_options
from pipelines.settings import run_settings
from pipelines.storage import Storage, basename
from s2s_core.errors import CheckpointError, InputError

EXAMPLES = 5


@task
def plan_task(storage: Storage, request: BulkRequest) -> BulkPlan:
    return plan(storage, request)


@task
def actor_pool(planned: BulkPlan, workers: int, cpus_per_worker: float, gpus_per_worker: float) -> dict:
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
                  overwrite: bool = False, unit_mb: float = 32.0, ray_address: str | None = None,
                  target_lang_column: str | None = None) -> dict:
    """`task` ('translate' or 'summarize') every row of `input` with the package `model` into
    `output` (see `BulkRequest` for the parameters); returns the `_SUCCESS` summary (counts,
    options, throughput)."""
    request = BulkRequest(task=task, model=model, input=input, output=output, column=column, id_column=id_column,
                          workers=workers, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                          config_file=config_file, overrides=overrides, overwrite=overwrite, unit_mb=unit_mb,
                          ray_address=ray_address, target_lang_column=target_lang_column)
    settings = run_settings(ray_address)
    storage = Storage(settings.s3)
    io = io_task_options(settings)
    planned = plan_task.with_options(**io)(storage, request)
    output = planned.spec.output
    # Taken before Ray starts: a second identical command fails in a second (exit 4, naming
    # this job), instead of redoing all the work beside it.
    with outputs.output_lease(storage, output, BULK_JOB.what) as lease:
        ray_runtime.ensure_ray(settings)
        ray_runtime.check_resources(workers, cpus_per_worker, gpus_per_worker, settings.scale_wait_s)
        claim_output(storage, output, planned.identity, overwrite, lease)
        try:
            summary = actor_pool.with_options(**io)(planned, workers, cpus_per_worker, gpus_per_worker)
        except (InputError, CheckpointError):
            job.release_if_untouched(storage, output)
            raise
    create_markdown_artifact(summary_markdown(summary, output), key=f"{task}-summary",
                             description=f"bulk {task} -> {output}")
    create_table_artifact(examples(storage, output, planned.units), key=f"{task}-examples",
                          description="the first rows of the output")
    get_run_logger().info("%s: %d rows in, %d out (%d errors) -> %s", task, summary["rows_in"],
                          summary["rows_out"], summary["error"], output)
    return summary


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
