"""Our bulk engine beside the same job written the way Ray Data's documentation teaches it, in one run.

Both translate the same real en-it sentences (the last --rows of ../shared/data/en-it/train.tsv, as
one Parquet file with an `id` column on a local SeaweedFS S3 server) with the same model package
(bench/bulk.py's: transformer-small, fixed random weights, an 8k SentencePiece model of real text),
the same decoding options (greedy, outputs forced to --tokens tokens) and the same resources
(--workers actors x --cpus-per-worker CPUs, one torch thread each, on a 2-CPU Ray):

  ours       `s2s translate --input s3://.../in --output s3://.../out --id-column id`: an actor
             pool on Ray core, one unit per --unit-rows rows, commit markers, `_SUCCESS`.
  Ray Data   bench/bulk_ray_data_driver.py: read_parquet -> map_batches(TranslateBatch, batches of
             --unit-rows) -> write_parquet, with Ray Data's own checkpointing on `id`
             (`DataContext.checkpoint_config = CheckpointConfig(...)`, two-phase commit, Ray >= 2.55).

Each runs as a subprocess. Measured: start-up (spawn to the first batch generated), rows/s past
start-up (between the first and last batch generated), rows/s end to end (spawn to exit), peak RSS
of the driver, of the Ray workers and of the services (psutil over the process trees, every 0.5 s),
peak object store use (the raylets' own count), and every input id exactly once with the same
outputs. Then the failure scenarios of bench/bulk_ray_data_failures.py, each --repeats times per
system. The counting hook (bench/bulk_ray_data_hook/) records every batch both systems generate.
Markdown tables to stdout and bench/out/bulk_vs_ray_data.md (--name: another name, and its runs folder).

On a 2-CPU local Ray (the default, as every other bench here), a resumed Ray Data job can hang:
its CheckpointFilter actor takes 1 CPU (Ray Data's default for map actors, not settable through
CheckpointConfig), the translating actors the other, and the read's ListFiles task waits forever.
Such a run is stopped after --stall-s and reported; --ray-cpus 3 gives Ray Data room to resume.

Usage: .venv/bin/python bench/bulk_vs_ray_data.py [--rows 20000] [--repeats 3] [--only speed|failures]
       [--workers 2] [--ray-cpus 2] [--scenario worker-kill ...] [--system ours|"Ray Data"] [--model PKG]
Smoke: --rows 600 --unit-rows 50 --repeats 1 --stall-s 150 (a few units per worker, so failures land mid-job)
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bulk import DATA, random_package
from bulk_ray_data_failures import SCENARIOS, SYSTEMS, TRIGGER, Attempt, Outcome, Reference, count, missing_id
from bulk_ray_data_infra import TOKEN, RestartableS3
from bulk_ray_data_run import REPO, Run, Setup, calls, output_rows
from pipelines.storage import Storage

OUT = REPO / "bench" / "out"  # <name>.md: the tables; <name>-runs/: each run's log and counted batches (cleared first)
INPUT_FILE = "part-00000.parquet"
SAMPLE = 200  # rows translated in this process as the reference for every run


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="sentences (the end of the en-it train split)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each failure scenario per system")
    parser.add_argument("--only", choices=["speed", "failures"])
    parser.add_argument("--scenario", action="append", choices=[*SCENARIOS, "missing-id"],
                        help="failure scenarios to run (default: all); may be repeated")
    parser.add_argument("--system", action="append", choices=SYSTEMS, help="failure runs of this system only")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus-per-worker", type=float, default=0.5,
                        help="per actor, both systems (under 1 on 2 cores: Ray Data's read and write tasks need a CPU)")
    parser.add_argument("--unit-rows", type=int, default=500, help="rows per unit (ours) and per batch (Ray Data)")
    parser.add_argument("--tokens", type=int, default=8, help="every output is forced to this many tokens")
    parser.add_argument("--cluster-cpus", type=int, default=2, help="CPUs of each node of the two-node cluster")
    parser.add_argument("--s3-outage-s", type=float, default=20.0)
    parser.add_argument("--run-timeout", type=float, default=1800.0, help="seconds before a run is killed")
    parser.add_argument("--stall-s", type=float, default=300.0,
                        help="a run that starts or finishes no batch for this long is killed as stalled")
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray of each run (both systems)")
    parser.add_argument("--model", type=Path, help="a model package (default: bench/bulk.py's random one)")
    parser.add_argument("--name", default="bulk_vs_ray_data",
                        help="bench/out/NAME.md gets the tables, bench/out/NAME-runs/ every run's log")
    return parser.parse_args()


def decoding(tokens: int) -> list[str]:
    return ["beam_size=1", "max_len_a=0", f"max_len_b={tokens}", f"min_length={tokens}"]


def sentences(rows: int) -> list[str]:
    lines = (DATA / "train.tsv").read_text(encoding="utf-8").splitlines()[-rows:]
    return [line.split("\t")[0] for line in lines]


def write_input(storage: Storage, bucket: str, texts: list[str], unit_rows: int) -> float:
    """`in/` (id, source) and `in-noid/` (source) as one Parquet file of one row group each;
    returns the --unit-mb that cuts it into units of `unit_rows` rows."""
    table = pa.table({"id": [f"r{i}" for i in range(len(texts))], "source": texts})
    for folder, data in (("in", table), ("in-noid", table.drop(["id"]))):
        sink = io.BytesIO()
        pq.write_table(data, sink, row_group_size=len(texts))
        storage.write_bytes(f"s3://{bucket}/{folder}/{INPUT_FILE}", sink.getvalue())
        if folder == "in":
            group_bytes = pq.read_metadata(io.BytesIO(sink.getvalue())).row_group(0).total_byte_size
    return group_bytes / max(1, len(texts) // unit_rows) / (1 << 20)


def sample_reference(package: Path, texts: list[str], options: list[str]) -> Reference:
    """Outputs of SAMPLE rows spread over the input, from the bare Translator in this process."""
    import torch

    from s2s_core.generation import GenerationConfig, Translator
    from s2s_core.package import load_package

    torch.set_num_threads(1)
    config = GenerationConfig(**{k: int(v) for k, v in (o.split("=") for o in options)})
    picked = sorted(set(range(0, len(texts), max(1, len(texts) // SAMPLE))))
    results = Translator(load_package(package), config, threads=1)([texts[i] for i in picked])
    return Reference({f"r{i}": r.text for i, r in zip(picked, results)}, texts,
                     {texts[i]: r.text for i, r in zip(picked, results)})


def timings(run: Run, folder: Path) -> tuple[float | None, float | None]:
    """(start-up s: spawn to the first batch started; rows/s between the first and last batch done)."""
    mine = [c for c in calls(folder) if run.spawned_at <= c.at <= run.ended_at]
    starts, ends = [c for c in mine if c.event == "start"], [c for c in mine if c.event == "end"]
    startup = starts[0].at - run.spawned_at if starts else None
    span = ends[-1].at - ends[0].at if len(ends) > 1 else 0.0
    return startup, (sum(c.rows for c in ends[1:]) / span if span else None)


# -- speed ------------------------------------------------------------------------------------------

def speed(setup: Setup, reference: Reference) -> tuple[list[tuple], Reference]:
    """One clean run of each system; returns the table rows and the reference grown by ours' outputs."""
    rows, results = [], {}
    for system in SYSTEMS:
        attempt = Attempt(setup, "speed", system, 1)
        outcome = Outcome("speed", system, [attempt.run()])
        count(outcome, attempt, reference)
        results[system] = (attempt, outcome)
    ours = output_rows(setup.storage, results["ours"][0].output, "id")
    if results["ours"][1].finished:
        reference = Reference({**reference.by_id, **{r["id"]: r["output"] for r in ours}}, reference.sources,
                              reference.by_source)
    for system, (attempt, outcome) in results.items():
        count(outcome, attempt, reference)  # against every output of ours (itself: 0)
        rows.append(speed_row(system, attempt, outcome, len(setup.ids)))
    return rows, reference


