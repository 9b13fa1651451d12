"""What the corpus-scale benches share (bench/prepare.py --scale/--language-id, bench/train_scale.py).

- Corpora of k distinct copies of a TSV: copy 0 is the input as it is, copy j > 0 prefixes the
  source and the target of every line with the marker word `copyJJ`, so deduplication keeps
  every copy (and the splits, shards and token counts grow k-fold).
- A child environment without any Ray address, so each measured command starts its own local Ray.
- Running a command while sampling its process tree: the sum of RSS (work and services apart),
  each process's peak RSS with its title (Ray sets `ray::<task or actor>`) at that peak, and
  every output line with its time since the spawn.

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


@dataclass
class ProcPeak:
    """One process of the tree: its peak RSS, its title at that peak, every title it had."""

    pid: int
    first_seen: float
    rss: int = 0
    title: str = ""
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
        self.peak_work = self.peak_services = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)

    def sample(self) -> None:
        now, totals = time.perf_counter() - self.started, [0, 0]
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
            if rss > peak.rss:  # an idle worker keeps the memory of the task it ran last
                peak.rss, peak.title = rss, text if text != IDLE or not peak.busy else f"{peak.busy} (then idle)"
        self.peak_work, self.peak_services = max(self.peak_work, totals[0]), max(self.peak_services, totals[1])


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
    return Measured(wall, proc.returncode, lines, sampler.procs, sampler.peak_work, sampler.peak_services, proc.pid)


def failed(cmd: list[str], run: Measured) -> str:
    tail = "\n".join(line for _, line in run.lines[-40:])
    return f"{' '.join(cmd)} failed ({run.returncode}); last output:\n{tail}"


def ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def fmt(value: float | None, spec: str = ",.0f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "met" if ok else "MISSED"
