"""deploy/prefect.yaml deploys as is with `prefect deploy --all` against a real Prefect API, and
its schedules, parameters and entrypoints are the ones `s2s serve` serves."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from pipelines.orchestrate.serve import flow_of, load_deployments, runner_deployment
from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]
PREFECT_YAML = REPO / "deploy" / "prefect.yaml"


def prefect_cli(*args: str) -> subprocess.CompletedProcess:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "prefect", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_prefect_deploy_all_creates_every_deployment_with_its_schedule():
    from prefect.client.orchestration import get_client

    created = prefect_cli("work-pool", "create", "s2s", "--type", "process", "--overwrite")
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = prefect_cli("--no-prompt", "deploy", "--all", "--prefect-file", "deploy/prefect.yaml")
    assert deployed.returncode == 0, (deployed.stdout + deployed.stderr)[-3000:]
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    with get_client(sync_client=True) as client:
        for entry in spec["deployments"]:
            flow_name = flow_of(entry["entrypoint"]).name
            deployment = client.read_deployment_by_name(f"{flow_name}/{entry['name']}")
            assert deployment.entrypoint == entry["entrypoint"] and deployment.work_pool_name == "s2s"
            assert {k: deployment.parameters[k] for k in entry.get("parameters", {})} == entry.get("parameters", {})
            limit = deployment.global_concurrency_limit
            assert (limit.limit if limit else None) == entry.get("concurrency_limit"), entry["name"]
            crons = sorted(s.schedule.cron for s in deployment.schedules)
            assert crons == sorted(s["cron"] for s in entry.get("schedules", [])), entry["name"]
    assert [s["cron"] for s in spec["deployments"][0]["schedules"]] == ["0 2 * * *"]


def test_serve_builds_the_same_deployments_and_their_parameters_validate():
    entries = load_deployments(str(PREFECT_YAML))
    assert {e["name"] for e in entries} == {"nightly", "bulk-translate", "bulk-summarize", "train"}
    for entry in entries:
        deployment = runner_deployment(entry)
        assert deployment.entrypoint == entry["entrypoint"] and deployment.parameters == entry.get("parameters", {})
        # Every parameter named in the file is one the flow takes, and every path in it exists.
        assert set(entry.get("parameters", {})) <= set(deployment._parameter_openapi_schema.properties)
        for value in entry.get("parameters", {}).values():
            if isinstance(value, str) and value.startswith("deploy/"):
                assert (REPO / value).is_file(), value
    (nightly,) = [runner_deployment(e) for e in entries if e["name"] == "nightly"]
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"] and nightly.concurrency_limit == 1


def test_runs_left_running_by_a_killed_serve_are_marked_crashed():
    """What a restarted `serve` does first: a run still RUNNING from before has no process left."""
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    from pipelines.orchestrate.runs import crash_leftover_runs

    (entry,) = [e for e in load_deployments(str(PREFECT_YAML)) if e["name"] == "bulk-translate"]
    deployment_id = runner_deployment(entry).apply()
    with get_client(sync_client=True) as client:
        orphan = client.create_flow_run_from_deployment(deployment_id, parameters={"model": "m", "input": "i",
                                                                                   "output": "o"})
        client.set_flow_run_state(orphan.id, Running(), force=True)
        assert crash_leftover_runs([deployment_id]) == 1
        assert client.read_flow_run(orphan.id).state.type.value == "CRASHED"
        assert crash_leftover_runs([deployment_id]) == 0
