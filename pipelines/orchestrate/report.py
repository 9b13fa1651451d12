"""What `s2s status` prints: recent runs and submissions, or one run with its progress."""

from __future__ import annotations

from pipelines.generate.job import COMMITS, SUCCESS, committed_units
from pipelines.generate.plan import JOB_FILE
from pipelines.orchestrate import runs
from pipelines.orchestrate.submissions import Registry
from pipelines.storage import NotFound, Storage, join


def overview(registry: Registry) -> str:
    """Submissions and the newest flow runs, a line each."""
    lines = ["submissions:"]
    for s in registry.all() or []:
        lines.append(f"  {s.id}  {s.state:<8} {s.task:<9} {s.input} -> {s.output}  (run {s.flow_run_id or '-'})")
    if len(lines) == 1:
        lines.append("  none")
    lines.append("flow runs (newest first):")
    for run in runs.recent_runs():
        state = run.state.name if run.state else "?"
        started = f"started {run.start_time:%Y-%m-%d %H:%M:%S}" if run.start_time else "not started"
        lines.append(f"  {run.id}  {state:<10} {run.name:<40} {started}")
    upcoming = runs.recent_runs(limit=3, scheduled=True)
    lines += ["next scheduled:"] + [f"  {run.id}  {run.name:<40} at {run.expected_start_time:%Y-%m-%d %H:%M} UTC"
                                    for run in upcoming] if upcoming else []
    return "\n".join(lines)


def run_report(storage: Storage, registry: Registry, key: str) -> str:
    """One flow run (by run id, or by the submission id that recorded it): state and progress."""
    submission = registry.get(key) if key.startswith("sub-") else None
    if submission is not None and submission.flow_run_id is None:
        return f"submission {submission.id}: {submission.state}, no flow run yet"
    run = runs.read_run(submission.flow_run_id if submission else key)
    state = run.state.name if run.state else "?"
    lines = [f"flow run {run.name} ({run.id}): {state}"]
    if run.state and run.state.message:
        lines.append(f"  message: {run.state.message.splitlines()[0]}")
    output = (run.parameters or {}).get("output")
    if output:
        lines.append(f"  {bulk_progress(storage, output)}")
    if submission is not None:
        lines.append(f"  submission {submission.id}: {submission.state}" +
                     (f" ({submission.error})" if submission.error else ""))
    return "\n".join(lines)


def bulk_progress(storage: Storage, output: str) -> str:
    """'N of M units committed' (and the row count once `_SUCCESS` exists) for a bulk output."""
    try:
        total = storage.read_json(join(output, JOB_FILE))["units"]
    except NotFound:
        return f"output {output}: not started"
    done = len(committed_units(storage, output))
    try:
        summary = storage.read_json(join(output, SUCCESS))
        return f"output {output}: complete, {summary['rows_out']:,} rows ({summary['error']} errors)"
    except NotFound:
        return f"output {output}: {done} of {total} units committed ({COMMITS}/)"
