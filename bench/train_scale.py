"""Training data loading at corpus scale: `s2s train` on 1x, 4x and 16x the corpus, both loaders.

For every scale k, a corpus of k distinct copies of the input TSV (bench/scale_corpus.py) is
prepared once with the default config (cached under bench/out/scale/, so a rerun skips it);
then, per loader (`batching.loader=memory`: today's, the whole split read and tokenized in each
worker; `stream`: token-id shards a window at a time), `s2s train` runs as a subprocess:
transformer-small, --workers 2, --steps optimiser steps, no validation, one checkpoint at the end.
The parent samples the process tree every 0.2 s (psutil) and reports:

  peak RSS / worker   the highest RSS of any Ray Train worker process (title `ray::RayTrainWorker`)
  first step          spawn of `s2s train` to its progress line of step 1 (log_every=1)
  workers -> step 1   first sample of a RayTrainWorker process to that line (data loading, model)
  tokens/s            the trainer's own metrics (OUTPUT/metrics/train.jsonl): non-padding tokens
                      over step time, steps 2..N (step 1 also loads the first window)

Usage: .venv/bin/python bench/train_scale.py [--scales 1,4,16] [--steps 30] [--base-rows N]
Writes bench/out/train_scale.md and bench/out/train_scale.json; logs in bench/out/train_scale-runs/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

# A sibling script, not a package: `python bench/train_scale.py` puts bench/ on sys.path.
from scale_corpus import (
    DEFAULT_INPUT,
    MB,
    REPO,
    S2S,
    build_corpus,
    cached_dataset,
    check_disk,
    child_env,
    failed,
    fmt,
    is_prepared,
    keep_as_cache,
    parse_scales,
    ratio,
    run_measured,
    verdict,
)

OUT = REPO / "bench" / "out"
RUNS = OUT / "train_scale-runs"
WORKER_MARK = "RayTrainWorker"
TARGET_RSS, TARGET_FIRST, TARGET_TOKENS = 1.25, 1.25, 0.95


def prepare_dataset(corpus: Path, env: dict) -> dict:
    """The cached default prepare of `corpus` (made now if missing); returns its manifest."""
    data = cached_dataset(corpus)
    if not is_prepared(data):
        print(f"  preparing {corpus.name} (cached for later runs) ...", file=sys.stderr, flush=True)
        staging = data.with_name(data.name + ".staging")
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [S2S, "prepare", "--input", str(corpus), "--output", str(staging)]
        run = run_measured(cmd, env, RUNS / f"prepare-{corpus.stem}.log", interval=1.0)
        if run.returncode:
            sys.exit(failed(cmd, run))
        keep_as_cache(staging, data)
        print(f"  prepared in {run.wall:.0f} s", file=sys.stderr, flush=True)
    return json.loads((data / "manifest.json").read_text())


def tokens_per_s(metrics: Path) -> tuple[float | None, float | None, float | None]:
    """(tokens/s over steps 2..N, seconds of step 1, mean padding) from the run's train.jsonl."""
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line] if metrics.is_file() else []
    later = [r for r in records if r["step"] >= 2]
    first = next((r["seconds_per_step"] for r in records if r["step"] == 1), None)
    if not later:
        return None, first, None
    tokens = sum(r["tokens_per_s"] * r["seconds_per_step"] for r in later)
    return (tokens / sum(r["seconds_per_step"] for r in later), first,
            statistics.mean(r["padding"] for r in later))


def train_once(args: argparse.Namespace, data: Path, scale: int, loader: str, env: dict, i: int) -> dict:
    """Measured `s2s train` run `i` of (scale, loader); returns its row."""
    with tempfile.TemporaryDirectory(prefix="bench-train-scale-") as tmp:
        output = Path(tmp) / "run"
        cmd = [S2S, "train", "--data", str(data), "--output", str(output), "--workers", str(args.workers),
               "--cpus-per-worker", str(args.cpus_per_worker), f"preset={args.preset}", f"max_steps={args.steps}",
               "log_every=1", "validation.every_steps=0", f"checkpoint.every_steps={args.steps}",
               f"batching.loader={loader}", *args.overrides]
        run = run_measured(cmd, env, RUNS / f"{scale}x-{loader}-{i}.log", interval=args.interval)
        if run.returncode:
            sys.exit(failed(cmd, run))
        tok_s, step1_s, padding = tokens_per_s(output / "metrics" / "train.jsonl")
    workers = [p for p in run.procs.values() if p.seen_as(WORKER_MARK) is not None]
    first_step = run.first_line("train: step 1/")  # the driver's progress line for step 1
    up = min((p.seen_as(WORKER_MARK) for p in workers), default=None)
    return {"scale": scale, "loader": loader, "workers_seen": len(workers),
            "peak_rss_worker_mb": max((p.rss for p in workers), default=0) / MB,
            "peak_rss_workers_mb": sorted((round(p.rss / MB) for p in workers), reverse=True),
            "first_step_s": first_step, "workers_up_s": up,
            "workers_to_first_step_s": first_step - up if first_step is not None and up is not None else None,
            "step1_s": step1_s, "tokens_per_s": tok_s, "padding": padding, "wall_s": run.wall,
            "tree_peak_mb": run.peak_work / MB, "services_peak_mb": run.peak_services / MB}


