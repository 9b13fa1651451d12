"""The failure scenarios of bench/bulk_vs_ray_data.py, each a function run for each system.

Each injects its failure once a share of the rows (TRIGGER) has been generated, lets the run end
(Ray's and our own retries do what they do), then runs the same command again until it succeeds
(at most MAX_RERUNS more times), and counts against the input: rows lost, rows duplicated, rows
recomputed (rows handed to the text layer beyond one time each: the counting hook's `start`
records), outputs differing from the reference run, and the time of all runs together.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

from bulk_ray_data_infra import Cluster, kill_tree, start_cluster, tree, wait_for
from bulk_ray_data_run import (
    Run,
    Setup,
    calls,
    exactly_once,
    mismatches,
    ours_command,
    output_rows,
    ray_data_command,
    rows_done,
    rows_started,
    run_job,
)
from pipelines.storage import NotFound

SYSTEMS = ("ours", "Ray Data")
ACTOR = {"ours": "ray::UnitWorker", "Ray Data": "ray::MapWorker"}
TRIGGER = 0.3
MAX_RERUNS = 2


@dataclass(frozen=True)
class Reference:
    """The outputs of a clean run of ours: what every other run must reproduce."""

    by_id: dict[str, str]
    sources: list[str]
    by_source: dict[str, str]


@dataclass
class Outcome:
    scenario: str
    system: str
    runs: list[Run] = field(default_factory=list)
    lost: int = 0
    duplicated: int = 0
    recomputed: int = 0
    mismatched: int = 0

    @property
    def finished(self) -> bool:
        return bool(self.runs) and self.runs[-1].rc == 0

    @property
    def seconds(self) -> float:
        return sum(r.wall_s for r in self.runs)


@dataclass
class Attempt:
    """One scenario, one system, one repeat: its folder, output, checkpoint and calls."""

    setup: Setup
    scenario: str
    system: str
    repeat: int
    address: str | None = None
    input_name: str = "in"

    @property
    def slug(self) -> str:
        return f"{self.scenario.lower().replace(' ', '-')}-{'ours' if self.system == 'ours' else 'rd'}-{self.repeat}"

    @property
    def folder(self) -> Path:
        return self.setup.work / self.slug

    @property
    def calls(self) -> Path:
        return self.folder / "calls"

    @property
    def output(self) -> str:
        return self.setup.uri(f"{self.slug}/out")

    def command(self, **options) -> list[str]:
        if self.system == "ours":
            return ours_command(self.setup, self.output, self.input_name, address=self.address, **options)
        return ray_data_command(self.setup, self.output, self.setup.uri(f"{self.slug}/checkpoint"),
                                self.input_name, address=self.address, **options)

    def run(self, during: Callable | None = None, extra_roots: Callable[[], list[int]] = list, **options) -> Run:
        number = len(list(self.folder.glob("run-*.log"))) + 1
        return run_job(self.command(**options), self.setup.env(self.calls), self.folder / f"run-{number}.log",
                       (self.setup.run_timeout, self.setup.stall_s), during, extra_roots)

    def reached(self, process, fraction: float = TRIGGER, also: Callable[[], bool] = lambda: True) -> bool:
        """Wait until `fraction` of the rows are generated (and `also`); False if the job ended first."""
        target = fraction * len(self.setup.ids)
        wait_for(lambda: process.poll() is not None or (rows_done(self.calls) >= target and also()),
                 self.setup.run_timeout, f"{fraction:.0%} of the rows")
        return process.poll() is None


def finish(attempt: Attempt, first: Run, reference: Reference, max_reruns: int = MAX_RERUNS,
           key: str = "id", by_text: bool = False, **run_options) -> Outcome:
    """Rerun until a run succeeds (at most `max_reruns` more; not after a rerun that stalled: it
    would stall again), then count against the input."""
    outcome = Outcome(attempt.scenario, attempt.system, [first])
    while not outcome.finished and len(outcome.runs) <= max_reruns and not (
            len(outcome.runs) > 1 and outcome.runs[-1].stalled):
        outcome.runs.append(attempt.run(**run_options))
    count(outcome, attempt, reference, key, by_text)
    return outcome


def count(outcome: Outcome, attempt: Attempt, reference: Reference, key: str = "id", by_text: bool = False) -> None:
    rows = output_rows(attempt.setup.storage, attempt.output, key)
    if not by_text:
        outcome.lost, outcome.duplicated = exactly_once(attempt.setup.ids, [r[key] for r in rows])
        outcome.mismatched = mismatches(reference.by_id, rows)
    else:  # no id in the input: rows are told apart by their text (each text as often as in the input)
        expected, got = Counter(reference.sources), Counter(r["source"] for r in rows)
        outcome.lost = sum(max(0, n - got[s]) for s, n in expected.items())
        outcome.duplicated = sum(max(0, n - expected[s]) for s, n in got.items())
        outcome.mismatched = sum(1 for r in rows if reference.by_source.get(r["source"], r["output"]) != r["output"])
    outcome.recomputed = max(0, rows_started(attempt.calls) - len(attempt.setup.ids))


# -- the scenarios ----------------------------------------------------------------------------------

def worker_kill(setup: Setup, system: str, repeat: int, reference: Reference) -> Outcome:
    """SIGKILL one translating actor mid-job; the system's own retries take it from there."""
    attempt = Attempt(setup, "worker kill", system, repeat)

    def inject(process) -> str:
        if not attempt.reached(process):
            return "the job ended before the failure"
        victims = [p for p in tree(process.pid) if _cmd(p).startswith(ACTOR[system])]
        if not victims:
            return "no actor process found"
        name, at = _cmd(victims[0]).split(".")[0], rows_done(attempt.calls)
        victims[0].kill()
        return f"killed {name} at {at} rows"

    return finish(attempt, attempt.run(inject), reference)