def speed_row(system: str, attempt: Attempt, outcome: Outcome, total: int) -> tuple:
    run = outcome.runs[0]
    if not outcome.finished:
        return (system, f"failed (exit {run.rc}): {run.last_line}", *[""] * 11)
    startup, steady = timings(run, attempt.calls)
    p = run.peaks
    return (system, _num(startup, 1), _num(steady, 1), _num(total / run.wall_s, 1), _num(run.wall_s, 1),
            _num(p["driver"]), _num(p["workers"]), _num(p["largest worker"]), _num(p["services"]),
            _num(p["object store"], 1), str(outcome.lost), str(outcome.duplicated), str(outcome.mismatched))


SPEED_HEAD = ("system", "start-up s", "rows/s past start-up", "rows/s end to end", "wall s", "driver MB",
              "workers MB (sum)", "largest worker MB", "services MB", "object store MB", "lost", "duplicated",
              "outputs differing")


# -- failures ---------------------------------------------------------------------------------------

def failures(setup: Setup, reference: Reference, names: list[str], repeats: int,
             systems: tuple[str, ...] = SYSTEMS) -> list[list[Outcome]]:
    """Per scenario and system, its outcomes over the repeats (scenarios in the order given)."""
    table = []
    for name in names:
        if name == "missing-id":
            table.append([missing_id(setup, 1, reference)])
            continue
        for system in systems:
            outcomes = []
            for repeat in range(1, repeats + 1):
                print(f"[{time.strftime('%H:%M:%S')}] {name}, {system}, repeat {repeat}", file=sys.stderr, flush=True)
                outcomes.append(SCENARIOS[name](setup, system, repeat, reference))
            table.append(outcomes)
    return table


