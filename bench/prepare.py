"""Benchmark `s2s prepare` against a single-process baseline on the same corpus, in one run.

Each row runs in a fresh subprocess (of this script, or the `s2s` CLI), so its memory starts
clean; the parent samples that subprocess's process tree every 0.1 s with psutil. Rows:

  baseline          plain Python here (no Ray, Prefect or pipelines.*): read the TSV, split
                    lines and tabs, NFC + whitespace normalisation, the same filters, BLAKE2b-128
                    dedup in a set, hash split, one zstd Parquet file per split.
  ours: shard job   plan + fingerprint + claim_output + run_shard_job, tokenizer off, timed
                    after ray.init (Ray worker start-up is inside the time).
  ours: end to end  `s2s prepare` with the default config (tokenizer on), spawn to exit.
  tokenizer         train_sentencepiece alone on the 200k pairs the pipeline samples.

With --repeat N, wall time and peak memory are per-row medians. The markdown table goes to
stdout and bench/out/prepare.md.  Usage: .venv/bin/python bench/prepare.py [--repeat 3]

Two more modes (bench/prepare_scale.py), either or both in one run instead of the rows above:
  --scale 1,4,16    the whole `s2s prepare` on 1x/4x/16x distinct copies of the input: wall, peak
                    RSS of the tree and of the largest Ray task, that task's own memory (RSS less
                    the object-store pages it maps) and the object store's -> bench/out/prepare_scale.md
  --language-id     `s2s prepare` with clean.language_id off and on: wall ratio, the rejected
                    count and 20 random rejects -> bench/out/language_id.md
  --base-rows N     use the input's first N lines (smoke runs of either mode)
"""

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
import unicodedata
from hashlib import blake2b
from pathlib import Path

import psutil

# Sibling scripts, not a package: `python bench/prepare.py` puts bench/ on sys.path.
from scale_corpus import MB, REPO, child_env, failed, run_measured

DEFAULT_INPUT = "../shared/data/en-it/train.tsv"
OUT_MD = REPO / "bench" / "out" / "prepare.md"
TOKENIZER = "tokenizer (in end to end)"

# --- the baseline: the same cleaning rules as s2s_core.data.cleaning (defaults), by hand ---
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
MAX_CHARS, MAX_TOKENS, MAX_RATIO, RATIO_MIN_CHARS = 1000, 250, 3.0, 20
VALID_BELOW = int(0.01 * (1 << 64))           # split key < this: valid
TEST_BELOW = VALID_BELOW + int(0.01 * (1 << 64))  # then test; the rest: train


def clean(text: str) -> str:  # NFC, then whitespace runs (Unicode ones too) -> one space, trimmed
    return " ".join(unicodedata.normalize("NFC", text).split())


def clean_pair(line: bytes) -> tuple[str, str] | None:
    """The normalised (source, target) of a TSV line, or None when a filter rejects it."""
    try:
        fields = line.removesuffix(b"\r").decode("utf-8").split("\t")
    except UnicodeDecodeError:
        return None
    if len(fields) != 2 or CONTROL.search(fields[0]) or CONTROL.search(fields[1]):
        return None
    src, tgt = clean(fields[0]), clean(fields[1])
    longer, shorter = max(len(src), len(tgt)), min(len(src), len(tgt))
    if shorter == 0 or longer > MAX_CHARS or max(src.count(" "), tgt.count(" ")) + 1 > MAX_TOKENS:
        return None
    if (longer >= RATIO_MIN_CHARS and longer > MAX_RATIO * shorter) or src == tgt:
        return None
    return src, tgt


