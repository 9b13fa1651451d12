"""`s2s serve`, `s2s submit` and `s2s status`: the command-line side of orchestration.

Everything a submission needs is checked before anything is recorded or created: the input
(readable, with its column), the model package, the output (free, or holding this same job),
the Ray address, the Prefect API and the deployment. So a failed `submit` leaves nothing
half-submitted.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

from pipelines.orchestrate import promotion, runs
from pipelines.orchestrate.serve import recorded_api, serve
from pipelines.orchestrate.submissions import Registry, Submission, submission_id
from pipelines.settings import Settings, use_prefect_api
from pipelines.storage import Storage, absolute
from s2s_core.config import to_dict
from s2s_core.errors import ConfigError, OutputError

DEPLOYMENTS = {"translate": "bulk_submission/bulk-translate", "summarize": "bulk_submission/bulk-summarize"}
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
EXIT_RUN_FAILED = 8
SCHEDULED_HINT_S = 60


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the Prefect deployments (nightly schedule, bulk, train) in this process",
                       description="Serves every deployment of --deployments with its schedules until Ctrl-C. "
                                   "Without PREFECT_API_URL it starts a local Prefect server first (state in S2S_STATE).")
    p.add_argument("--deployments", default="deploy/prefect.yaml", metavar="FILE", help="default deploy/prefect.yaml")
    p.add_argument("--port", type=int, default=4200, help="local Prefect server port (a free one if taken)")
    p.set_defaults(run=_run_serve)
    p = sub.add_parser("submit", help="submit a corpus for bulk translation or summarization (a flow run)",
                       description="Creates a flow run of the bulk deployment for INPUT -> OUTPUT, recorded as a "
                                   "submission so the nightly flow can pick it up if that run fails.")
    p.add_argument("--input", required=True, metavar="URI", help="dataset: file, directory/prefix or glob")
    p.add_argument("--output", required=True, metavar="URI", help="where the results go")
    p.add_argument("--model", metavar="URI", help="model package; default: the promoted model")
    p.add_argument("--task", choices=sorted(DEPLOYMENTS), default="translate")
    p.add_argument("--column", default="source", help="text column/field; default source")
    p.add_argument("--id-column", metavar="COLUMN", help="row id column; default file:row")
    p.add_argument("--target-lang-column", metavar="COLUMN",
                   help="column of each row's target language code (multilingual models); else target_lang=CODE")
    p.add_argument("--deployment", metavar="FLOW/NAME", help="default bulk_submission/bulk-<task>")
    p.add_argument("--wait", action="store_true", help="wait for the run to finish and report it")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="decoding options, e.g. beam_size=5")
    p.set_defaults(run=_run_submit)
    p = sub.add_parser("status", help="state and progress of flow runs and submissions")
    p.add_argument("run_id", nargs="?", metavar="RUN_ID", help="a flow run id or submission id; default: recent ones")
    p.set_defaults(run=_run_status)


def _run_serve(args: argparse.Namespace, settings: Settings) -> int:
    return serve(settings, args.deployments, args.port)


def connect_api(settings: Settings, storage: Storage) -> str:
    """Point Prefect at PREFECT_API_URL or the running `s2s serve`; check it answers."""
    api_url = settings.prefect_api_url or recorded_api(storage, settings.state)
    if api_url is None:
        raise runs.OrchestrationError("no Prefect API: start `s2s serve` (it records its address in S2S_STATE) "
                                      "or set PREFECT_API_URL")
    use_prefect_api(api_url)
    runs.check_api(api_url)
    return api_url


def check_ray_address(address: str) -> None:
    """A cluster address must at least accept a connection (a full connect happens in the run)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            return
    except (OSError, ValueError):
        raise runs.ClusterUnreachable(f"cannot reach the Ray cluster at {address}: check --ray-address / RAY_ADDRESS "
                                      "(host:port of the head's GCS, usually 6379)") from None


