"""What the corpus-scale benches share (bench/prepare.py --scale/--language-id, bench/train_scale.py).

- Corpora of k distinct copies of a TSV: copy 0 is the input as it is, copy j > 0 prefixes the
  source and the target of every line with the marker word `copyJJ`, so deduplication keeps
  every copy (and the splits, shards and token counts grow k-fold).
- A child environment without any Ray address, so each measured command starts its own local Ray.
- Running a command while sampling its process tree: the sum of RSS (work and services apart),
  each process's peak RSS with its title (Ray sets `ray::<task or actor>`) at that peak, and
  every output line with its time since the spawn. For Ray workers also what their RSS is made
  of (Linux: /proc/PID/status and smaps_rollup), see `memory_parts`.

Why RSS alone misleads for a Ray worker: Ray's object store is one /dev/shm file
(`/dev/shm/plasma…`) that every worker maps. A worker that writes a task's outputs to the store,
or reads its inputs from it, touches those pages, and they stay in its RSS (as RssShmem) for the
rest of its life, whether the objects are freed or not: the store keeps its pages and the worker
keeps its mapping. A pooled worker that ran map and reduce tasks of a shuffle therefore shows the
shuffle's store pages in the RSS of every task it runs later. Those pages are the store's memory,
counted once for the machine and bounded by its `object_store_memory` (Ray spills beyond it), not
the task's: a task's own memory is `own` = RSS less shared memory (private anonymous + file pages).
USS and PSS do not separate them either: USS counts the store pages only this worker touched, PSS
a share of the others.

Generated corpora and prepared datasets are cached under bench/out/scale/ (git-ignored).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = (REPO / "../shared/data/en-it/train.tsv").resolve()
SCALE_DIR = REPO / "bench" / "out" / "scale"
S2S = str(REPO / ".venv" / "bin" / "s2s")
MB = 1 << 20
IDLE = "ray::IDLE"
SERVICE_MARKS = ("gcs_server", "raylet", "dashboard", "DashboardAgent", "RuntimeEnvAgent", "runtime_env",
                 "log_monitor", "autoscaler", "uvicorn", "prefect.server")  # Ray daemons, Prefect API server


def parse_scales(text: str) -> list[int]:
    """'1,4,16' -> [1, 4, 16] (sorted, distinct, each >= 1)."""
    scales = sorted({int(part) for part in text.split(",") if part.strip()})
    if not scales or scales[0] < 1:
        raise SystemExit(f"--scale(s) must list integers >= 1, but is {text!r}")
    return scales


def corpus_tag(source: Path, base_rows: int | None) -> str:
    return f"{source.stem}-{base_rows if base_rows else 'all'}"


def base_lines(source: Path, base_rows: int | None) -> list[bytes]:
    """The first `base_rows` lines of `source` (all when None), without a BOM or line ends."""
    lines = source.read_bytes().removeprefix(b"\xef\xbb\xbf").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines[:base_rows] if base_rows else lines


def build_corpus(source: Path, base_rows: int | None, scale: int) -> Path:
    """The cached TSV of `scale` distinct copies of `source`'s first `base_rows` lines."""
    path = SCALE_DIR / f"corpus-{corpus_tag(source, base_rows)}-{scale}x.tsv"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    lines, partial = base_lines(source, base_rows), path.with_suffix(".partial")
    with open(partial, "wb") as out:
        for copy in range(scale):
            mark = b"copy%02d " % copy
            for line in lines:
                out.write((mark + line.replace(b"\t", b"\t" + mark, 1) if copy else line) + b"\n")
    partial.rename(path)
    return path


def cached_dataset(corpus: Path) -> Path:
    """Where the default prepare of `corpus` is cached (a dataset dir with manifest.json)."""
    return SCALE_DIR / f"data-{corpus.stem.removeprefix('corpus-')}"


def is_prepared(data: Path) -> bool:
    return (data / "manifest.json").is_file() and (data / "ids").is_dir()


def keep_as_cache(output: Path, data: Path) -> None:
    """Move a freshly prepared `output` into the cache at `data` unless one is there already."""
    if is_prepared(data) or not is_prepared(output):
        shutil.rmtree(output, ignore_errors=True)
        return
    shutil.rmtree(data, ignore_errors=True)
    shutil.move(str(output), str(data))


