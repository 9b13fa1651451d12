"""Prefect flow `train_model`: check data, config and output, then one Ray Train job.

The flow holds no tensor code: the Prefect task wraps the whole Ray Train run (Prefect never
runs inside Ray workers). A crashed worker is restarted by Ray Train from its last checkpoint
(`max_failures`); a crashed driver is resumed by running the same command again.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import sys

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pipelines import ray_runtime
from pipelines.retry import io_task_options
from pipelines.settings import run_settings
from pipelines.storage import Storage, basename, join
from pipelines.train import job
from pipelines.train.plan import TrainRequest, claim_output, plan
from pipelines.train.worker import TrainJob


@task
def ray_train(train_job: TrainJob, workers: int, gpus_per_worker: float, max_failures: int) -> None:
    job.launch(train_job, workers, gpus_per_worker, max_failures, sys.stderr)


def _run_name() -> str:
    from prefect.runtime import flow_run
    output = flow_run.parameters.get("output", "model")
    return f"train-{basename(output) or 'model'}-{dt.date.today():%Y%m%d}"


@flow(name="train_model", flow_run_name=_run_name)
def train_model(data: str, output: str, config_file: str | None = None, overrides: list[str] | None = None,
                workers: int = 1, gpus_per_worker: float = 0, cpus_per_worker: float = 1,
                max_failures: int = 3, overwrite: bool = False, force: bool = False,
                ray_address: str | None = None) -> dict:
    """Train a model on the prepared dataset `data` (see `TrainRequest` for the parameters;
    `force` is the old name of `overwrite`); returns the final package's metadata."""
    request = TrainRequest(data=data, output=output, config_file=config_file, overrides=overrides or [],
                           workers=workers, gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,
                           max_failures=max_failures, overwrite=overwrite or force, ray_address=ray_address)
    settings = run_settings(ray_address)
    storage = Storage(settings.s3)
    planned = plan(storage, request)
    ray_runtime.ensure_ray(settings)
    ray_runtime.check_resources(workers, cpus_per_worker, gpus_per_worker, settings.scale_wait_s)
    claim_output(storage, planned.output, planned.run_config, request.overwrite)
    train_job = TrainJob(storage=storage, data=planned.data, manifest=planned.manifest, output=planned.output,
                         train=planned.train, model=planned.model, run_config=planned.run_config,
                         cpus_per_worker=cpus_per_worker)
    # A transient cluster failure retries the whole Ray Train run, which resumes from its last checkpoint.
    ray_train.with_options(**io_task_options(settings))(train_job, workers, gpus_per_worker, max_failures)
    publish_artifacts(storage, planned.output)
    return storage.read_json(join(planned.output, "model", "metadata.json"))


def publish_artifacts(storage: Storage, output: str) -> None:
    """The run's summary, validation table and curves as Prefect artifacts."""
    metadata = storage.read_json(join(output, "model", "metadata.json"))
    get_run_logger().info("model package: %s (step %s)", join(output, "model"), metadata["step"])
    create_markdown_artifact(summary_markdown(metadata, output), key="train-summary",
                             description=f"train_model -> {output}")
    valid_uri = join(output, "metrics", "valid.jsonl")
    if storage.exists(valid_uri):  # the validation curve, one row per validation
        rows = [json.loads(line) for line in storage.read_bytes(valid_uri).decode().split("\n") if line]
        create_table_artifact(rows, key="train-validation",
                              description=f"validation scores by step; curves: {join(output, 'metrics', 'curves.png')}")
    curves_uri = join(output, "metrics", "curves.png")
    if storage.exists(curves_uri):
        create_markdown_artifact(curves_markdown(storage.read_bytes(curves_uri), curves_uri), key="train-curves",
                                 description="loss, learning rate and validation scores by step")


def curves_markdown(png: bytes, uri: str) -> str:
    """The curves as a markdown image. The PNG travels inside it (a data URI) because the
    Prefect UI cannot read the run's storage; about 60 KB."""
    return f"![training curves](data:image/png;base64,{base64.b64encode(png).decode()})\n\n`{uri}`\n"


def summary_markdown(metadata: dict, output: str) -> str:
    scores = metadata.get("validation") or {}
    rows = [("package", f"`{join(output, 'model')}`"), ("preset", metadata.get("preset")),
            ("step", metadata.get("step")), ("tokens seen", f"{metadata.get('tokens_seen', 0):,}"),
            ("training time", f"{metadata.get('training_seconds', 0):.0f} s"), ("workers", metadata.get("workers"))]
    rows += [(f"validation {k}", f"{v:.3f}" if isinstance(v, float) else v) for k, v in sorted(scores.items())]
    return "| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
