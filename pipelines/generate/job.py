"""Driver side of a bulk job: claim the output, skip committed units, run the actor pool, sum up.

Output layout (local directory or s3:// prefix):
    _job.json                 what this output holds: task, model id, options, input, columns, units
    <unit id>.parquet         one per unit: id, source, output, score, tokens, flags, error, model_id
    _commits/<unit id>.json   written after its part: the unit is done, with its counts and Ray node id
    _SUCCESS                  written last: totals over every unit, options, throughput
"""

from __future__ import annotations

import sys
import time
from collections import Counter, deque
from typing import TextIO

import ray

from pipelines import ray_runtime
from pipelines.generate.units import Unit
from pipelines.generate.worker import FLAGS, JobSpec, UnitWorker, marker_uri
from pipelines.progress import Progress
from pipelines.storage import NotFound, Storage, basename, join

SUCCESS, COMMITS = "_SUCCESS", "_commits"
IN_FLIGHT_PER_WORKER = 2  # one running, one queued: the actor never waits for the driver
ACTOR_RESTARTS = 3  # Ray restarts a dead actor process this often, on any node with room
UNIT_ATTEMPTS = 4  # a unit whose worker died this often is likely what kills it: stop
NO_WORKER_GRACE_S = 300.0  # no live worker for this long: the cluster cannot place one, stop
PING_EVERY_S = 2.0  # how often a restarting actor is asked whether it is back


def committed_units(storage: Storage, output: str) -> set[str]:
    """Ids of the units whose commit marker exists."""
    try:
        return {basename(e.uri).removesuffix(".json") for e in storage.list(join(output, COMMITS))
                if e.uri.endswith(".json")}
    except NotFound:
        return set()


def release_if_untouched(storage: Storage, output: str) -> None:
    """After a job stopped on bad input (a damaged file or package): if no unit was ever
    committed, the output holds nothing worth keeping, so it is removed and free for any
    command again (a fixed input may cut into other units). Committed units are kept."""
    if not committed_units(storage, output):
        storage.delete(output, recursive=True)


def run_pool(spec: JobSpec, units: list[Unit], workers: int, cpus_per_worker: float, gpus_per_worker: float,
             stream: TextIO = sys.stderr) -> list[dict]:
    """Process `units` on `workers` actors; returns their commit records (plus peak memory).

    Raises:
        ClusterError: when a unit's worker died UNIT_ATTEMPTS times, every worker is gone for
            good, or no worker could be placed for NO_WORKER_GRACE_S.
    """
    # Ray restarts a dead actor process, but does not retry its units (max_task_retries=0): the
    # restart may never be placed (its node is gone, the other nodes are full), and a retry bound
    # to that actor would wait for it forever. The pool re-queues them for any live actor instead.
    actor_class = ray.remote(UnitWorker).options(
        num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=ACTOR_RESTARTS, max_task_retries=0)
    actors = [actor_class.remote(spec) for _ in range(min(workers, len(units)))]
    progress = Progress(spec.task, total=sum(u.weight for u in units) or 1, stream=stream)
    pool = _Pool(actors, units, stream)
    try:
        while pool.pending or pool.units:
            pool.ping_due()
            pool.fill()
            pool.check_alive()
            for ref in pool.wait():
                unit, record = pool.finish(ref)
                if record is not None:
                    progress.update(unit.weight, units=1, rows=record["rows_in"], tokens=record["tokens"])
    finally:
        for actor in actors:
            ray.kill(actor)
    progress.finish()
    return list(pool.records.values())