def median_run(runs: list[dict]) -> dict:
    """Per-field medians of repeated runs (fields that are numbers in every run), plus each run's
    tokens/s and time to first step."""
    numeric = [k for k, v in runs[0].items() if k != "scale" and isinstance(v, (int, float))
               and all(isinstance(r.get(k), (int, float)) for r in runs)]
    return runs[-1] | {k: statistics.median(r[k] for r in runs) for k in numeric} \
        | {"runs_tokens_per_s": [r["tokens_per_s"] for r in runs], "runs_first_step_s": [r["first_step_s"] for r in runs]}


def add_ratios(rows: list[dict]) -> None:
    """vs the smallest scale (same loader) and stream vs memory (same scale), in place."""
    base = {r["loader"]: r for r in rows if r["scale"] == rows[0]["scale"]}
    by = {(r["scale"], r["loader"]): r for r in rows}
    for r in rows:
        b = base.get(r["loader"])
        r["rss_vs_base"] = ratio(r["peak_rss_worker_mb"], b and b["peak_rss_worker_mb"])
        r["first_step_vs_base"] = ratio(r["first_step_s"], b and b["first_step_s"])
        memory = by.get((r["scale"], "memory"))
        r["rss_vs_memory"] = ratio(r["peak_rss_worker_mb"], memory and memory["peak_rss_worker_mb"])
        r["first_step_vs_memory"] = ratio(r["first_step_s"], memory and memory["first_step_s"])
        r["tokens_vs_memory"] = ratio(r["tokens_per_s"], memory and memory["tokens_per_s"])


