"""`s2s serve`, `s2s submit` and `s2s status` as a user runs them: real processes, a real local
Prefect server started by `serve`, its scheduler firing a cron deployment, a real local Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.local_s3 import free_ports
from pipelines.orchestrate.submissions import submission_id
from tests.conftest import REPO
from tests.pipelines.conftest import sample_pairs
from tests.pipelines.test_generate import output_rows, success
from tests.pipelines.test_train import wait_for

pytestmark = pytest.mark.slow

FAST = ["max_len_a=0", "max_len_b=6", "beam_size=2"]


class Served:
    """A running `s2s serve` (its state folder, API address and environment for `s2s` calls)."""

    def __init__(self, state: Path, env: dict, process: subprocess.Popen, log: Path) -> None:
        self.state, self.env, self.process, self.log = state, env, process, log
        self.api_url = json.loads((state / "serve.json").read_text())["api_url"]

    def s2s(self, *args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)

    def flow_runs(self, name_like: str) -> list[dict]:
        answer = httpx.post(f"{self.api_url}/flow_runs/filter", json={"flow_runs": {"name": {"like_": name_like}}})
        answer.raise_for_status()
        return answer.json()


def deployments_file(folder: Path) -> Path:
    """deploy/prefect.yaml with the nightly schedule every minute and its drops folder empty."""
    spec = yaml.safe_load((REPO / "deploy" / "prefect.yaml").read_text())
    nightly_config = folder / "nightly.yaml"
    nightly_config.write_text(yaml.safe_dump({"drops": str(folder / "drops"), "root": str(folder / "root")}))
    for deployment in spec["deployments"]:
        if deployment["name"] == "nightly":
            deployment["schedules"] = [{"cron": "* * * * *", "timezone": "UTC"}]
            deployment["parameters"] = {"config_file": str(nightly_config)}
    path = folder / "prefect.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    state = folder / "state"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")}
    env.update(S2S_STATE=str(state), S2S_LOCAL_RAY_CPUS="2", PYTHONPATH=str(REPO),
               PREFECT_HOME=str(folder / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    log = folder / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--deployments",
                                    str(deployments_file(folder)), "--port", str(free_ports(1)[0])],
                                   cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: b"serving " in log.read_bytes() or process.poll() is not None, 180, "s2s serve")
        assert process.poll() is None, log.read_text()[-3000:]
        yield Served(state, env, process, log)
    finally:
        _stop(process, state)


def _stop(process: subprocess.Popen, state: Path) -> None:
    """SIGTERM `serve` (it stops its runner, then its server); then make sure both are gone."""
    record = json.loads((state / "serve.json").read_text()) if (state / "serve.json").exists() else {}
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    server_pid = record.get("server_pid")
    if server_pid and psutil.pid_exists(server_pid):
        os.killpg(server_pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("submitted")
    ids = [f"r{i}" for i in range(40)]
    pq.write_table(pa.table({"id": ids, "source": [s for s, _ in sample_pairs("test")[:40]]}), folder / "in.parquet")
    return folder / "in.parquet", ids


def test_submit_wait_translates_the_corpus_and_status_reports_it(served, corpus, tiny_package, tmp_path):
    output = tmp_path / "out"
    done = served.s2s("submit", "--model", str(tiny_package), "--input", str(corpus[0]), "--output", str(output),
                      "--id-column", "id", "--wait", *FAST)
    assert done.returncode == 0, done.stderr[-3000:]
    sub_id = submission_id("translate", str(output))
    assert f"submitted {sub_id}: flow run translate-in-" in done.stdout and "Completed" in done.stderr
    assert sorted(r["id"] for r in output_rows(str(output))) == sorted(corpus[1])
    assert success(str(output))["rows_out"] == 40
    record = json.loads((served.state / "submissions" / f"{sub_id}.json").read_text())
    assert record["state"] == "done" and record["rows_out"] == 40 and record["flow_run_id"]

    status = served.s2s("status", sub_id)
    assert status.returncode == 0, status.stderr
    assert "Completed" in status.stdout and "complete, 40 rows (0 errors)" in status.stdout
    unknown = served.s2s("status", "sub-000000000000")
    assert unknown.returncode == 7 and unknown.stderr.strip() == "error: no submission or flow run sub-000000000000"
    overview = served.s2s("status")
    assert f"{sub_id}  done" in overview.stdout and "translate-in-" in overview.stdout

    again = served.s2s("submit", "--model", str(tiny_package), "--input", str(corpus[0]), "--output", str(output),
                       "--id-column", "id", *FAST)
    assert again.returncode == 4 and f"already holds the results of submission {sub_id}" in again.stderr


def test_submit_refuses_bad_input_in_one_line_and_records_nothing(served, corpus, tiny_package, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "report.csv").write_text("someone else's file\n")
    good = ["--model", str(tiny_package), "--input", str(corpus[0]), "--output", str(tmp_path / "new")]
    closed_port = free_ports(1)[0]
    cases = [  # (arguments, extra environment, exit code, message)
        (["--model", str(tiny_package), "--input", str(tmp_path / "missing.parquet"), "--output", str(tmp_path / "a")],
         {}, 3, "missing.parquet: not found"),
        (["--model", str(tiny_package), "--input", str(corpus[0]), "--output", str(taken)], {}, 4,
         "is not empty and holds no bulk job"),
        (["--model", str(tmp_path / "nowhere"), "--input", str(corpus[0]), "--output", str(tmp_path / "b")], {}, 3,
         "is not a model package"),
        ([*good, "--deployment", "bulk_generate/nope"], {}, 7, "no deployment 'bulk_generate/nope'"),
        (good, {"PREFECT_API_URL": f"http://127.0.0.1:{closed_port}/api"}, 7, "cannot reach the Prefect API"),
        (["--ray-address", f"127.0.0.1:{closed_port}", "submit", *good], {}, 6, "cannot reach the Ray cluster"),
    ]
    before = sorted(p.name for p in (served.state / "submissions").glob("*.json"))
    runs_before = len(served.flow_runs("translate-"))
    for args, env, code, message in cases:
        command = args if args[0] == "--ray-address" else ["submit", *args]
        result = served.s2s(*command, env=env, timeout=120)
        assert (result.returncode, result.stdout) == (code, ""), (command, result.stderr[-2000:])
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (command, result.stderr)
    assert sorted(p.name for p in (served.state / "submissions").glob("*.json")) == before
    assert len(served.flow_runs("translate-")) == runs_before


def test_a_cron_deployment_fires_and_runs(served):
    """The nightly deployment, on a one-minute cron, is scheduled by the server and run by serve.
    After the submit tests (served since `serve` started): its first run fires at a minute
    boundary, up to a minute away, and is usually done by now instead of being waited for; every
    run so far, beside the submissions, must not have failed."""
    def nightly_done() -> bool:
        states = [run["state_type"] for run in served.flow_runs("nightly-")]
        assert "FAILED" not in states and "CRASHED" not in states, served.log.read_text()[-3000:]
        return "COMPLETED" in states

    wait_for(nightly_done, 200, "a nightly run fired by its cron schedule")
    (run,) = [r for r in served.flow_runs("nightly-") if r["state_type"] == "COMPLETED"][:1]
    assert run["deployment_id"] is not None and run["auto_scheduled"] is True


def test_serve_stops_its_runner_then_its_server(served):
    """Last in this module: SIGTERM ends serve with 0, its local server and its record with it."""
    server_pid = json.loads((served.state / "serve.json").read_text())["server_pid"]
    assert psutil.pid_exists(server_pid)
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=60) == 0, served.log.read_text()[-2000:]
    deadline = time.monotonic() + 10
    while psutil.pid_exists(server_pid) and psutil.Process(server_pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the local Prefect server outlived serve"
        time.sleep(0.2)
    assert not (served.state / "serve.json").exists()
