"""Bulk jobs on a real 2-node Ray cluster on this machine: two `ray start` nodes with their own
ports and temp dirs and token authentication on, reached by a driver that connects by address
(`s2s --ray-address`, a subprocess). The actors spread over both nodes, a node lost mid-job
leaves its units to the other, and a driver without the cluster's token gets one line saying
how to provide it."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO
from tests.pipelines.conftest import sample_pairs
from tests.pipelines.test_generate import output_rows, success
from tests.pipelines.test_train import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

RAY = str(Path(sys.executable).parent / "ray")
TOKEN = secrets.token_hex(32)  # this cluster's own token: the user's ~/.ray/auth_token is left alone
ROWS, UNITS = 2000, 100


@dataclass
class Node:
    """One `ray start --block` and what it started. Its GCS, raylet and agents are its children
    and share its process group; Ray's worker processes are children of the raylet with groups
    of their own. All are found as its descendants and stopped by pid."""

    name: str
    leader: subprocess.Popen
    log: Path
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    def processes(self) -> list[psutil.Process]:
        """Its live processes (leader, GCS, raylet, agents, workers); every one is remembered."""
        try:
            leader = psutil.Process(self.leader.pid)
            found = [leader, *leader.children(recursive=True)]
        except psutil.NoSuchProcess:
            found = []
        self.seen.update((p.pid, p) for p in found)
        return [p for p in self.seen.values() if _alive(p)]

    def node_id(self) -> str:
        for process in self.processes():
            for arg in process.cmdline():
                if arg.startswith("--node_id=") and Path(process.cmdline()[0]).name == "raylet":
                    return arg.removeprefix("--node_id=")
        raise AssertionError(f"no raylet for node {self.name}")

    def kill(self) -> None:
        """SIGKILL every process of the node, like a lost machine (the leader first, so that it
        does not react), then whatever else is left in its process group."""
        for process in self.processes():
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        try:
            os.killpg(self.leader.pid, signal.SIGKILL)  # its own group: started with a new session
        except ProcessLookupError:
            pass
        self.leader.wait(timeout=30)


@dataclass
class Cluster:
    address: str
    head: Node
    second: Node

    def env(self, **extra: str) -> dict[str, str]:
        """A driver's environment: the standard Ray token settings and the test Prefect API."""
        from prefect.settings import PREFECT_API_URL

        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(PYTHONPATH=str(REPO), PREFECT_API_URL=PREFECT_API_URL.value(), RAY_AUTH_MODE="token",
                   RAY_AUTH_TOKEN=TOKEN, RAY_USAGE_STATS_ENABLED="0")
        return {**env, **extra}


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start_node(name: str, root: Path, env: dict[str, str], *args: str) -> Node:
    """`ray start --block` for one node with 1 CPU; returns once the node is registered."""
    log = root / f"{name}.log"
    command = [RAY, "start", "--block", "--num-cpus", "1", "--temp-dir", str(root / name),
               "--object-store-memory", str(100 << 20), "--min-worker-port", "0", "--max-worker-port", "0",
               "--disable-usage-stats", *args]
    with open(log, "wb") as out:
        leader = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    node = Node(name, leader, log)
    wait_for(lambda: "Ray runtime started" in log.read_text() or leader.poll() is not None, 120, f"Ray node {name}")
    assert leader.poll() is None, log.read_text()[-3000:]
    node.processes()
    return node


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head node and a second node (resource `second_node`), 1 CPU each, their own ports and
    temp dirs (short: Ray's socket paths must stay under 108 bytes), token authentication on.
    Stopped by pid at the end, so other Ray instances on the machine are left alone."""
    root = Path(tempfile.mkdtemp(prefix="s2s-ray-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO))
    port, *head_ports = free_ports(9)
    second_ports = free_ports(6)
    nodes: list[Node] = []
    try:
        nodes.append(start_node("head", root, env, "--head", "--port", str(port), "--include-dashboard", "false",
                                *_port_flags(head_ports[:6]), "--dashboard-port", str(head_ports[6]),
                                "--ray-client-server-port", str(head_ports[7])))
        nodes.append(start_node("second", root, env, "--address", f"127.0.0.1:{port}",
                                "--resources", json.dumps({"second_node": 1}), *_port_flags(second_ports)))
        yield Cluster(f"127.0.0.1:{port}", *nodes)
    finally:
        for node in reversed(nodes):
            node.kill()
        shutil.rmtree(root, ignore_errors=True)


def _port_flags(ports: list[int]) -> list[str]:
    names = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")
    return [arg for name, port in zip(names, ports) for arg in (name, str(port))]


@pytest.fixture(scope="module")
def cluster_units(tmp_path_factory) -> tuple[Path, list[str], str]:
    """2,000 real sentences in one row group, cut into 100 row-range units of 20 (a few tenths
    of a second each): long enough a job to lose a node in the middle of it. Returns the
    folder, the ids and the --unit-mb that cuts it so."""
    folder = tmp_path_factory.mktemp("cluster-units")
    ids = [f"s{i}" for i in range(ROWS)]
    pq.write_table(pa.table({"id": ids, "source": [s for s, _ in sample_pairs("train")[:ROWS]]}), folder / "in.parquet")
    group_bytes = pq.read_metadata(folder / "in.parquet").row_group(0).total_byte_size
    return folder, ids, f"{group_bytes / UNITS / (1 << 20):.9f}"


def translate_command(cluster: Cluster, package: Path, units: tuple[Path, list[str], str], output: Path) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", "--ray-address", cluster.address, "translate",
            "--model", str(package), "--input", str(units[0]), "--output", str(output), "--id-column", "id",
            "--unit-mb", units[2], "--workers", "2", "max_len_a=0", "max_len_b=30", "beam_size=4"]


def test_a_bulk_job_spreads_over_both_nodes(cluster, tiny_package, cluster_units, tmp_path):
    output = tmp_path / "out"
    done = subprocess.run(translate_command(cluster, tiny_package, cluster_units, output), cwd=REPO,
                          env=cluster.env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    nodes = {m["node_id"] for m in _markers(output)}
    assert nodes == {cluster.head.node_id(), cluster.second.node_id()}
    assert sorted(r["id"] for r in output_rows(str(output))) == sorted(cluster_units[1])
    assert success(str(output))["rows_out"] == ROWS and success(str(output))["units"] == UNITS


def test_a_driver_without_the_token_gets_one_line(cluster, tiny_package, cluster_units, tmp_path):
    """Ray retries a refused connection for about 20 s; RAY_gcs_server_port_wait_time_s (Ray's
    own setting) shortens that here."""
    command = translate_command(cluster, tiny_package, cluster_units, tmp_path / "out")
    quick = {"RAY_gcs_server_port_wait_time_s": "1"}
    wrong = subprocess.run(command, cwd=REPO, env=cluster.env(RAY_AUTH_TOKEN="0" * 64, **quick),
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 6, wrong.stderr[-3000:]
    assert wrong.stderr.strip().splitlines()[-1] == (
        f"error: the Ray cluster at {cluster.address} refused this process's authentication token: provide the "
        "cluster's token (RAY_AUTH_TOKEN, a file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token)")
    no_mode = cluster.env(**quick)
    del no_mode["RAY_AUTH_MODE"]
    unset = subprocess.run(command, cwd=REPO, env=no_mode, capture_output=True, text=True, timeout=120)
    assert unset.returncode == 6, unset.stderr[-3000:]
    assert unset.stderr.strip().splitlines()[-1].startswith(
        f"error: the Ray cluster at {cluster.address} requires token authentication: set RAY_AUTH_MODE=token")
    assert TOKEN not in wrong.stderr + unset.stderr + wrong.stdout + unset.stdout


def test_a_lost_node_leaves_its_units_to_the_other(cluster, tiny_package, cluster_units, tmp_path):
    """Runs last: the second node stays dead. Its actor's restart cannot be placed (the head's
    one CPU is taken), so its units must go back to the head's actor, not wait for it."""
    output = tmp_path / "out"
    second = cluster.second.node_id()
    with open(tmp_path / "driver.log", "wb") as log:
        run = subprocess.Popen(translate_command(cluster, tiny_package, cluster_units, output), cwd=REPO,
                               env=cluster.env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: sum(m["node_id"] == second for m in _markers(output)) >= 2 or run.poll() is not None,
                     240, "two units committed on the second node")
            assert run.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            cluster.second.kill()
            before = {m["unit"] for m in _markers(output)}  # nothing of the second node's lands after this
            assert run.wait(timeout=240) == 0, (tmp_path / "driver.log").read_text()[-3000:]
        finally:
            if run.poll() is None:
                run.kill()
    assert sorted(r["id"] for r in output_rows(str(output))) == sorted(cluster_units[1])  # each once, none lost
    summary = success(str(output))
    assert summary["units"] == UNITS and summary["rows_out"] == ROWS
    head = cluster.head.node_id()
    final = {m["unit"]: m["node_id"] for m in _markers(output)}
    requeued = re.findall(r"unit (\S+) back in the queue: its worker was lost", (tmp_path / "driver.log").read_text())
    # The units the lost node held were done again by the head's actor (a unit it had just
    # finished unknown to the driver is rewritten, same bytes), and so was every unit left.
    assert requeued and all(final[unit] == head for unit in requeued)
    assert {node for unit, node in final.items() if unit not in before} == {head}


def _markers(output: Path) -> list[dict]:
    """The commit markers there now (one being renamed into place may be missed)."""
    found = []
    for path in (output / "_commits").glob("*.json") if (output / "_commits").exists() else []:
        try:
            found.append(json.loads(path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            pass
    return found