class _Pool:
    """Which actors may take work, what each holds, what is left. Actors are named by index.

    An actor takes units only after answering a ping: at start (so that a worker counts as
    alive once its model is loaded), and after one of its units failed because it died (so
    that it rejoins once Ray has restarted it, wherever that was).
    """

    def __init__(self, actors: list, units: list[Unit], stream: TextIO) -> None:
        self.actors, self.stream = actors, stream
        self.pending: deque[Unit] = deque(units)
        self.units: dict[ray.ObjectRef, tuple[int, Unit]] = {}  # in flight: ref -> (actor, unit)
        self.pings: dict[ray.ObjectRef, int] = {}  # ref -> actor
        self.ping_at = {index: 0.0 for index in range(len(actors))}  # actors waiting for a ping
        self.ready: set[int] = set()
        self.suspended: set[int] = set()  # lost while working, not yet back
        self.lost: set[int] = set()  # dead for good (restarts exhausted)
        self.attempts: Counter[str] = Counter()
        # By unit id: a unit whose actor was unreachable may have finished there too; it counts once.
        self.records: dict[str, dict] = {}
        self.alive_at = time.monotonic()

    def ping_due(self) -> None:
        now = time.monotonic()
        for index, when in list(self.ping_at.items()):
            if when <= now:
                del self.ping_at[index]
                self.pings[self.actors[index].ping.remote()] = index

    def fill(self) -> None:
        """Give every ready actor work up to IN_FLIGHT_PER_WORKER units."""
        load = Counter(index for index, _ in self.units.values())
        for index in sorted(self.ready):
            while self.pending and load[index] < IN_FLIGHT_PER_WORKER:
                unit = self.pending.popleft()
                self.units[self.actors[index].process.remote(unit)] = (index, unit)
                load[index] += 1

    def check_alive(self) -> None:
        if self.ready:
            self.alive_at = time.monotonic()
        elif time.monotonic() - self.alive_at > NO_WORKER_GRACE_S:
            raise ray_runtime.ClusterError(
                f"no worker could be placed on the Ray cluster for {NO_WORKER_GRACE_S:.0f} s (nodes lost or "
                "full); committed units are kept: run the same command again when the cluster has room")

    def wait(self) -> list[ray.ObjectRef]:
        """The next finished unit or ping, if any within PING_EVERY_S (then pings fall due)."""
        refs = [*self.units, *self.pings]
        if not refs:
            time.sleep(PING_EVERY_S)
            return []
        done, _ = ray.wait(refs, num_returns=1, timeout=PING_EVERY_S)
        return done

    def finish(self, ref: ray.ObjectRef) -> tuple[Unit | None, dict | None]:
        """Take in a finished ref; returns the unit and its record when it is newly committed."""
        if ref in self.pings:
            self._answered(self.pings.pop(ref), ref)
            return None, None
        index, unit = self.units.pop(ref)
        try:
            record = ray_runtime.get(ref)  # our own errors inside the unit propagate, unwrapped
        except ray.exceptions.RayActorError as err:  # ActorDiedError, ActorUnavailableError
            self._requeue(unit, err)
            self._suspend(index)
            return None, None
        if unit.id in self.records:
            return None, None
        self.records[unit.id] = {**record, "done_at": time.monotonic()}
        return unit, record

    def _answered(self, index: int, ref: ray.ObjectRef) -> None:
        try:
            ray_runtime.get(ref)  # a worker that could not load the package raises its CheckpointError
        except ray.exceptions.ActorDiedError as err:
            self._lose(index, err)
        except ray.exceptions.RayActorError:
            # Unavailable: restarting, waiting for a node with room, or unreachable. Ask again later.
            self.ping_at[index] = time.monotonic() + PING_EVERY_S
        else:
            if index in self.suspended:
                self.suspended.discard(index)
                self._say(f"worker {index} is back")
            self.ready.add(index)

    def _requeue(self, unit: Unit, err: Exception) -> None:
        # At the front: it has waited longest.
        self.attempts[unit.id] += 1
        if self.attempts[unit.id] >= UNIT_ATTEMPTS:
            raise ray_runtime.ClusterError(f"unit {unit.id}: its worker died {UNIT_ATTEMPTS} times while "
                                           f"processing it (last: {_first_line(err)})")
        self.pending.appendleft(unit)
        self._say(f"unit {unit.id} back in the queue: its worker was lost ({type(err).__name__}; attempt "
                  f"{self.attempts[unit.id]} of {UNIT_ATTEMPTS} failed)")

    def _suspend(self, index: int) -> None:
        """No more work for this actor until it answers a ping (at once: a plain process
        restart takes seconds)."""
        if index in self.ready:
            self.ready.discard(index)
            self.suspended.add(index)
            self.ping_at[index] = 0.0

    def _lose(self, index: int, err: ray.exceptions.ActorDiedError) -> None:
        if err.actor_init_failed:  # the same for every worker: say why, once
            raise ray_runtime.ClusterError(f"a worker failed to start: {_last_line(err)}")
        self.lost.add(index)
        self._say(f"worker {index} is gone for good: {_first_line(err)}")
        if len(self.lost) == len(self.actors):
            raise ray_runtime.ClusterError(f"every worker is gone for good (Ray restarts each at most "
                                           f"{ACTOR_RESTARTS} times); last: {_first_line(err)}")

    def _say(self, text: str) -> None:
        # On a terminal the progress line has no newline yet: start a fresh line.
        self.stream.write(("\n" if self.stream.isatty() else "") + text + "\n")
        self.stream.flush()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _last_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def summarize(storage: Storage, output: str, identity: dict, units: list[Unit], records: list[dict],
              seconds: float) -> dict:
    """Totals over every unit's commit marker (this run's and earlier runs'); written as `_SUCCESS`."""
    markers = [storage.read_json(marker_uri(output, u.id)) for u in units]
    counts = {key: sum(m[key] for m in markers) for key in ("rows_in", "rows_out", "ok", "error", "tokens", *FLAGS)}
    done_now = {key: sum(r[key] for r in records) for key in ("rows_in", "tokens")}
    # Past start-up (Ray workers, model loading): the rate between the first and last unit done.
    finished = sorted(records, key=lambda r: r["done_at"])
    steady_seconds = finished[-1]["done_at"] - finished[0]["done_at"] if len(finished) > 1 else 0.0
    steady_rows = sum(r["rows_in"] for r in finished[1:])
    return {
        "task": identity["task"], "model_id": identity["model_id"], "generation": identity["generation"],
        "input": identity["input"], "units": len(units), "units_this_run": len(records),
        **counts,
        "throughput": {"seconds": round(seconds, 3), "rows_per_s": round(done_now["rows_in"] / max(seconds, 1e-9), 2),
                       "tokens_per_s": round(done_now["tokens"] / max(seconds, 1e-9), 2),
                       "rows_per_s_after_first_unit": round(steady_rows / steady_seconds, 2) if steady_seconds else None,
                       "worker_peak_rss_mb": max((r["peak_rss_mb"] for r in records), default=0.0)},
    }


def write_success(storage: Storage, output: str, summary: dict) -> None:
    storage.write_json(join(output, SUCCESS), summary)


def run_job(spec: JobSpec, units: list[Unit], identity: dict, workers: int, cpus_per_worker: float,
            gpus_per_worker: float, stream: TextIO = sys.stderr) -> dict:
    """Every uncommitted unit through the pool, then `_SUCCESS`; returns the summary."""
    start = time.monotonic()
    done = committed_units(spec.storage, spec.output)
    todo = [u for u in units if u.id not in done]
    if done:
        print(f"{len(units) - len(todo)} of {len(units)} units already committed: skipped", file=stream)
    records = run_pool(spec, todo, workers, cpus_per_worker, gpus_per_worker, stream) if todo else []
    summary = summarize(spec.storage, spec.output, identity, units, records, time.monotonic() - start)
    write_success(spec.storage, spec.output, summary)
    return summary
