"""Prefect flow `prepare_corpus`: plan -> fingerprint -> shard job on Ray -> tokenizer -> manifest.

Each Prefect task wraps a whole Ray job (never Prefect inside Ray workers). Retries sit only
around I/O and cluster calls that may fail transiently (pipelines/retry.py decides which
failures are); the shard job is deterministic, so a retry rewrites the same files.
"""

from __future__ import annotations

import datetime as dt
import sys

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from pipelines import ray_runtime
from pipelines.datasets import read_manifest, write_manifest
from pipelines.prepare import job
from pipelines.prepare.ids_job import run_tokenize_job
from pipelines.prepare.plan import Plan, PreparePlan, PrepareRequest, plan
from pipelines.prepare.report import counts_markdown
from pipelines.retry import io_task_options
from pipelines.settings import Settings, run_settings
from pipelines.storage import Storage, basename
from s2s_core.data.config import PrepareConfig
from s2s_core.errors import InputError


@task
def fingerprint(storage: Storage, plan: Plan) -> list[dict]:
    return job.fingerprint_inputs(storage, plan)


@task
def shard_job(storage: Storage, plan: Plan, config: PrepareConfig, output: str):
    return job.run_shard_job(storage, plan, config, output, sys.stderr)


@task
def tokenizer_job(storage: Storage, output: str, train_paths: list[str], config: PrepareConfig) -> dict:
    return ray_runtime.get(job.train_tokenizer.remote(storage, output, train_paths, config))


@task
def reuse_tokenizer(storage: Storage, output: str, source: str) -> dict:
    return job.copy_tokenizer(storage, output, source)


@task
def token_id_job(storage: Storage, output: str, manifest: dict) -> dict:
    return run_tokenize_job(storage, output, manifest, sys.stderr)


def _run_name() -> str:
    from prefect.runtime import flow_run
    output = flow_run.parameters.get("output", "dataset")
    return f"prepare-{basename(output) or 'dataset'}-{dt.date.today():%Y%m%d}"


@flow(name="prepare_corpus", flow_run_name=_run_name)
def prepare_corpus(inputs: list[str], output: str, valid_inputs: list[str] | None = None,
                   test_inputs: list[str] | None = None, config_file: str | None = None,
                   overrides: list[str] | None = None, overwrite: bool = False, ray_address: str | None = None) -> dict:
    """Prepare corpora into `output` (see `PrepareRequest` for the parameters); returns the
    manifest (the existing one if up to date)."""
    request = PrepareRequest(inputs=inputs, output=output, valid_inputs=valid_inputs or [],
                             test_inputs=test_inputs or [], config_file=config_file, overrides=overrides or [],
                             overwrite=overwrite, ray_address=ray_address)
    settings = run_settings(ray_address)
    storage = Storage(settings.s3)
    return run_prepare(settings, storage, plan(storage, request), overwrite)


def run_prepare(settings: Settings, storage: Storage, planned: PreparePlan, overwrite: bool) -> dict:
    logger = get_run_logger()
    config, output = planned.config, planned.output
    ray_runtime.ensure_ray(settings)
    io = io_task_options(settings)
    fingerprints = fingerprint.with_options(**io)(storage, planned.inputs)
    new_id = job.dataset_id(fingerprints, config)
    existing = job.claim_output(storage, output, new_id, overwrite)
    if existing is not None:
        logger.info("%s already holds this dataset (%s): nothing to do", output, new_id[:12])
        print(f"{output} already holds this dataset ({new_id[:12]}): nothing to do", file=sys.stderr)
        return existing
    maps, shards, rejects = shard_job(storage, planned.inputs, config, output)
    manifest = job.build_manifest(new_id, fingerprints, config, maps, shards, rejects, None, planned.inputs)
    if config.tokenizer.reuse:
        manifest["tokenizer"] = reuse_tokenizer.with_options(**io)(storage, output, config.tokenizer.reuse)
    elif config.tokenizer.enabled:
        train_paths = [f["path"] for f in manifest["shards"]["train"]]
        manifest["tokenizer"] = tokenizer_job.with_options(**io)(storage, output, train_paths, config)
    if manifest["tokenizer"]:  # training reads token ids: tokenize once, here
        manifest["token_ids"] = token_id_job.with_options(**io)(storage, output, manifest)
    write_manifest(storage, output, manifest)
    create_markdown_artifact(counts_markdown(manifest, output), key="prepare-counts",
                             description=f"prepare_corpus -> {output}")
    return manifest


@flow(name="tokenize_dataset", flow_run_name="tokenize-{data}")
def tokenize_dataset(data: str, ray_address: str | None = None) -> dict:
    """Add token-id shards to a dataset prepared before they existed (`s2s prepare
    --tokenize-only`); returns the updated manifest.

    Raises:
        InputError: `data` is not a prepared dataset, or has no tokenizer.
    """
    settings = run_settings(ray_address)
    storage = Storage(settings.s3)
    manifest = read_manifest(storage, data)
    if not (manifest.get("tokenizer") or {}).get("files"):
        raise InputError(data, "the dataset has no tokenizer to make token ids with (prepare it with "
                               "tokenizer.enabled=true)")
    ray_runtime.ensure_ray(settings)
    manifest["token_ids"] = token_id_job.with_options(**io_task_options(settings))(storage, data, manifest)
    write_manifest(storage, data, manifest)
    return manifest
