"""What bench/bulk_vs_ray_data.py runs the jobs on: a SeaweedFS S3 server that can be stopped and
started again on the same ports and data, a two-node Ray cluster on 127.0.0.1 (token
authentication on, as tests/pipelines/test_cluster.py starts it), and process trees to kill."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from pipelines.local_s3 import PORT_FLAGS, WEED, S3Server, _wait_ready, free_ports

RAY = str(Path(sys.executable).parent / "ray")
TOKEN = secrets.token_hex(32)
"""This bench's own Ray token: every Ray it starts or reaches uses it (the user's file is left alone)."""


def ray_env(**extra: str) -> dict[str, str]:
    """The environment of a Ray process or driver started here: token authentication on, our token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN, RAY_USAGE_STATS_ENABLED="0")
    return {**env, **extra}


def wait_for(condition, timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def tree(pid: int) -> list[psutil.Process]:
    """`pid` and its live descendants."""
    try:
        root = psutil.Process(pid)
        return [p for p in (root, *root.children(recursive=True)) if alive(p)]
    except psutil.NoSuchProcess:
        return []


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and every descendant, like a lost machine (the root first, so it cannot react)."""
    for process in tree(pid):
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


class RestartableS3:
    """`weed mini` on fixed ports and a fixed data directory, so that it can be stopped mid-job and
    started again as the same server (same endpoint, credentials, buckets and objects)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
        self.server = S3Server(endpoint_url=f"http://127.0.0.1:{self.ports['s3.port']}",
                               access_key="bench" + secrets.token_hex(8), secret_key=secrets.token_hex(20))
        self.process: subprocess.Popen | None = None

    def start(self) -> S3Server:
        command = [str(WEED), "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                   "-master.telemetry=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                   *(f"-{flag}={port}" for flag, port in self.ports.items())]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.server.access_key,
               "AWS_SECRET_ACCESS_KEY": self.server.secret_key}
        log = self.data_dir / "weed.log"
        with open(log, "ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.data_dir,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        _wait_ready(self.server, self.process, log)
        return self.server

    def stop(self, hard: bool = False) -> None:
        """SIGKILL (hard: an outage) or SIGTERM, and wait until it is gone."""
        if self.process is None:
            return
        kill_tree(self.process.pid) if hard else self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            kill_tree(self.process.pid)
            self.process.wait()
        self.process = None


@dataclass
class Node:
    """One `ray start --block` and every process it started (remembered, so that a killed
    node's workers are found too)."""

    name: str
    leader: subprocess.Popen
    log: Path
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    def processes(self) -> list[psutil.Process]:
        self.seen.update((p.pid, p) for p in tree(self.leader.pid))
        return [p for p in self.seen.values() if alive(p)]

    def kill(self) -> None:
        for process in self.processes():
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        try:
            os.killpg(self.leader.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.leader.wait(timeout=30)


@dataclass
class Cluster:
    address: str
    head: Node
    second: Node

    def stop(self) -> None:
        for node in (self.second, self.head):
            node.kill()


def start_node(name: str, root: Path, cpus: int, env: dict[str, str], *args: str) -> Node:
    """`ray start --block` for one node; returns once it is up. The scheduler spreads actors over
    the nodes (spread threshold 0), so that both nodes hold work whatever the job asks."""
    log = root / f"{name}.log"
    command = [RAY, "start", "--block", "--num-cpus", str(cpus), "--temp-dir", str(root / name),
               "--min-worker-port", "0", "--max-worker-port", "0", "--disable-usage-stats", *args]
    env = {**env, "RAY_scheduler_spread_threshold": "0.0"}
    with open(log, "wb") as out:
        leader = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    wait_for(lambda: "Ray runtime started" in log.read_text() or leader.poll() is not None, 180, f"Ray node {name}")
    if leader.poll() is not None:
        raise RuntimeError(f"ray start ({name}) exited:\n{log.read_text()[-3000:]}")
    node = Node(name, leader, log)
    node.processes()
    return node


def start_cluster(root: Path, cpus_per_node: int, env: dict[str, str]) -> Cluster:
    """A head and a second node on 127.0.0.1, each `cpus_per_node` CPUs, their own ports and temp
    dirs (short paths: Ray's socket paths must stay under 108 bytes). `env`: the nodes' environment
    (their workers inherit it: S3 settings, the counting hook)."""
    root.mkdir(parents=True, exist_ok=True)
    port, *head_ports = free_ports(9)
    head = start_node("head", root, cpus_per_node, env, "--head", "--port", str(port), "--include-dashboard", "false",
                      *_port_flags(head_ports[:6]), "--dashboard-port", str(head_ports[6]),
                      "--ray-client-server-port", str(head_ports[7]))
    try:
        second = start_node("second", root, cpus_per_node, env, "--address", f"127.0.0.1:{port}",
                            "--resources", json.dumps({"second_node": 1}), *_port_flags(free_ports(6)))
    except BaseException:
        head.kill()
        raise
    return Cluster(f"127.0.0.1:{port}", head, second)


def _port_flags(ports: list[int]) -> list[str]:
    names = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")
    return [arg for name, port in zip(names, ports) for arg in (name, str(port))]
