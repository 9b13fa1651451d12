"""Talking to the Prefect API: deployments, flow runs and their states (sync client)."""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from s2s_core.errors import ClusterFailure, OrchestrationFailure

LIVE = {"SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"}


class OrchestrationError(OrchestrationFailure):
    """The Prefect API or a deployment cannot be used as asked."""


def client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def public_url(url: str) -> str:
    """`url` without any `user:password@` part, for messages and records."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))) \
        if parts.hostname else url


def check_api(api_url: str) -> None:
    """Raise OrchestrationError when the Prefect API at `api_url` does not answer."""
    with client() as prefect:
        failure = prefect.api_healthcheck()
    if failure is not None:
        raise OrchestrationError(f"cannot reach the Prefect API at {public_url(api_url)} ({type(failure).__name__}): start "
                                 "`s2s serve`, or set PREFECT_API_URL to a running server")


READY_GRACE_S = 30.0
"""How long `submit` waits for a deployment that exists to be marked served."""


def deployment(name: str) -> Any:
    """Deployment `flow/deployment` (id, parameters...) that a runner or worker is serving.

    Raises:
        OrchestrationError: no such deployment (naming the known ones), or nothing serves it
            (a run created for it would wait forever).
    """
    from prefect.client.schemas.objects import DeploymentStatus
    from prefect.exceptions import ObjectNotFound

    # A runner marks its deployments READY with its first poll, a few seconds after `s2s serve`
    # says it is serving: a submit typed right after it waits for that instead of failing.
    deadline = time.monotonic() + READY_GRACE_S
    while True:
        with client() as prefect:
            try:
                found = prefect.read_deployment_by_name(name)
            except ObjectNotFound:
                known = sorted(d.name for d in prefect.read_deployments())
                raise OrchestrationError(f"no deployment {name!r} on the Prefect API (known: "
                                         f"{', '.join(known) or 'none'}); is `s2s serve` running with "
                                         "deploy/prefect.yaml?") from None
        if found.status == DeploymentStatus.READY:
            return found
        if time.monotonic() > deadline:
            raise OrchestrationError(f"deployment {name!r} exists but no runner or worker is serving it: start "
                                     "`s2s serve` (or a Prefect worker on its work pool)")
        time.sleep(1.0)


def run_state(flow_run_id: str | None) -> str | None:
    """The state type of a flow run ('RUNNING', 'FAILED', ...), None when there is no such run."""
    if not flow_run_id:
        return None
    from prefect.exceptions import ObjectNotFound

    try:
        with client() as prefect:
            run = prefect.read_flow_run(uuid.UUID(str(flow_run_id)))
    except (ObjectNotFound, ValueError):
        return None
    return run.state.type.value if run.state is not None else None


def live_run(flow_run_id: str | None) -> bool:
    """True when that flow run exists and is scheduled, pending, running or paused."""
    return run_state(flow_run_id) in LIVE


class ClusterUnreachable(ClusterFailure):
    """The Ray address given cannot be reached."""


def create_run(deployment: Any, parameters: dict, name: str) -> Any:
    """A new flow run of `deployment` (an id) with `parameters`; the runner serving it starts it."""
    with client() as prefect:
        return prefect.create_flow_run_from_deployment(deployment, parameters=parameters, name=name)


def read_run(flow_run_id: Any) -> Any:
    from prefect.exceptions import ObjectNotFound

    try:
        with client() as prefect:
            return prefect.read_flow_run(uuid.UUID(str(flow_run_id)))
    except (ObjectNotFound, ValueError):
        raise OrchestrationError(f"no submission or flow run {flow_run_id!s}") from None


def crash_leftover_runs(deployment_ids: list[Any]) -> int:
    """Mark runs of these deployments still RUNNING or PENDING as CRASHED; returns how many.

    For a `serve` that owns its server: runs it left RUNNING when it was killed have no process
    any more, and would otherwise look live forever (submissions waiting on them, stuck).
    """
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    if not deployment_ids:
        return 0
    states = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING]))
    with client() as prefect:
        leftovers = prefect.read_flow_runs(flow_run_filter=FlowRunFilter(state=states),
                                           deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=deployment_ids)))
        for run in leftovers:
            prefect.set_flow_run_state(run.id, Crashed(message="its s2s serve process was gone"), force=True)
    return len(leftovers)


def recent_runs(limit: int = 15, scheduled: bool = False) -> list[Any]:
    """The newest flow runs that have left the schedule (newest first), or with `scheduled`
    the next ones still waiting for their time (soonest first)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    states = FlowRunFilterStateType(any_=[StateType.SCHEDULED]) if scheduled else \
        FlowRunFilterStateType(not_any_=[StateType.SCHEDULED])
    sort = FlowRunSort.EXPECTED_START_TIME_ASC if scheduled else FlowRunSort.EXPECTED_START_TIME_DESC
    with client() as prefect:
        return prefect.read_flow_runs(flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=states)),
                                      sort=sort, limit=limit)