def _run_submit(args: argparse.Namespace, settings: Settings) -> int:
    storage = Storage(settings.s3)
    connect_api(settings, storage)
    deployment = runs.deployment(args.deployment or DEPLOYMENTS[args.task])
    submission = _checked_submission(args, settings, storage, deployment.parameters or {})
    registry = Registry(storage, settings.state)
    _refuse_duplicate(registry.get(submission.id))
    from pipelines.generate.flow import run_name

    registry.save(submission)
    try:
        run = runs.create_run(deployment.id, {**submission.bulk_parameters(), "ray_address": settings.ray_address},
                              name=run_name(args.task, submission.input))
    except BaseException:
        registry.delete(submission.id)  # nothing half-submitted
        raise
    registry.set_run(submission.id, str(run.id))
    print(f"submitted {submission.id}: flow run {run.name} ({run.id}); results in {submission.output} "
          "(complete when _SUCCESS appears)")
    return _wait(run.id) if args.wait else 0


def _checked_submission(args: argparse.Namespace, settings: Settings, storage: Storage, defaults: dict) -> Submission:
    """The submission, once its input, model, options, output and Ray address are checked; the
    decoding options are the deployment's `config_file` overlaid by the overrides, as in the run."""
    from pipelines.generate.plan import BulkRequest, plan

    model = args.model or (promotion.current(storage, settings.state) or {}).get("model")
    if model is None:
        raise ConfigError(["`--model` is required: no model has been promoted yet (the nightly flow promotes one)"])
    output, unit_mb = absolute(args.output), float(defaults.get("unit_mb", 32.0))
    planned = plan(storage, BulkRequest(task=args.task, model=model, input=args.input, output=output,
                                        column=args.column, id_column=args.id_column, unit_mb=unit_mb,
                                        target_lang_column=args.target_lang_column,
                                        config_file=project_path(defaults.get("config_file")),
                                        overrides=args.overrides))
    config = planned.spec.config
    if settings.ray_address:
        check_ray_address(settings.ray_address)
    # Pinned: every run for this submission decodes exactly as checked here.
    options = [f"{key}={json.dumps(value)}" for key, value in to_dict(config).items()]
    return Submission(id=submission_id(args.task, output), task=args.task, model=absolute(model),
                      input=absolute(args.input), output=output, column=args.column, id_column=args.id_column,
                      target_lang_column=args.target_lang_column,
                      options=options, unit_mb=unit_mb)


def project_path(path: str | None) -> str | None:
    """A deployment's relative config path (relative to the project directory where `serve`
    runs): as given if it exists here, else under this installation's project directory."""
    if path is None or os.path.isabs(path) or os.path.exists(path):
        return path
    candidate = Path(__file__).resolve().parents[2] / path
    return str(candidate) if candidate.exists() else path


def _refuse_duplicate(existing: Submission | None) -> None:
    if existing is None or existing.state in ("failed", "cancelled"):
        return
    if existing.state == "done":
        raise OutputError(existing.output, f"already holds the results of submission {existing.id}: "
                                           "choose another --output")
    if runs.live_run(existing.flow_run_id):
        raise OutputError(existing.output, f"is already the output of submission {existing.id} (flow run "
                                           f"{existing.flow_run_id}, not finished): see `s2s status {existing.id}`")


def _wait(flow_run_id) -> int:
    last, since = None, time.monotonic()
    while True:
        run = runs.read_run(flow_run_id)
        state = run.state.type.value if run.state else "UNKNOWN"
        if state != last:
            print(f"{run.name}: {run.state.name if run.state else state}", file=sys.stderr, flush=True)
            last, since = state, time.monotonic()
        elif state == "SCHEDULED" and since is not None and time.monotonic() - since > SCHEDULED_HINT_S:
            print(f"{run.name}: still waiting for a runner after {SCHEDULED_HINT_S} s: is `s2s serve` (or a worker) "
                  "running?", file=sys.stderr, flush=True)
            since = None
        if state in TERMINAL:
            if state == "COMPLETED":
                return 0
            print(f"error: flow run {run.name} ended {state.lower()}: {run.state.message or ''}".rstrip(": "),
                  file=sys.stderr)
            return EXIT_RUN_FAILED
        time.sleep(2)


def _run_status(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.orchestrate.report import overview, run_report

    storage = Storage(settings.s3)
    connect_api(settings, storage)
    registry = Registry(storage, settings.state)
    print(run_report(storage, registry, args.run_id) if args.run_id else overview(registry))
    return 0