def failure_row(outcomes: list[Outcome]) -> tuple:
    """Values per repeat; what happened: what was injected, and why a run failed (exit -9: our SIGKILL)."""
    first = outcomes[0]
    each = lambda values: " / ".join(str(v) for v in values)  # noqa: E731
    notes = []
    for o in outcomes:
        notes += [r.note for r in o.runs if r.note]
        notes += [f"run {i + 1} exit {r.rc}: {r.last_line}" for i, r in enumerate(o.runs) if r.rc not in (0, -9)]
    return (first.scenario, first.system, f"{sum(o.finished for o in outcomes)}/{len(outcomes)}",
            each(len(o.runs) for o in outcomes), each(o.lost for o in outcomes), each(o.duplicated for o in outcomes),
            each(o.recomputed for o in outcomes), each(o.mismatched for o in outcomes),
            each(f"{o.seconds:.0f}" for o in outcomes), "; ".join(dict.fromkeys(notes))[:900])


FAILURE_HEAD = ("scenario", "system", "finished", "runs", "lost", "duplicated", "recomputed", "outputs differing",
                "time to finish s", "what happened")


# -- report -----------------------------------------------------------------------------------------

def markdown(head: tuple, rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]) + "\n"


def machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in
                     subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                     if line.startswith("Model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB; load average {os.getloadavg()[0]:.1f} at start"


def header(args: argparse.Namespace, setup: Setup) -> str:
    import ray

    return (f"# Bulk translate: ours beside Ray Data's exactly-once writes\n\n"
            f"{datetime.date.today().isoformat()}, {machine()}; Ray {ray.__version__}.\n"
            f"{len(setup.ids):,} real en-it sentences (train split's end), one Parquet file on SeaweedFS S3, "
            f"out to S3; transformer-small, random weights, {' '.join(setup.options)}; {setup.workers} workers x "
            f"{setup.cpus_per_worker:g} CPU (1 torch thread each) on a {setup.ray_cpus}-CPU local Ray; units / batches of "
            f"{setup.unit_rows} rows. Failures strike once {TRIGGER:.0%} of the rows are generated; "
            f"{args.repeats} repeat(s); S3 outage {setup.s3_outage_s:g} s; two-node cluster of "
            f"{setup.cluster_cpus} + {setup.cluster_cpus} CPUs; a run is stopped after {setup.run_timeout:g} s, or "
            f"after {setup.stall_s:g} s without a batch started or finished (\"stalled\").\n\n")


def _num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def main() -> None:
    args = parse_args()
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN)  # this process asks raylets for store use
    texts = sentences(args.rows)
    out_md, runs = OUT / f"{args.name}.md", OUT / f"{args.name}-runs"
    names = args.scenario or [*SCENARIOS, "missing-id"]
    with tempfile.TemporaryDirectory(prefix="bulk-vs-ray-data-") as tmp:
        work = Path(tmp)
        shutil.rmtree(runs, ignore_errors=True)
        (work / "package").mkdir()
        package = args.model or random_package(work / "package")
        s3 = RestartableS3(work / "s3")
        s3.start()
        try:
            storage = Storage(s3.server.settings())
            bucket = s3.server.create_bucket("bench")
            setup = Setup(package=package, storage=storage, s3=s3, bucket=bucket,
                          ids=[f"r{i}" for i in range(len(texts))],
                          unit_mb=write_input(storage, bucket, texts, args.unit_rows), unit_rows=args.unit_rows,
                          workers=args.workers, cpus_per_worker=args.cpus_per_worker, options=decoding(args.tokens),
                          work=runs, run_timeout=args.run_timeout, stall_s=args.stall_s, ray_cpus=args.ray_cpus,
                          s3_outage_s=args.s3_outage_s,
                          cluster_cpus=args.cluster_cpus)
            report = header(args, setup)
            reference = sample_reference(package, texts, setup.options)
            if args.only != "failures":
                rows, reference = speed(setup, reference)
                report += "## Speed and memory (one clean run each)\n\n" + markdown(SPEED_HEAD, rows) + "\n"
            if args.only != "speed":
                outcomes = failures(setup, reference, names, args.repeats, tuple(args.system or SYSTEMS))
                report += ("## Failures (values per repeat)\n\n"
                           + markdown(FAILURE_HEAD, [failure_row(o) for o in outcomes]) + "\n")
        finally:
            s3.stop()
    print(report)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(report)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}; logs of every run: {runs}", file=sys.stderr)


if __name__ == "__main__":
    main()
