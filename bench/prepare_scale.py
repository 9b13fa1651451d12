"""`bench/prepare.py --scale` and `--language-id`: the whole `s2s prepare` at corpus scale, and
the cost of language identification. Each run is `s2s prepare` (default config: shards,
tokenizer, token-id shards) in a fresh subprocess into a temporary output, its process tree
sampled every 0.2 s (bench/scale_corpus.py).

--scale 1,4,16   corpora of k distinct copies of the input; per scale: wall (spawn to exit),
                 peak RSS of the tree, of the driver, and of the largest single Ray worker
                 process (its `ray::<task>` title at the peak); the largest worker's own memory
                 (RSS less the object-store pages it maps, see bench/scale_corpus.py), and the
                 object store's; phase ends from the progress lines. A finished 1x/4x/16x
                 dataset is kept as bench/train_scale.py's cache.
--language-id    the input (its first --base-rows lines) prepared with clean.language_id off
                 and on, alternately, --repeat times; wall ratio; the wrong_language rejects:
                 their count and 20 of them drawn with a fixed seed, to bench/out/language_id.md.
                 Then, in this process, on the sides the map stage judges: the detector's cost per
                 string, py3langid string by string against s2s_core's batched `detect_many`
                 (alternating, CPU time), and the rows whose judgment differs between the two.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scale_corpus import (
    MB,
    REPO,
    S2S,
    build_corpus,
    cached_dataset,
    check_disk,
    child_env,
    failed,
    fmt,
    keep_as_cache,
    parse_scales,
    ratio,
    run_measured,
    verdict,
)

OUT = REPO / "bench" / "out"
RUNS = OUT / "prepare-runs"
PHASES = {"read": "prepare: reading", "shards": "prepare: writing shards", "ids": "prepare: token ids"}
TARGET_WALL_PER_COPY, TARGET_TASK_RSS, TARGET_LANGUAGE = 18 / 16, 1.25, 1.3
SAMPLE_SEED, SAMPLE_SIZE = 20261203, 20


def prepare_once(corpus: Path, output: Path, overrides: list[str], log: Path, env: dict) -> dict:
    """One measured `s2s prepare`; returns its row."""
    cmd = [S2S, "prepare", "--input", str(corpus), "--output", str(output), *overrides]
    run = run_measured(cmd, env, log)
    if run.returncode:
        sys.exit(failed(cmd, run))
    manifest = json.loads((output / "manifest.json").read_text())
    counts = manifest["counts"]
    workers = run.ray_workers()
    top = max(workers, key=lambda p: p.rss, default=None)
    own = max(workers, key=lambda p: p.part_peaks.get("own", 0), default=None)
    driver = run.procs.get(run.root)
    phases = {name: run.last_line(prefix) for name, prefix in PHASES.items()}  # when each stage ended
    return {"wall": run.wall, "tree_mb": run.peak_work / MB, "services_mb": run.peak_services / MB,
            "driver_mb": driver.rss / MB if driver else 0.0, "task_mb": top.rss / MB if top else 0.0,
            "task_title": top.title if top else "", "ray_workers": len(workers),
            "task_parts_mb": {k: v / MB for k, v in top.parts_at_peak.items()} if top else {},
            "own_mb": own.part_peaks.get("own", 0) / MB if own else 0.0,
            "own_title": own.part_titles.get("own", "") if own else "", "shared_mb": run.peak_shared / MB,
            "phases": phases,
            "read": counts["read"], "rejected": counts["rejected"], "duplicates": counts["duplicates"],
            "splits": counts["splits"], "shards": len(manifest["shards"]["train"])}


def median_row(runs: list[dict]) -> dict:
    keys = ("wall", "tree_mb", "services_mb", "driver_mb", "task_mb", "own_mb", "shared_mb")
    return runs[-1] | {k: statistics.median(r[k] for r in runs) for k in keys} | {"walls": [r["wall"] for r in runs]}


# --- --scale ---
def scale_mode(args: argparse.Namespace) -> None:
    env, source, rows, scales = child_env(args.cpus), Path(args.input), [], parse_scales(args.scale)
    check_disk(source, args.base_rows, scales)
    for scale in scales:
        corpus = build_corpus(source, args.base_rows, scale)
        runs = []
        for i in range(args.repeat):
            print(f"  {scale}x, run {i + 1}/{args.repeat} ...", file=sys.stderr, flush=True)
            output = Path(tempfile.mkdtemp(prefix=f"bench-prepare-{scale}x-", dir=OUT))
            row = prepare_once(corpus, output / "data", [], RUNS / f"scale-{scale}x-{i}.log", env)
            keep_as_cache(output / "data", cached_dataset(corpus))  # bench/train_scale.py reuses it
            shutil.rmtree(output, ignore_errors=True)
            runs.append(row)
        rows.append(median_row(runs) | {"scale": scale, "mb": corpus.stat().st_size / MB})
    base = rows[0]
    for r in rows:
        r["wall_vs_base"], r["task_vs_base"] = ratio(r["wall"], base["wall"]), ratio(r["task_mb"], base["task_mb"])
        r["tree_vs_base"], r["own_vs_base"] = ratio(r["tree_mb"], base["tree_mb"]), ratio(r["own_mb"], base["own_mb"])
    report = f"{scale_table(rows)}\n\n{scale_notes(rows, args)}\n"
    write("prepare_scale", report, {"args": vars(args), "rows": rows})


def scale_table(rows: list[dict]) -> str:
    lines = ["| scale | input MB | lines | train pairs | shards | wall s | vs 1x | reading / shards / ids done at s "
             "| tree peak MB | driver MB | largest Ray task RSS MB | vs 1x | of it: store pages MB | at its peak "
             "| largest Ray task own MB | vs 1x | at its peak | object store MB |",
             "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---|---:|"]
    for r in rows:
        phases = " / ".join(fmt(r["phases"][name], ".0f") for name in PHASES)
        store_pages = r.get("task_parts_mb", {}).get("shmem")
        lines.append(f"| {r['scale']}x | {r['mb']:,.0f} | {r['read']:,} | {r['splits']['train']:,} | {r['shards']} "
                     f"| {r['wall']:.1f} | {fmt(r['wall_vs_base'], '.2f', 'x')} | {phases} | {r['tree_mb']:,.0f} "
                     f"| {r['driver_mb']:,.0f} | {r['task_mb']:,.0f} | {fmt(r['task_vs_base'], '.2f', 'x')} "
                     f"| {fmt(store_pages)} | `{r['task_title'][:40]}` | {r['own_mb']:,.0f} "
                     f"| {fmt(r['own_vs_base'], '.2f', 'x')} | `{r['own_title'][:40]}` | {r['shared_mb']:,.0f} |")
    return "\n".join(lines)


def scale_notes(rows: list[dict], args: argparse.Namespace) -> str:
    low, top = rows[0], rows[-1]
    k = top["scale"] / low["scale"]
    wall_ok = None if k == 1 else top["wall_vs_base"] <= TARGET_WALL_PER_COPY * k
    task_ok = None if k == 1 else top["own_vs_base"] <= TARGET_TASK_RSS
    rss_ok = None if k == 1 else top["task_vs_base"] <= TARGET_TASK_RSS
    per_run = "; ".join(f"{r['scale']}x {', '.join(f'{w:.1f}' for w in r['walls'])}" for r in rows)
    base = f"the first {args.base_rows:,} lines of" if args.base_rows else "all of"
    return "\n".join([
        f"- **Targets** ({top['scale']}x against {low['scale']}x; the issue's are 16x against 1x): wall "
        f"{fmt(top['wall_vs_base'], '.2f', 'x')} (target <= {TARGET_WALL_PER_COPY * k:.1f}x, i.e. 18x at 16x): "
        f"{verdict(wall_ok)}; largest Ray task's own memory {fmt(top['own_vs_base'], '.2f', 'x')} (target <= "
        f"{TARGET_TASK_RSS}x): {verdict(task_ok)} (its RSS, object-store pages included: "
        f"{fmt(top['task_vs_base'], '.2f', 'x')}, {verdict(rss_ok)}).",
        f"- Input: {base} `{args.input}`, copied k times (copy j > 0 marked `copyJJ` on both sides so "
        f"deduplication keeps it); `s2s prepare` with the default config (shards, SentencePiece on its "
        f"sample, token-id shards). {args.cpus or psutil.cpu_count()} CPUs for Ray on a {psutil.cpu_count()}-core "
        f"machine; median of {args.repeat} run(s) (wall s per run: {per_run}).",
        "- **wall**: spawn to exit. **reading / shards / ids done at**: seconds from the spawn to the last "
        "progress line of the map stage, the shard writes and the token-id shards (the tokenizer trains "
        "between shards and ids). **tree peak**: highest sum of RSS over the process tree less Ray's and "
        "Prefect's services; **driver**: the `s2s prepare` process; **largest Ray task**: the highest RSS "
        "of one Ray worker process (a worker runs many tasks in turn, so this is the largest task's "
        "memory plus what the process kept from earlier ones), with its title at that peak; **of it: store "
        "pages**: the shared memory in that RSS at its peak, i.e. the pages of Ray's object store (a /dev/shm "
        "file every worker maps) that the worker touched while it wrote map outputs or read reduce inputs. "
        "They stay in its RSS as long as it lives, whatever task it runs next; they are the store's memory, "
        "not the task's. **own**: the highest RSS less shared memory (private anonymous + file pages, "
        "/proc/PID/status) of one Ray worker: the task's own footprint, which the target is judged on. "
        "**object store**: the highest shared memory mapped by the Ray workers and the raylet together, "
        "each page once (sum of their smaps_rollup Pss_Shmem): the shuffle held in Ray's object store, "
        "bounded by its object_store_memory (Ray spills beyond it).",
    ])


# --- --language-id ---
def language_mode(args: argparse.Namespace) -> None:
    env, rows = child_env(args.cpus), {"off": [], "on": []}
    corpus = build_corpus(Path(args.input), args.base_rows, 1)
    rejects, manifest_count = None, 0
    for i in range(args.repeat):
        for mode in ("off", "on"):
            print(f"  language id {mode}, run {i + 1}/{args.repeat} ...", file=sys.stderr, flush=True)
            output = Path(tempfile.mkdtemp(prefix="bench-prepare-lid-", dir=OUT))
            overrides = [f"clean.language_id.enabled={'true' if mode == 'on' else 'false'}"]
            row = prepare_once(corpus, output / "data", overrides, RUNS / f"language-{mode}-{i}.log", env)
            rows[mode].append(row)
            if mode == "on":
                rejects = wrong_language_rows(output / "data")
                manifest_count = row["rejected"].get("wrong_language", 0)
            shutil.rmtree(output, ignore_errors=True)
    off, on = median_row(rows["off"]), median_row(rows["on"])
    assert rejects is not None
    print("  language id: the detector alone, in this process ...", file=sys.stderr, flush=True)
    detector = detector_comparison(corpus)
    report = language_report(args, off, on, rejects, manifest_count) + detector_report(detector)
    write("language_id", report, {"args": vars(args), "off": off, "on": on, "rejected": manifest_count,
                                  "detector": detector, "sample": sample_rows(rejects)})


def detector_comparison(corpus: Path, strings: int = 40_000, repeat: int = 3) -> dict:
    """py3langid string by string (what `wrong_language` does) against `language_rejects` (batched),
    on the pairs of `corpus` that pass the other filters, with the default settings: CPU us per
    string on the first `strings` judged sides (best of `repeat`, alternating), and judgments on all."""
    from s2s_core.data import language
    from s2s_core.data.cleaning import normalize, reject_reasons
    from s2s_core.data.config import CleanConfig
    from s2s_core.data.readers import parse_tsv

    clean = CleanConfig()
    lid = clean.language_id
    rows = parse_tsv(corpus.read_bytes(), True).rows
    raw_source, raw_target = rows["source"].combine_chunks(), rows["target"].combine_chunks()
    source, target = normalize(raw_source, clean), normalize(raw_target, clean)
    judged = pc.indices_nonzero(pc.is_null(reject_reasons(raw_source, raw_target, source, target, clean)))
    sources, targets = pc.take(source, judged).to_pylist(), pc.take(target, judged).to_pylist()
    texts = [t for pair in zip(sources, targets) for t in pair if len(t) >= lid.min_chars][:strings]
    language.detect_many(texts[:10])  # load the model before timing
    cost: dict[str, list[float]] = {"py3langid": [], "detect_many": []}
    for _ in range(repeat):
        for name, run in (("py3langid", lambda: [language.detect(t) for t in texts]),
                          ("detect_many", lambda: language.detect_many(texts))):
            started = time.process_time()
            run()
            cost[name].append((time.process_time() - started) / len(texts) * 1e6)
    check = language.LanguageCheck(lid.source, lid.target, lid.min_chars, lid.min_confidence)
    new = language.language_rejects(sources, targets, lid)
    old = {i: d for i, (s, t) in enumerate(zip(sources, targets)) if (d := language.wrong_language(s, t, check))}
    return {"pairs": len(sources), "strings": len(texts), "us_per_string": {k: min(v) for k, v in cost.items()},
            "runs_us": cost, "rejected_before": len(old), "rejected_after": len(new),
            "judgment_changed": len(set(old) ^ set(new)),
            "detail_changed": sum(old[i] != new[i] for i in set(old) & set(new))}


def detector_report(d: dict) -> str:
    before, after = d["us_per_string"]["py3langid"], d["us_per_string"]["detect_many"]
    return (f"\n- **The detector alone** (in one process, CPU time, best of {len(d['runs_us']['py3langid'])} "
            f"alternating runs on {d['strings']:,} judged sides): py3langid string by string {before:.1f} us per "
            f"string, batched `detect_many` {after:.1f} us ({before / after:.1f}x faster). Judgments on all "
            f"{d['pairs']:,} judged pairs: {d['rejected_before']:,} rejected before, {d['rejected_after']:,} after; "
            f"{d['judgment_changed']} rows judged differently, {d['detail_changed']} with a different detail.\n")


def wrong_language_rows(data: Path) -> list[dict]:
    """Every wrong_language reject of the dataset, in file order."""
    found = []
    for path in sorted((data / "rejects").glob("input-*.parquet")):
        table = pq.read_table(path, columns=["row", "reason", "detail", "source", "target"])
        found += table.filter(pc.equal(table["reason"], "wrong_language")).to_pylist()
    return found


def sample_rows(rejects: list[dict]) -> list[dict]:
    chosen = random.Random(SAMPLE_SEED).sample(range(len(rejects)), min(SAMPLE_SIZE, len(rejects)))
    return [rejects[i] for i in sorted(chosen)]


def cell(text: str | None, limit: int = 120) -> str:
    text = (text or "").replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def language_report(args: argparse.Namespace, off: dict, on: dict, rejects: list[dict], count: int) -> str:
    slowdown = ratio(on["wall"], off["wall"])
    read_off, read_on = off["phases"]["read"], on["phases"]["read"]
    kept = on["splits"]["train"] + on["splits"]["valid"] + on["splits"]["test"]
    base = f"the first {args.base_rows:,} lines of" if args.base_rows else "all of"
    walls = "; ".join(f"{mode} {', '.join(f'{w:.1f}' for w in r['walls'])}" for mode, r in (("off", off), ("on", on)))
    lines = [
        "| clean.language_id | wall s | reading done at s | tree peak MB | largest Ray task MB | rejected | kept |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(f"| {mode} | {r['wall']:.1f} | {fmt(r['phases']['read'], '.1f')} | {r['tree_mb']:,.0f} | {r['task_mb']:,.0f} "
          f"| {sum(r['rejected'].values()):,} | {sum(r['splits'].values()):,} |" for mode, r in (("off", off), ("on", on))),
        "",
        f"- **Target**: prepare with language id {fmt(slowdown, '.2f', 'x')} the time without (target <= "
        f"{TARGET_LANGUAGE}x): {verdict(None if slowdown is None else slowdown <= TARGET_LANGUAGE)}. The map stage "
        f"(reading done at) went from {fmt(read_off, '.1f')} s to {fmt(read_on, '.1f')} s.",
        f"- **Rejected as wrong_language**: {count:,} of {on['read']:,} rows ({count / max(on['read'], 1):.2%}); "
        f"{kept:,} kept. Input: {base} `{args.input}`; default settings (en/it, sides of 20+ characters "
        f"judged, rejected at probability >= 0.9); median of {args.repeat} run(s) each (wall s: {walls}); "
        f"{args.cpus or psutil.cpu_count()} CPUs for Ray.",
        "",
        f"{min(SAMPLE_SIZE, len(rejects))} of them drawn at random (seed {SAMPLE_SEED}), with the detector's verdict:",
        "",
        "| row | detected | source | target |",
        "|---:|---|---|---|",
        *(f"| {r['row']} | {cell(r['detail'])} | {cell(r['source'])} | {cell(r['target'])} |" for r in sample_rows(rejects)),
    ]
    return "\n".join(lines) + "\n"


def write(name: str, report: str, data: dict) -> None:
    print(report)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.md").write_text(report)
    (OUT / f"{name}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