def driver_kill(setup: Setup, system: str, repeat: int, reference: Reference) -> Outcome:
    """SIGKILL the driver and its local Ray (every process of the run) mid-job; run it again."""
    attempt = Attempt(setup, "driver kill", system, repeat)
    return finish(attempt, attempt.run(_killing_driver(attempt)), reference)


def _killing_driver(attempt: Attempt) -> Callable:
    def inject(process) -> str:
        if not attempt.reached(process):
            return "the job ended before the failure"
        at = rows_done(attempt.calls)
        kill_tree(process.pid)
        return f"killed the driver at {at} rows"
    return inject


def node_loss(setup: Setup, system: str, repeat: int, reference: Reference) -> Outcome:
    """A two-node cluster; the second node is killed (every process of it) once it has generated
    rows and TRIGGER of the job is done. Reruns go to the head alone."""
    root = Path(tempfile.mkdtemp(prefix="bulkrd-", dir="/tmp"))  # short: Ray's socket paths
    attempt = Attempt(setup, "node loss", system, repeat)
    cluster = start_cluster(root, setup.cluster_cpus, setup.env(attempt.calls))
    attempt.address = cluster.address
    try:
        def inject(process) -> str:
            on_second = lambda: bool({c.pid for c in calls(attempt.calls)} & _pids(cluster))  # noqa: E731
            if not attempt.reached(process, also=on_second):
                return "the job ended before the failure"
            at = rows_done(attempt.calls)
            cluster.second.kill()
            return f"killed the second node at {at} rows"

        roots = lambda: [p.pid for p in (cluster.head.leader, cluster.second.leader) if p.poll() is None]  # noqa: E731
        return finish(attempt, attempt.run(inject, roots), reference, extra_roots=roots)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _pids(cluster: Cluster) -> set[int]:
    return {p.pid for p in cluster.second.processes()}


def s3_outage(setup: Setup, system: str, repeat: int, reference: Reference) -> Outcome:
    """The S3 server SIGKILLed mid-job, started again (same ports, same data) `s3_outage_s` later."""
    attempt = Attempt(setup, "S3 outage", system, repeat)

    def inject(process) -> str:
        if not attempt.reached(process):
            return "the job ended before the failure"
        at = rows_done(attempt.calls)
        setup.s3.stop(hard=True)
        time.sleep(setup.s3_outage_s)
        setup.s3.start()
        return f"S3 down for {setup.s3_outage_s:g} s from {at} rows ({rows_done(attempt.calls)} when back)"

    return finish(attempt, attempt.run(inject), reference)


def rerun_after_success(setup: Setup, system: str, repeat: int, reference: Reference) -> Outcome:
    """A finished job run again (the same command, e.g. by a scheduler that retries a flow). Noted:
    output rows after each run, rows run 2 generated, and (Ray Data) what run 1 left of its checkpoint."""
    attempt = Attempt(setup, "rerun after success", system, repeat)
    outcome = finish(attempt, attempt.run(), reference, max_reruns=0)
    rows, kept = len(output_rows(setup.storage, attempt.output, "id")), _objects(setup, f"{attempt.slug}/checkpoint")
    second = attempt.run()
    outcome.runs.append(second)
    count(outcome, attempt, reference)
    second.note = (f"output rows: {rows} after run 1, {len(output_rows(setup.storage, attempt.output, 'id'))} after "
                   f"run 2; run 2 generated {rows_started(attempt.calls, since=second.spawned_at)} rows"
                   + ("" if system == "ours" else f"; checkpoint objects left by run 1: {kept}"))
    return outcome


def _objects(setup: Setup, name: str) -> int:
    """Objects under `name` (0 when there is none)."""
    try:
        return len(setup.storage.list(setup.uri(name)))
    except NotFound:
        return 0


def no_id(setup: Setup, system: str, repeat: int, reference: Reference) -> Outcome:
    """The input without an id column, driver killed mid-job and run again. Ours: `file:row` ids.
    Ray Data: its checkpointing needs an id column; `read_parquet(include_row_hash=True)` gives
    one from the file and row position (`row_hash`), used here as the checkpoint id."""
    attempt = Attempt(setup, "no id column", system, repeat, input_name="in-noid")
    options = {"id_column": None} if system == "ours" else {"id_column": "row_hash", "row_hash": True}
    first = attempt.run(_killing_driver(attempt), **options)
    return finish(attempt, first, reference, key="id" if system == "ours" else "row_hash",
                  by_text=True, **options)


def missing_id(setup: Setup, repeat: int, reference: Reference) -> Outcome:
    """Ray Data's checkpointing on `id` (as in every other run) with the input that has no such
    column: what it says, and when."""
    attempt = Attempt(setup, "missing id column", "Ray Data", repeat, input_name="in-noid")
    run = attempt.run()
    run.note = f"{rows_done(attempt.calls)} rows generated before it stopped"
    outcome = Outcome(attempt.scenario, attempt.system, [run])
    count(outcome, attempt, reference)
    return outcome


SCENARIOS: dict[str, Callable[[Setup, str, int, Reference], Outcome]] = {
    "worker-kill": worker_kill, "driver-kill": driver_kill, "node-loss": node_loss, "s3-outage": s3_outage,
    "rerun": rerun_after_success, "no-id": no_id,
}


def _cmd(process: psutil.Process) -> str:
    try:
        return (process.cmdline() or [""])[0]
    except psutil.Error:
        return ""
