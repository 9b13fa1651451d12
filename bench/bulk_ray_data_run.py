"""Running one job of either system as a subprocess and measuring it, for bench/bulk_vs_ray_data.py.

A run is spawned in its own session with the counting hook on PYTHONPATH (bulk_ray_data_hook/:
every process appends `start|end pid rows time` per text-layer call to a calls directory). While it
runs, a sampler reads the RSS of its process trees (driver, Ray workers, services) and the object
store use of every raylet in them (the raylet's GetNodeStats, as `ray memory --stats-only` reads it).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil
import pyarrow.parquet as pq

from bulk_ray_data_infra import RestartableS3, kill_tree, ray_env, tree
from pipelines.storage import NotFound, Storage

REPO = Path(__file__).resolve().parents[1]
HOOK = REPO / "bench" / "bulk_ray_data_hook"
DRIVER = REPO / "bench" / "bulk_ray_data_driver.py"
MB = 1 << 20
STALLED, TIMED_OUT = 125, 124  # exit codes given to a run killed here


@dataclass(frozen=True)
class Setup:
    """What every run of both systems shares: the package, the input, resources, decoding."""

    package: Path
    storage: Storage
    s3: RestartableS3
    bucket: str
    ids: list[str]
    unit_mb: float
    unit_rows: int
    workers: int
    cpus_per_worker: float
    options: list[str]
    work: Path
    run_timeout: float
    stall_s: float
    ray_cpus: int
    s3_outage_s: float
    cluster_cpus: int

    def uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{name}"

    def env(self, calls: Path, **extra: str) -> dict[str, str]:
        return ray_env(**self.s3.server.env(), PYTHONPATH=f"{HOOK}:{REPO}", S2S_BENCH_CALLS=str(calls), S2S_LOCAL_RAY_CPUS=str(self.ray_cpus),
                       PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING", **extra)


def ours_command(setup: Setup, output: str, input_name: str = "in", id_column: str | None = "id",
                 address: str | None = None) -> list[str]:
    """`s2s translate` from S3 to S3, one unit per `unit_rows` rows."""
    ids = ["--id-column", id_column] if id_column else []
    cluster = ["--ray-address", address] if address else []
    return [sys.executable, "-m", "pipelines.cli", *cluster, "translate", "--model", str(setup.package),
            "--input", setup.uri(input_name), "--output", output, *ids, "--unit-mb", f"{setup.unit_mb:.9f}",
            "--workers", str(setup.workers), "--cpus-per-worker", f"{setup.cpus_per_worker:g}", *setup.options]


def ray_data_command(setup: Setup, output: str, checkpoint: str | None, input_name: str = "in",
                     id_column: str = "id", row_hash: bool = False, address: str | None = None) -> list[str]:
    """bulk_ray_data_driver.py: read_parquet -> map_batches -> write_parquet, batches of `unit_rows`."""
    extra = ["--checkpoint", checkpoint, "--id-column", id_column] if checkpoint else []
    extra += ["--row-hash"] if row_hash else []
    extra += ["--ray-address", address] if address else []
    return [sys.executable, str(DRIVER), "--local-cpus", str(setup.ray_cpus), "--model", str(setup.package),
            "--input", setup.uri(input_name),
            "--output", output, "--workers", str(setup.workers), "--cpus-per-worker", f"{setup.cpus_per_worker:g}",
            "--batch-size", str(setup.unit_rows), *extra, *setup.options]


# -- the counting hook's records --------------------------------------------------------------------

@dataclass(frozen=True)
class Call:
    event: str
    pid: int
    rows: int
    at: float


def calls(directory: Path) -> list[Call]:
    found = []
    for path in directory.glob("calls-*.txt") if directory.exists() else []:
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                found.append(Call(parts[0], int(parts[1]), int(parts[2]), float(parts[3])))
    return sorted(found, key=lambda c: c.at)


def rows_done(directory: Path) -> int:
    return sum(c.rows for c in calls(directory) if c.event == "end")


def rows_started(directory: Path, since: float = 0.0, until: float = float("inf")) -> int:
    return sum(c.rows for c in calls(directory) if c.event == "start" and since <= c.at <= until)


# -- sampling ---------------------------------------------------------------------------------------

class Sampler(threading.Thread):
    """Peak RSS (MB) by kind over the process trees of `roots()` (the first root is the driver),
    and peak object store use summed over their raylets, every `every` seconds."""

    def __init__(self, roots: Callable[[], list[int]], every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.roots, self.every = roots, every
        self.peak = Counter({"driver": 0.0, "workers": 0.0, "largest worker": 0.0, "services": 0.0,
                             "object store": 0.0})
        self.ports: dict[int, int] = {}  # raylet pid -> its node manager port
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a process vanishing mid-read: skip this sample
                pass

    def stop(self) -> dict[str, float]:
        self.done.set()
        self.join(timeout=30)
        return {k: round(v, 1) for k, v in self.peak.items()}

    def sample(self) -> None:
        roots = self.roots()
        seen: dict[int, psutil.Process] = {}
        for root in roots:
            seen.update((p.pid, p) for p in tree(root))
        now = Counter()
        store = 0.0
        for pid, process in seen.items():
            try:
                rss, name = process.memory_info().rss / MB, (process.cmdline() or [""])[0]
            except psutil.Error:
                continue
            kind = "driver" if pid == roots[0] else "workers" if name.startswith("ray::") else "services"
            now[kind] += rss
            if kind == "workers":
                now["largest worker"] = max(now["largest worker"], rss)
            if os.path.basename(name) == "raylet":
                store += self.store_mb(process)
        now["object store"] = store
        for kind, value in now.items():
            self.peak[kind] = max(self.peak[kind], value)

    def store_mb(self, raylet: psutil.Process) -> float:
        """Object store bytes in use on this raylet's node (0 when it cannot be asked)."""
        from ray._private.internal_api import node_stats

        ports = [self.ports[raylet.pid]] if raylet.pid in self.ports else [
            c.laddr.port for c in raylet.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
        for port in ports:
            try:
                stats = node_stats("127.0.0.1", port, include_memory_info=False)
            except Exception:  # noqa: BLE001 - not the node manager's port, or the node is going
                continue
            self.ports[raylet.pid] = port
            return stats.store_stats.object_store_bytes_used / MB
        return 0.0


# -- one run ----------------------------------------------------------------------------------------

@dataclass
class Run:
    """One process of one job: its exit, times and peaks."""

    rc: int
    wall_s: float
    spawned_at: float
    ended_at: float
    last_line: str
    peaks: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def stalled(self) -> bool:
        return self.rc == STALLED


def run_job(command: list[str], env: dict[str, str], log: Path, limits: tuple[float, float],
            during: Callable[[subprocess.Popen], str] | None = None,
            extra_roots: Callable[[], list[int]] = list) -> Run:
    """Spawn `command`, sample it, run `during(process)` beside it (a failure to inject; it returns
    what it did). `limits`: (timeout, stall) seconds: the whole tree is killed after `timeout` s
    (exit TIMED_OUT), or when no batch was started or finished for `stall` s (exit STALLED)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    spawned = time.time()
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    sampler = Sampler(lambda: [process.pid, *extra_roots()])
    sampler.start()
    notes: list[str] = []
    injector = threading.Thread(target=lambda: notes.append(during(process)), daemon=True) if during else None
    if injector:
        injector.start()
    rc, why = watch(process, Path(env["S2S_BENCH_CALLS"]), *limits)
    if rc == STALLED:
        why += ray_data_state(log)
    ended = time.time()
    if injector:
        injector.join(timeout=120)
    for leftover in tree(process.pid):  # a killed driver's Ray workers exit by themselves, eventually
        kill_tree(leftover.pid)
    return Run(rc=rc, wall_s=ended - spawned, spawned_at=spawned, ended_at=ended, last_line=why or last_line(log),
               peaks=sampler.stop(), note="; ".join(n for n in notes if n))


def watch(process: subprocess.Popen, calls_dir: Path, timeout: float, stall: float) -> tuple[int, str]:
    """Wait for `process`; (exit code, '' or why it was killed)."""
    deadline = time.monotonic() + timeout
    size, since = -1, time.monotonic()
    while True:
        try:
            return process.wait(timeout=2), ""
        except subprocess.TimeoutExpired:
            pass
        now = sum(p.stat().st_size for p in calls_dir.glob("calls-*.txt")) if calls_dir.exists() else 0
        if now != size:
            size, since = now, time.monotonic()
        if time.monotonic() - since > stall or time.monotonic() > deadline:
            kill_tree(process.pid)
            process.wait()
            if time.monotonic() > deadline:
                return TIMED_OUT, f"timed out after {timeout:g} s"
            return STALLED, f"stalled: no batch started or finished for {stall:g} s"


def ray_data_state(log: Path) -> str:
    """Ray Data's last progress report, condensed: resources in use, and what each operator holds."""
    lines = [line.split(" -- ", 1)[-1].strip() for line in log.read_text(errors="replace").splitlines()
             if "logging_progress" in line and line.split(" -- ", 1)[-1].strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("Active & requested resources")]
    if not starts:
        return ""
    report = lines[starts[-1]:]
    report = report[:next((i for i, line in enumerate(report) if line.startswith("===")), len(report))]
    held = []
    for name, detail in zip(report[1::2], report[2::2]):
        if ": " in name and "Resources: " in detail:
            counts = detail.split("; Queued")[0].split(" (")[0]
            cpu = detail.split("Resources: ", 1)[1].split(",")[0]
            held.append(f"{name.split(':')[0]} {counts}, {cpu}")
    return f" (Ray Data: {report[0].split(',')[0]}; " + "; ".join(held) + ")"


def last_line(log: Path) -> str:
    """The last line that says something (an error, the summary), for the tables."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("{\"ray_ready_s\""):  # the Ray Data driver's result: its error, if any
            return json.loads(line).get("error", line)[:300]
    errors = [line for line in lines if line.startswith("error:") or "Error" in line[:80]]
    return (errors or lines or [""])[-1][:300]


# -- reading outputs back ---------------------------------------------------------------------------

def output_rows(storage: Storage, uri: str, key: str) -> list[dict]:
    """(key, source, output) of every row in every Parquet file under `uri` (markers skipped)."""
    try:
        entries = storage.list(uri)
    except NotFound:
        return []
    rows = []
    for entry in entries:
        name = entry.uri[len(uri):]
        if not entry.uri.endswith(".parquet") or "/_" in name:
            continue
        table = pq.read_table(io.BytesIO(storage.read_bytes(entry.uri)), columns=[key, "source", "output"])
        rows += table.to_pylist()
    return rows


def exactly_once(expected: list, got: list) -> tuple[int, int]:
    """(lost, duplicated): keys of `expected` missing from `got`, and extra copies in `got`."""
    have = Counter(got)
    lost = sum(1 for key in expected if have[key] == 0)
    duplicated = sum(count - 1 for count in have.values() if count > 1)
    return lost, duplicated


def mismatches(reference: dict[str, str], rows: list[dict], key: str = "id") -> int:
    """Rows whose output differs from the reference output for the same id (rows not in it: not counted)."""
    return sum(1 for row in rows if row[key] in reference and reference[row[key]] != row["output"])
