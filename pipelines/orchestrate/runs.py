"""Talking to the Prefect API: deployments, flow runs and their states (sync client)."""

from __future__ import annotations

from typing import Any

from s2s_core.errors import S2SError

LIVE = {"SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"}


class OrchestrationError(S2SError):
    """The Prefect API or a deployment cannot be used as asked."""

    exit_code = 7


def client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def check_api(api_url: str) -> None:
    """Raise OrchestrationError when the Prefect API at `api_url` does not answer."""
    with client() as prefect:
        failure = prefect.api_healthcheck()
    if failure is not None:
        raise OrchestrationError(f"cannot reach the Prefect API at {api_url} ({type(failure).__name__}): start "
                                 "`s2s serve`, or set PREFECT_API_URL to a running server")


def deployment(name: str) -> Any:
    """Deployment `flow/deployment` (id, parameters...), or OrchestrationError naming the known ones."""
    from prefect.exceptions import ObjectNotFound

    with client() as prefect:
        try:
            return prefect.read_deployment_by_name(name)
        except ObjectNotFound:
            known = sorted(d.name for d in prefect.read_deployments())
            raise OrchestrationError(f"no deployment {name!r} on the Prefect API (known: {', '.join(known) or 'none'}); "
                                     "is `s2s serve` running with deploy/prefect.yaml?") from None


def live_run(flow_run_id: str | None) -> bool:
    """True when that flow run exists and is scheduled, pending, running or paused."""
    if not flow_run_id:
        return False
    from prefect.exceptions import ObjectNotFound

    try:
        with client() as prefect:
            run = prefect.read_flow_run(flow_run_id)
    except ObjectNotFound:
        return False
    return run.state is not None and run.state.type.value in LIVE


class ClusterUnreachable(S2SError):
    """The Ray address given cannot be reached."""

    exit_code = 6


def create_run(deployment: Any, parameters: dict, name: str) -> Any:
    """A new flow run of `deployment` (an id) with `parameters`; the runner serving it starts it."""
    with client() as prefect:
        return prefect.create_flow_run_from_deployment(deployment, parameters=parameters, name=name)


def read_run(flow_run_id: Any) -> Any:
    from prefect.exceptions import ObjectNotFound

    try:
        with client() as prefect:
            return prefect.read_flow_run(flow_run_id)
    except (ObjectNotFound, ValueError):
        raise OrchestrationError(f"no flow run {flow_run_id!s} on the Prefect API") from None


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