def child_env(cpus: int | None = None) -> dict:
    """Our environment, less any Ray address (each command starts its own local Ray)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "S2S_RAY_ADDRESS", "S2S_LOCAL_RAY_CPUS")}
    return env | {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONUNBUFFERED": "1"} \
        | ({"S2S_LOCAL_RAY_CPUS": str(cpus)} if cpus else {})


def disk_free_gb(path: Path = REPO) -> float:
    return shutil.disk_usage(path).free / (1 << 30)


def check_disk(source: Path, base_rows: int | None, scales: list[int]) -> None:
    """Stop early when the corpora, their prepared datasets and one measured output may not fit.

    Measured on the en-it slice: a dataset (text + token-id shards) takes about 0.9x its TSV."""
    size = sum(len(line) + 1 for line in base_lines(source, base_rows))  # bytes of copy 0
    need = sum(size * k * 1.9 for k in scales) + size * max(scales)  # corpus + dataset each, one temp output
    free = disk_free_gb() * (1 << 30)
    print(f"disk: about {need / (1 << 30):.1f} GB needed under {SCALE_DIR.parent}, {free / (1 << 30):.1f} GB free",
          file=sys.stderr)
    if need > 0.9 * free:
        raise SystemExit(f"not enough disk: about {need / (1 << 30):.1f} GB needed, {free / (1 << 30):.1f} GB free")


# --- measuring a command ---
def title(proc: psutil.Process) -> str:
    return " ".join(proc.cmdline()).strip() or proc.name()  # Ray pads its titles with spaces


def is_service(text: str) -> bool:
    return any(mark in text for mark in SERVICE_MARKS)


def memory_parts(pid: int) -> dict[str, int]:
    """What a process's RSS is made of, in bytes (empty when /proc cannot tell): anon (private
    anonymous: heap, arenas), file (mapped files: libraries), shmem (shared memory: for a Ray
    worker, the object-store pages it has touched); they sum to RSS. own = anon + file (RSS less
    shared memory); uss (pages only it maps, store pages included), pss (shared pages split among
    the processes mapping them) and pss_shmem (its share of shmem: summed over processes, the
    shared memory they map, each page once)."""
    parts = {}
    try:
        for path, wanted in ((f"/proc/{pid}/status", STATUS_KEYS), (f"/proc/{pid}/smaps_rollup", ROLLUP_KEYS)):
            with open(path) as handle:
                for line in handle:
                    key, _, value = line.partition(":")
                    if key in wanted:
                        name = wanted[key]
                        parts[name] = parts.get(name, 0) + int(value.split()[0]) * 1024
    except (OSError, ValueError):
        return {}
    if "anon" in parts and "file" in parts:
        parts["own"] = parts["anon"] + parts["file"]
    return parts


STATUS_KEYS = {"RssAnon": "anon", "RssFile": "file", "RssShmem": "shmem"}
ROLLUP_KEYS = {"Pss": "pss", "Private_Clean": "uss", "Private_Dirty": "uss", "Pss_Shmem": "pss_shmem"}


@dataclass
class ProcPeak:
    """One process of the tree: its peak RSS, its title at that peak, every title it had; for a
    Ray worker also its peak of each `memory_parts` measure and their values at the RSS peak."""

    pid: int
    first_seen: float
    rss: int = 0
    title: str = ""
    parts_at_peak: dict[str, int] = field(default_factory=dict)
    """memory_parts when RSS peaked."""
    part_peaks: dict[str, int] = field(default_factory=dict)
    """The highest value seen of each memory part (each at its own time)."""
    part_titles: dict[str, str] = field(default_factory=dict)
    """The title at each part's peak."""
    trace: list[tuple[float, str, int, dict[str, int]]] = field(default_factory=list)
    """Every sample of a Ray worker: (seconds since the spawn, title, rss, memory_parts)."""
    titles: dict[str, float] = field(default_factory=dict)
    """title -> seconds since the spawn when first seen with it."""
    busy: str = ""
    """The latest title other than Ray's `ray::IDLE` (the task or actor it ran last)."""

    def seen_as(self, mark: str) -> float | None:
        """When the process first had a title containing `mark` (None: never)."""
        times = [t for text, t in self.titles.items() if mark in text]
        return min(times) if times else None