def run_baseline(path: str, out: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    seen: set[bytes] = set()
    splits = {name: ([], [], []) for name in ("train", "valid", "test")}
    counts = {"read": 0, "rejected": 0, "duplicates": 0}
    lines = Path(path).read_bytes().removeprefix(b"\xef\xbb\xbf").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for line in lines:
        counts["read"] += 1
        pair = clean_pair(line)
        if pair is None:
            counts["rejected"] += 1
            continue
        src, tgt = pair
        digest = blake2b(f"{len(src)}:{src}{tgt}".encode(), digest_size=16).digest()
        if digest in seen:
            counts["duplicates"] += 1
            continue
        seen.add(digest)
        key = int.from_bytes(digest[8:], "big")
        ids, sources, targets = splits["valid" if key < VALID_BELOW else "test" if key < TEST_BELOW else "train"]
        ids.append(digest.hex())
        sources.append(src)
        targets.append(tgt)
    out.mkdir(parents=True, exist_ok=True)
    for name, (ids, sources, targets) in splits.items():
        table = pa.table({"id": ids, "origin": [path] * len(ids), "source": sources, "target": targets})
        pq.write_table(table, out / f"{name}.parquet", compression="zstd")
        counts[name] = len(ids)
    return counts


# --- our pipeline's pieces, each run inside a child process ---
def run_shard_job(path: str, out: Path) -> dict:
    from pipelines import ray_runtime
    from pipelines.prepare import job
    from pipelines.prepare.plan import plan_inputs
    from pipelines.settings import load_settings
    from pipelines.storage import Storage
    from s2s_core.config import build, parse_overrides
    from s2s_core.data.config import PrepareConfig

    settings = load_settings()
    started = time.perf_counter()
    ray_runtime.ensure_ray(settings)
    ray_init = time.perf_counter() - started
    started = time.perf_counter()
    storage, config = Storage(settings.s3), build(PrepareConfig, parse_overrides(["tokenizer.enabled=false"]))
    plan = plan_inputs(storage, [(path, "auto")], config)
    fingerprints = job.fingerprint_inputs(storage, plan)
    job.claim_output(storage, str(out), job.dataset_id(fingerprints, config), overwrite=False)
    maps, shards, rejects = job.run_shard_job(storage, plan, config, str(out))
    wall = time.perf_counter() - started
    manifest = job.build_manifest("", fingerprints, config, maps, shards, rejects, None, plan)
    return flat_counts(manifest["counts"]) | {"wall": wall, "ray_init": ray_init, "chunks": len(plan.chunks),
                                              "shards": plan.num_shards}


def flat_counts(counts: dict) -> dict:
    """A manifest's `counts` in the baseline's shape."""
    return {"read": counts["read"], "rejected": sum(counts["rejected"].values()),
            "duplicates": counts["duplicates"], **counts["splits"]}


def run_tokenizer(dataset: str, out: Path) -> dict:
    import pyarrow.parquet as pq

    from s2s_core.data.config import TokenizerConfig
    from s2s_core.tokenizer import train_sentencepiece

    config, pairs = TokenizerConfig(), []
    for part in sorted((Path(dataset) / "train").glob("part-*.parquet")):
        table = pq.read_table(part, columns=["source", "target"]).slice(0, config.sample_pairs - len(pairs))
        pairs.extend(zip(table["source"].to_pylist(), table["target"].to_pylist()))
        if len(pairs) >= config.sample_pairs:
            break
    started = time.perf_counter()
    train_sentencepiece(pairs, out, config)
    return {"wall": time.perf_counter() - started, "read": len(pairs)}


def child(args: argparse.Namespace) -> None:
    """Entry point of a measured subprocess: run one row, print its result as JSON."""
    run = {"baseline": run_baseline, "shard": run_shard_job, "tokenizer": run_tokenizer}[args.row]
    started = time.perf_counter()
    result = run(args.input, Path(args.out))
    result.setdefault("wall", time.perf_counter() - started)
    print("RESULT " + json.dumps(result), flush=True)


# --- the parent: spawn, sample memory, tabulate ---
def measure(cmd: list[str], env: dict, log: Path) -> dict:
    """Run `cmd`, sampling its process tree's RSS every 0.1 s. Returns wall, peaks, its RESULT."""
    run = run_measured(cmd, env, log, interval=0.1)
    if run.returncode != 0:
        sys.exit(failed(cmd, run))
    found = [line[7:] for _, line in run.lines if line.startswith("RESULT ")]
    result = json.loads(found[-1]) if found else {"wall": run.wall}
    return result | {"process_wall": run.wall, "rss": run.peak_work / MB, "services": run.peak_services / MB}


def one_round(args: argparse.Namespace, tmp: Path) -> dict[str, dict]:
    """Measure every row once, in order (the tokenizer row reads the end-to-end output)."""
    env, me = child_env(args.cpus), [sys.executable, str(Path(__file__).resolve())]
    runs = {"baseline": [*me, "--row", "baseline", "--input", args.input, "--out", str(tmp / "baseline")],
            "ours: shard job": [*me, "--row", "shard", "--input", args.input, "--out", str(tmp / "shard")],
            "ours: end to end": [str(REPO / ".venv/bin/s2s"), "prepare", "--input", args.input,
                                 "--output", str(tmp / "e2e")],
            TOKENIZER: [*me, "--row", "tokenizer", "--input", str(tmp / "e2e"), "--out", str(tmp / "spm")]}
    rows = {}
    for i, (name, cmd) in enumerate(runs.items()):
        print(f"  {name} ...", file=sys.stderr, flush=True)
        rows[name] = measure(cmd, env, tmp / f"{i}.log")
    manifest = json.loads((tmp / "e2e" / "manifest.json").read_text())
    rows["ours: end to end"] |= {"wall": rows["ours: end to end"]["process_wall"]} | flat_counts(manifest["counts"])
    return rows


def median_rows(rounds: list[dict[str, dict]]) -> dict[str, dict]:
    keys = ("wall", "rss", "services", "process_wall", "ray_init")
    return {name: first | {k: statistics.median(r[name][k] for r in rounds) for k in keys if k in first}
            | {"walls": [r[name]["wall"] for r in rounds]} for name, first in rounds[0].items()}


def table(rows: dict[str, dict], input_rows: int, input_bytes: int) -> str:
    base = rows["baseline"]["wall"]
    lines = ["| run | wall s | rows/s | MB/s | peak RSS MB | services MB | ours / baseline |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        tokenizer = name.startswith("tokenizer")
        n = r["read"] if tokenizer else input_rows
        mb_s = "—" if tokenizer else f"{input_bytes / MB / r['wall']:.1f}"
        ratio = "—" if name == "baseline" or tokenizer else f"{r['wall'] / base:.2f}x"
        lines.append(f"| {name} | {r['wall']:.1f} | {n / r['wall']:,.0f} | {mb_s} | {r['rss']:,.0f} "
                     f"| {r['services']:,.0f} | {ratio} |")
    return "\n".join(lines)


def notes(rows: dict[str, dict], args: argparse.Namespace, input_rows: int, input_bytes: int) -> str:
    shard, e2e, base = rows["ours: shard job"], rows["ours: end to end"], rows["baseline"]
    keys = ("read", "rejected", "duplicates", "train", "valid", "test")
    counts = {name: "/".join(str(rows[name][k]) for k in keys) for name in ("baseline", "ours: shard job")}
    per_run = "; ".join(f"{name} {', '.join(f'{w:.1f}' for w in r['walls'])}" for name, r in rows.items())
    return "\n".join([
        f"Input `{args.input}`: {input_rows:,} lines, {input_bytes / MB:.1f} MB; {args.cpus or psutil.cpu_count()} "
        f"CPUs for Ray on a {psutil.cpu_count()}-core machine (load average {args.load:.1f} at start); median of "
        f"{args.repeat} run(s) (wall s per run: {per_run}).",
        "",
        f"- **Targets**: end to end {e2e['wall']:.1f} s (target < 90 s: {'met' if e2e['wall'] < 90 else 'MISSED'}); "
        f"shard job {shard['wall'] / base['wall']:.2f}x baseline (target <= 1.0x: "
        f"{'met' if shard['wall'] <= base['wall'] else 'MISSED'}).",
        "- **Wall**: baseline and tokenizer: the work only (in-process timer). Shard job: plan + fingerprint + "
        f"map/reduce, timed after `ray.init` (which took {shard['ray_init']:.1f} s; {shard['chunks']} chunks, "
        f"{shard['shards']} shards). End to end: spawn to exit of `s2s prepare`; of it, "
        f"{e2e['wall'] - shard['wall'] - rows[TOKENIZER]['wall']:.1f} s are neither shard job nor "
        "tokenizer training (Python, Ray and Prefect start-up, fingerprint, manifest, shutdown).",
        "- **rows/s, MB/s**: input lines and bytes / wall (tokenizer: its sampled pairs / wall).",
        "- **Peak RSS**: highest sum of RSS over the run's process tree (driver + Ray workers), sampled every "
        "0.1 s; pages shared between processes (Ray object store, libraries) count once per process, so this "
        "is an upper bound. **services**: Ray's gcs_server, raylet, dashboard/agents, monitors and Prefect's "
        "ephemeral API server, summed apart.",
        f"- **Same work**: read/rejected/duplicates/train/valid/test = {counts['baseline']} (baseline) vs "
        f"{counts['ours: shard job']} (ours). The baseline writes one Parquet file per split and no reject files.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", help=f"TSV corpus (default: {DEFAULT_INPUT}, relative to the repo)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per row; the median is reported")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    parser.add_argument("--scale", help="copies of the input, e.g. 1,4,16: the scale mode (see above)")
    parser.add_argument("--language-id", action="store_true", help="clean.language_id off vs on (see above)")
    parser.add_argument("--base-rows", type=int, default=None, help="--scale/--language-id: first N lines only")
    parser.add_argument("--row", choices=("baseline", "shard", "tokenizer"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.input = str((REPO / DEFAULT_INPUT).resolve() if args.input is None else Path(args.input).resolve())
    if args.row:
        return child(args)
    if args.scale or args.language_id:
        import prepare_scale  # the two corpus-scale modes

        if args.scale:
            prepare_scale.scale_mode(args)
        if args.language_id:
            prepare_scale.language_mode(args)
        return
    data = Path(args.input).read_bytes()  # also warms the page cache for the first row
    input_rows, input_bytes = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1), len(data)
    args.load = os.getloadavg()[0]  # other work on the machine skews every wall time
    rounds = []
    for i in range(args.repeat):
        print(f"round {i + 1}/{args.repeat}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:  # outputs: local temp dirs
            rounds.append(one_round(args, Path(tmp)))
    rows = median_rows(rounds)
    report = f"{table(rows, input_rows, input_bytes)}\n\n{notes(rows, args, input_rows, input_bytes)}\n"
    print(report)
    OUT_MD.parent.mkdir(parents=True, exist_ok=True)
    OUT_MD.write_text(report)


if __name__ == "__main__":
    main()
