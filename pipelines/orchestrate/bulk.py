"""Prefect flow `bulk_submission`: a recorded submission (`s2s submit`), run as a bulk job.

The bulk stage knows nothing of submissions: this flow claims the submission for its own
flow run (so the nightly flow leaves it alone while it is live), runs `bulk_generate` as a
subflow with the same parameters, and records the outcome on the submission. The
deployments `bulk-translate` and `bulk-summarize` (deploy/prefect.yaml) point here.
"""

from __future__ import annotations

from prefect import flow

from pipelines.generate.flow import bulk_generate, run_name
from pipelines.orchestrate.runs import live_run
from pipelines.orchestrate.submissions import Registry
from pipelines.settings import run_settings
from pipelines.storage import Storage


def _run_name() -> str:
    from prefect.runtime import flow_run
    return run_name(flow_run.parameters.get("task", "generate"), flow_run.parameters.get("input", ""))


@flow(name="bulk_submission", flow_run_name=_run_name)
def bulk_submission(task: str, model: str, input: str, output: str, column: str = "source",  # noqa: A002
                    id_column: str | None = None, workers: int = 1, cpus_per_worker: float = 1.0,
                    gpus_per_worker: float = 0.0, config_file: str | None = None, overrides: list[str] | None = None,
                    overwrite: bool = False, unit_mb: float = 32.0, submission: str | None = None,
                    ray_address: str | None = None, target_lang_column: str | None = None) -> dict:
    """`bulk_generate` with these parameters; with `submission`, that submission is claimed by
    this run first and marked done (or failed, with the error's first line) after it."""
    from prefect.runtime import flow_run

    settings = run_settings(ray_address)
    registry = Registry(Storage(settings.s3), settings.state) if submission else None
    if registry and submission:
        registry.claim(submission, str(flow_run.id), live_run)
    try:
        summary = bulk_generate(task=task, model=model, input=input, output=output, column=column,
                                id_column=id_column, workers=workers, cpus_per_worker=cpus_per_worker,
                                gpus_per_worker=gpus_per_worker, config_file=config_file, overrides=overrides,
                                overwrite=overwrite, unit_mb=unit_mb, ray_address=ray_address,
                                target_lang_column=target_lang_column)
    except BaseException as err:
        if registry and submission:
            registry.mark(submission, "failed", error=first_line(err))
        raise
    if registry and submission:
        registry.mark(submission, "done", rows_out=summary["rows_out"])
    return summary


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
