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
from pipelines.prepare.job import read_manifest
from pipelines.retry import io_task_options
from pipelines.settings import load_settings
from pipelines.storage import Storage, absolute, basename, join
from pipelines.train import job
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
                max_failures: int = 3, force: bool = False) -> dict:
    """Train a model on the prepared dataset `data`; returns the final package's metadata."""
    logger = get_run_logger()
    data, output = absolute(data), absolute(output)
    settings = load_settings()
    storage = Storage(settings.s3)
    train, model = job.resolve_config(config_file, overrides or [])
    manifest = read_manifest(storage, data)
    model = job.fit_vocabulary(model, storage, data, manifest)
    job.check_init_from(storage, train, manifest)
    run_config = job.run_config_of(train, model, data, manifest)
    ray_runtime.ensure_ray(settings)
    ray_runtime.check_resources(workers, cpus_per_worker, gpus_per_worker, settings.scale_wait_s)
    job.claim_output(storage, output, run_config, force)
    train_job = TrainJob(storage=storage, data=data, manifest=manifest, output=output, train=train, model=model,
                         run_config=run_config, cpus_per_worker=cpus_per_worker)
    # A transient cluster failure retries the whole Ray Train run, which resumes from its last checkpoint.
    ray_train.with_options(**io_task_options(settings))(train_job, workers, gpus_per_worker, max_failures)
    metadata = json.loads(storage.read_bytes(join(output, "model", "metadata.json")))
    logger.info("model package: %s (step %s)", join(output, "model"), metadata["step"])
    create_markdown_artifact(summary_markdown(metadata, output), key="train-summary",
                             description=f"train_model -> {output}")
    valid_uri = join(output, "metrics", "valid.jsonl")
    if storage.exists(valid_uri):  # the validation curve, one row per validation
        rows = [json.loads(line) for line in storage.read_bytes(valid_uri).decode().splitlines() if line]
        create_table_artifact(rows, key="train-validation",
                              description=f"validation scores by step; curves: {join(output, 'metrics', 'curves.png')}")
    curves_uri = join(output, "metrics", "curves.png")
    if storage.exists(curves_uri):
        create_markdown_artifact(curves_markdown(storage.read_bytes(curves_uri), curves_uri), key="train-curves",
                                 description="loss, learning rate and validation scores by step")
    return metadata


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