@dataclass
class Measured:
    wall: float
    returncode: int
    lines: list[tuple[float, str]]
    """Every output line (stdout and stderr together) with its time since the spawn."""
    procs: dict[int, ProcPeak]
    peak_work: int
    """Highest sum of RSS over the tree's processes that are not services, in bytes."""
    peak_services: int
    peak_shared: int
    """Highest shared memory mapped by the Ray workers and the raylet together, each page once (the
    object-store pages in use or kept by the store), in bytes."""
    root: int
    """The command's own process id."""

    def ray_workers(self, mark: str = "ray::") -> list[ProcPeak]:
        return [p for p in self.procs.values() if p.seen_as(mark) is not None and not is_service(p.title)]

    def first_line(self, prefix: str) -> float | None:
        return next((t for t, line in self.lines if line.startswith(prefix)), None)

    def last_line(self, prefix: str) -> float | None:
        return next((t for t, line in reversed(self.lines) if line.startswith(prefix)), None)


class TreeSampler(threading.Thread):
    """Samples `root` and all its descendants every `interval` seconds until stopped."""

    def __init__(self, root: int, started: float, interval: float) -> None:
        super().__init__(daemon=True)
        self.root, self.started, self.interval = psutil.Process(root), started, interval
        self.procs: dict[int, ProcPeak] = {}
        self.peak_work = self.peak_services = self.peak_shared = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)

    def sample(self) -> None:
        now, totals, shared = time.perf_counter() - self.started, [0, 0], 0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        for proc in procs:
            try:
                text, rss = title(proc), proc.memory_info().rss
            except psutil.Error:
                continue
            totals[is_service(text)] += rss
            peak = self.procs.setdefault(proc.pid, ProcPeak(proc.pid, now))
            peak.titles.setdefault(text, now)
            if text != IDLE:
                peak.busy = text
            shown = text if text != IDLE or not peak.busy else f"{peak.busy} (then idle)"
            worker = "ray::" in text and not is_service(text)
            parts = memory_parts(proc.pid) if worker or "raylet" in text else {}
            shared += parts.get("pss_shmem", 0)
            if parts and worker:
                peak.trace.append((now, text, rss, parts))
                for name, value in parts.items():
                    if value > peak.part_peaks.get(name, -1):
                        peak.part_peaks[name], peak.part_titles[name] = value, shown
            if rss > peak.rss:  # an idle worker keeps the memory of the task it ran last
                peak.rss, peak.title, peak.parts_at_peak = rss, shown, parts
        self.peak_work, self.peak_services = max(self.peak_work, totals[0]), max(self.peak_services, totals[1])
        self.peak_shared = max(self.peak_shared, shared)


def run_measured(cmd: list[str], env: dict, log: Path, interval: float = 0.2) -> Measured:
    """Run `cmd` from the repo root, sampling its process tree and timing its output lines
    (also written to `log`, each with its time)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    lines: list[tuple[float, str]] = []
    with open(log, "w") as sink:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", bufsize=1)
        sampler = TreeSampler(proc.pid, started, interval)
        sampler.start()
        assert proc.stdout is not None
        for raw in proc.stdout:
            t = time.perf_counter() - started
            for line in raw.rstrip("\n").split("\r"):  # a progress line rewritten in place
                lines.append((t, line))
                sink.write(f"{t:9.2f}  {line}\n")
        proc.wait()
        wall = time.perf_counter() - started
        sampler.stop.set()
        sampler.join()
    return Measured(wall, proc.returncode, lines, sampler.procs, sampler.peak_work, sampler.peak_services,
                    sampler.peak_shared, proc.pid)


def failed(cmd: list[str], run: Measured) -> str:
    tail = "\n".join(line for _, line in run.lines[-40:])
    return f"{' '.join(cmd)} failed ({run.returncode}); last output:\n{tail}"


def ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def fmt(value: float | None, spec: str = ",.0f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "met" if ok else "MISSED"