def table(rows: list[dict]) -> str:
    x = ".2f"
    lines = ["| scale | train pairs | shards | loader | peak RSS / worker MB | vs 1x | first step s | vs 1x "
             "| workers -> step 1 s | tokens/s | padding | stream / memory: RSS, first step, tokens/s |",
             "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        versus = "—" if r["loader"] == "memory" else \
            f"{fmt(r['rss_vs_memory'], x, 'x')}, {fmt(r['first_step_vs_memory'], x, 'x')}, " \
            f"{fmt(r['tokens_vs_memory'], x, 'x')}"
        lines.append(
            f"| {r['scale']}x | {r['train_pairs']:,} | {r['shards']} | {r['loader']} | {r['peak_rss_worker_mb']:,.0f} "
            f"| {fmt(r['rss_vs_base'], x, 'x')} | {fmt(r['first_step_s'], '.1f')} "
            f"| {fmt(r['first_step_vs_base'], x, 'x')} | {fmt(r['workers_to_first_step_s'], '.1f')} "
            f"| {fmt(r['tokens_per_s'])} | {fmt(r['padding'], '.1%')} | {versus} |")
    return "\n".join(lines)


def targets(rows: list[dict]) -> list[str]:
    """The issue's targets, for the stream loader at the largest scale against the smallest."""
    top = max(r["scale"] for r in rows)
    low = min(r["scale"] for r in rows)
    stream = {r["scale"]: r for r in rows if r["loader"] == "stream"}
    if not stream:
        return ["- **Targets**: not judged (no `stream` run)."]
    s = stream.get(top) or {}
    rss, first = s.get("rss_vs_base"), s.get("first_step_vs_base")
    tokens = [r["tokens_vs_memory"] for r in stream.values() if r.get("tokens_vs_memory") is not None]
    worst = min(tokens) if tokens else None
    return [
        f"- **Targets** (stream loader, {top}x against {low}x; the issue's are 16x against 1x):",
        f"  - peak RSS per worker {fmt(rss, '.2f', 'x')} (target <= {TARGET_RSS}x): "
        f"{verdict(None if rss is None else rss <= TARGET_RSS)}",
        f"  - time to first step {fmt(first, '.2f', 'x')} (target <= {TARGET_FIRST}x): "
        f"{verdict(None if first is None else first <= TARGET_FIRST)}",
        f"  - tokens/s against the memory loader, worst scale {fmt(worst, '.2f', 'x')} (target >= "
        f"{TARGET_TOKENS}x): {verdict(None if worst is None else worst >= TARGET_TOKENS)}",
    ]


def notes(rows: list[dict], args: argparse.Namespace, prepared: dict[int, dict]) -> str:
    per_run = "; ".join(f"{r['scale']}x {r['loader']} {r['wall_s']:.0f} s (tree peak {r['tree_peak_mb']:,.0f} MB, "
                        f"workers {r['peak_rss_workers_mb']} MB; tokens/s per run "
                        f"{', '.join(fmt(t) for t in r['runs_tokens_per_s'])}; first step s per run "
                        f"{', '.join(fmt(t, '.1f') for t in r['runs_first_step_s'])})" for r in rows)
    base = f"the first {args.base_rows:,} lines of" if args.base_rows else "all of"
    return "\n".join([
        *targets(rows), "",
        f"Input: {base} `{args.input}`, copied k times (copy j > 0 marked `copyJJ` on both sides so "
        f"deduplication keeps it), prepared with the default config (token-id shards: "
        f"{', '.join(f'{k}x {m}' for k, m in prepared.items())} shards). `s2s train` with preset="
        f"{args.preset}, --workers {args.workers} --cpus-per-worker {args.cpus_per_worker}, {args.steps} steps, "
        f"log_every=1, no validation, one checkpoint at the end{', ' + ' '.join(args.overrides) if args.overrides else ''}. "
        f"Machine: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / (1 << 30):.0f} GiB, load average "
        f"{args.load:.1f} at start. Median of {args.repeat} run(s) per row, the loaders alternating.",
        "",
        "- **peak RSS / worker**: highest RSS of a Ray Train worker process (sampled every "
        f"{args.interval} s; shared library pages count in each). **first step**: spawn of `s2s train` to "
        "its progress line for step 1 (includes Prefect and Ray start-up, the same at every scale; the "
        "driver polls progress every 0.5 s). **workers -> step 1**: the first sample of a worker process "
        "to that line (data loading, model build, step 1). **tokens/s**: non-padding source + target "
        "tokens per second of step time over steps 2..N, from the trainer's metrics.",
        f"- Whole runs (spawn to exit, median; worker peaks of the last run): {per_run}.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", default=str(DEFAULT_INPUT), help="TSV corpus (default: %(default)s)")
    parser.add_argument("--base-rows", type=int, default=None, help="use only the first N lines (smoke runs)")
    parser.add_argument("--scales", default="1,4,16", help="copies of the corpus, comma-separated")
    parser.add_argument("--loaders", default="memory,stream", help="batching.loader values, comma-separated")
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps per run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus-per-worker", type=int, default=1)
    parser.add_argument("--preset", default="transformer-small")
    parser.add_argument("--repeat", type=int, default=1, help="runs per (scale, loader); medians are reported")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between memory samples")
    parser.add_argument("overrides", nargs="*", help="more train config overrides (key=value)")
    args = parser.parse_args()
    args.input = str(Path(args.input).resolve())
    loaders = [name.strip() for name in args.loaders.split(",") if name.strip()]
    args.load, env = os.getloadavg()[0], child_env()
    scales = parse_scales(args.scales)
    check_disk(Path(args.input), args.base_rows, scales)
    rows, prepared = [], {}
    for scale in scales:
        corpus = build_corpus(Path(args.input), args.base_rows, scale)
        manifest = prepare_dataset(corpus, env)
        shards = manifest["token_ids"]["shards"]["train"]
        prepared[scale] = len(shards)
        runs: dict[str, list[dict]] = {loader: [] for loader in loaders}
        for i in range(args.repeat):  # loaders alternate, so slow drift on the machine hits both
            for loader in loaders:
                print(f"{scale}x {loader}, run {i + 1}/{args.repeat} ...", file=sys.stderr, flush=True)
                started = time.perf_counter()
                runs[loader].append(train_once(args, cached_dataset(corpus), scale, loader, env, i))
                print(f"  {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        for loader in loaders:
            rows.append(median_run(runs[loader]) | {"train_pairs": manifest["counts"]["splits"]["train"],
                                                   "shards": len(shards)})
    add_ratios(rows)
    report = f"{table(rows)}\n\n{notes(rows, args, prepared)}\n"
    print(report)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "train_scale.md").write_text(report)
    (OUT / "train_scale.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
