"""The README's tour, run command by command as a user would type them: real processes, the
S3 server of the test session, a local Prefect server started by `s2s serve`, and a Ray head
started by `ray start`.

The commands are read from the README itself, so the tour cannot drift from what works. Two
things are added for a shared test machine, never to the commands' meaning: `ray start` gets its
own temp dir and free ports for everything but the GCS port the tour names (the test session's
own Ray runs beside it), and every background process is stopped by process group once the
commands that use it are done.

The commands start in the README's order, each as soon as the commands it uses are done
(`NEEDS`): the services start beside `prepare`, and the four commands that use the trained
model run side by side. Each command mostly waits on start-ups (a Prefect server, a local Ray):
one after another they left one of the two cores idle about half of the time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.pipelines.test_cluster import _port_flags, free_ports

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
READY = {"s2s serve": "serving ", "ray start": "Ray runtime started"}

# What each tour command (by how it starts) waits for: the commands whose outputs or services it
# uses; a background service is stopped once its users are done. The stage commands after
# `train` share one Prefect home (each starts a temporary API server on its SQLite file, which
# Prefect opens in WAL mode with a busy timeout), as two terminals of one user would. A command
# not listed waits for every earlier one.
NEEDS = {
    "s2s prepare": (),
    "s2s train": ("s2s prepare",),
    "s2s evaluate": ("s2s train",),
    "s2s translate": ("s2s train",),
    "s2s serve": (),
    "s2s submit": ("s2s train", "s2s serve"),
    "s2s status": ("s2s submit", "s2s serve"),
    "ray start": (),
    "s2s --ray-address": ("s2s train", "ray start"),
}


def prerequisites(command: str, earlier: list[str]) -> list[str]:
    """The earlier tour commands that `command` waits for (`NEEDS`; all of them if not listed)."""
    needs = next((needs for start, needs in NEEDS.items() if command.startswith(start)), None)
    if needs is None:
        return earlier
    return [other for other in earlier if other.startswith(needs)]


def tour_commands(readme: str, heading: str = "Tour") -> list[tuple[str, bool]]:
    """(command, runs in the background) for every line of the bash blocks under `## heading`."""
    section = readme.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                commands.append((line.removesuffix("&").strip(), line.endswith("&")))
    return commands


def test_the_tour_has_every_step():
    commands = [c for c, _ in tour_commands((REPO / "README.md").read_text())]
    for step in ("s2s prepare", "s2s train", "s2s evaluate", "s2s translate", "s2s serve", "s2s submit",
                 "ray start --head", "s2s --ray-address"):
        assert any(c.startswith(step) for c in commands), step
    assert any("s3://" in c for c in commands if c.startswith("s2s translate"))
    for start in NEEDS:  # the dependencies name commands of the tour
        assert any(c.startswith(start) for c in commands), start


class Tour:
    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env = folder, env
        self.background: dict[str, subprocess.Popen] = {}  # by command, until stopped
        self.lock = threading.Lock()
        self.outputs: dict[str, str] = {}

    def argv(self, command: str) -> list[str]:
        argv = shlex.split(command)
        argv[0] = str(BIN / argv[0])
        if command.startswith("ray start"):
            # A temp dir of its own (short: Ray's socket paths must stay under 108 bytes) and
            # free ports for its agents and workers: the test session's Ray runs beside it.
            argv += ["--temp-dir", tempfile.mkdtemp(prefix="tour-ray-", dir="/tmp"), "--include-dashboard", "false",
                     "--disable-usage-stats", *_port_flags(free_ports(6)), "--ray-client-server-port",
                     str(free_ports(1)[0]), "--min-worker-port", "0", "--max-worker-port", "0"]
        return argv

    def run(self, command: str, background: bool) -> None:
        if background:
            self.start(command)
            return
        done = subprocess.run(self.argv(command), cwd=self.folder, env=self.env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        self.outputs[command] = done.stdout + done.stderr

    def run_all(self, commands: list[tuple[str, bool]]) -> None:
        """Start the commands in order, each once its `prerequisites` are done (a background one:
        once it is ready); raises the first failure in the tour's order. A background process
        is stopped once the commands that use it are done, while the others still run (a stop
        takes seconds)."""
        with ThreadPoolExecutor(max_workers=2 * len(commands)) as pool:
            futures: dict[str, Future] = {}
            needs: dict[str, list[str]] = {}
            for command, background in commands:
                needs[command] = prerequisites(command, list(futures))
                futures[command] = pool.submit(self._run_after, [futures[o] for o in needs[command]], command,
                                               background)
            for command, background in commands:
                users = [futures[other] for other, its_needs in needs.items() if command in its_needs]
                if background and users:
                    pool.submit(self._stop_after, users, command)
        for future in futures.values():
            future.result()

    def _run_after(self, waits: list[Future], command: str, background: bool) -> None:
        for earlier in waits:
            if earlier.exception() is not None:
                raise AssertionError(f"not run: {command} (an earlier command failed)")
        self.run(command, background)

    def _stop_after(self, users: list[Future], command: str) -> None:
        wait(users)
        self.stop([command])

    def start(self, command: str) -> None:
        log = self.folder / f"background-{command.split()[1]}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(self.argv(command), cwd=self.folder, env=self.env, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        with self.lock:
            self.background[command] = process
        marker = next(text for prefix, text in READY.items() if command.startswith(prefix))
        deadline = time.monotonic() + 180
        while marker not in log.read_text(errors="replace"):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)

    def stop(self, commands: list[str] | None = None, grace_s: float = 10.0) -> None:
        """SIGTERM to the process groups of these background commands (default: all still
        running) at once, SIGKILL to those still running after `grace_s`: `ray start --block`
        alone takes over 30 s to shut down gracefully, and its throwaway cluster needs none of
        that (its processes are all in its group). Each is stopped once (its pid is not reused)."""
        with self.lock:
            chosen = [c for c in (self.background if commands is None else commands) if c in self.background]
            processes = [self.background.pop(c) for c in chosen]
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):  # also the group's other processes
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.fixture
def tour(tmp_path, s3_server):
    s3_server.create_bucket("tour")
    for name in ("data", "deploy"):
        (tmp_path / name).symlink_to(REPO / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "RAY_"))}
    env.update(s3_server.env(), S2S_STATE=str(tmp_path / "state"), PREFECT_HOME=str(tmp_path / "prefect-home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", S2S_LOCAL_RAY_CPUS="2", RAY_USAGE_STATS_ENABLED="0",
               RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    tour = Tour(tmp_path, env)
    yield tour
    tour.stop()


def test_the_readme_tour_runs(tour, s3_server):
    commands = tour_commands((REPO / "README.md").read_text())
    with socket.socket() as probe:  # the GCS port the tour names must be free
        assert probe.connect_ex(("127.0.0.1", 6380)) != 0, "port 6380 is taken: the tour's ray start would fail"
    tour.run_all(commands)

    client = s3_server.client()
    evaluation = json.loads((tour.folder / "tour" / "evaluation" / "report.json").read_text())
    assert evaluation["scores"]["sentences"] == 500 and "bleu_ci95" in evaluation["scores"]
    printed = next(out for command, out in tour.outputs.items() if command.startswith("s2s evaluate"))
    assert "nrefs:1|bs:200|" in printed
    for output, rows in (("translated/test", 500), ("translated/valid", 500), ("translated/on-cluster", 500)):
        success = json.loads(client.get_object(Bucket="tour", Key=f"{output}/_SUCCESS")["Body"].read())
        assert success["rows_out"] == rows and success["error"] == 0, output
    submitted = next(out for command, out in tour.outputs.items() if command.startswith("s2s submit"))
    assert "completed" in submitted.lower(), submitted
    status = next(out for command, out in tour.outputs.items() if command.startswith("s2s status"))
    assert "translated/valid" in status, status
