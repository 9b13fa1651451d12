"""Benchmark the bulk job end to end (S3 in -> S3 out) against the bare `Translator`, in one run.

Same model, same sentences (the real en-it test split, 2,000 rows), same decoding options:

  bare Translator     s2s_core.generation.Translator on all sentences in this process (2 threads),
                      after a warm-up; no storage, no Ray.
  job, 1 x 2 CPUs     `s2s translate --input s3://... --output s3://...` in a subprocess against a
  job, 2 x 1 CPU      local SeaweedFS: Parquet in 8 units, Ray actor pool, commit markers, _SUCCESS.
                      "past start-up" is the job's own rate between its first and last committed
                      unit (Ray, Prefect and model loading excluded); "end to end" is spawn to exit.

The model is transformer-small with fixed random weights (or --model PKG) and a SentencePiece
model trained on 50k training sentences; outputs are forced to 25 tokens (min = max length) so
every run does the same work. Markdown table to stdout and bench/out/bulk.md.
Usage: .venv/bin/python bench/bulk.py [--model PKG] [--rows 2000] [--engine torch|ctranslate2]
       [--compute-type int8]   (ctranslate2: the package is exported first, into the package)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipelines.local_s3 import run_s3_server
from pipelines.storage import Storage
from s2s_core.data.config import TokenizerConfig
from s2s_core.generation import GenerationConfig, Translator
from s2s_core.models import build_model, model_config
from s2s_core.package import load_package, save_package
from s2s_core.tokenizer import Tokenizer, train_sentencepiece

REPO = Path(__file__).resolve().parents[1]

DATA = REPO.parent / "shared" / "data" / "en-it"
OUT_MD = REPO / "bench" / "out" / "bulk.md"
OPTIONS = ["beam_size=4", "max_len_a=0", "max_len_b=25", "min_length=25"]


def random_package(root: Path) -> Path:
    """transformer-small, fixed random weights, an 8k SentencePiece model of real sentences."""
    lines = (DATA / "train.tsv").read_text(encoding="utf-8").splitlines()[:50_000]
    pairs = [tuple(line.split("\t")[:2]) for line in lines]
    train_sentencepiece(pairs, root / "tokenizer", TokenizerConfig(vocab_size=8000))
    vocab = Tokenizer.from_dir(root / "tokenizer").vocab_size
    config = model_config("transformer-small", {"src_vocab_size": vocab, "tgt_vocab_size": vocab})
    torch.manual_seed(0)
    save_package(root / "model", build_model(config), config, root / "tokenizer", {"note": "random weights"})
    return root / "model"


def bare_rate(package: Path, sentences: list[str], engine: list[str]) -> float:
    torch.set_num_threads(2)
    overrides = {k: int(v) for k, v in (item.split("=") for item in OPTIONS)}
    engine_options = dict(item.split("=") for item in engine)
    translator = Translator(load_package(package), GenerationConfig(**overrides, **engine_options), threads=2)
    translator(sentences[:32])  # warm-up
    start = time.perf_counter()
    results = translator(sentences)
    seconds = time.perf_counter() - start
    assert all(r.tokens == 25 for r in results)
    return len(sentences) / seconds


def job_rate(server, package: Path, sentences: list[str], workers: int, cpus: int, name: str,
             engine: list[str]) -> tuple[float, float]:
    """(rows/s past start-up, rows/s end to end) of one bulk job from S3 to S3."""
    storage = Storage(server.settings())
    bucket = server.create_bucket(f"bench-{name}")
    for path in package.rglob("*"):
        if path.is_file():
            storage.upload(path, f"s3://{bucket}/model/{path.relative_to(package)}")
    table = pa.table({"id": [f"t{i}" for i in range(len(sentences))], "source": sentences})
    with tempfile.NamedTemporaryFile(suffix=".parquet") as tmp:
        pq.write_table(table, tmp.name)
        storage.upload(tmp.name, f"s3://{bucket}/in/test.parquet")
        unit_mb = pq.read_metadata(tmp.name).row_group(0).total_byte_size / 8 / (1 << 20)  # 8 row-range units
    env = {**os.environ, **server.env(), "S2S_LOCAL_RAY_CPUS": "2", "PYTHONPATH": str(REPO),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    command = [sys.executable, "-m", "pipelines.cli", "translate", "--model", f"s3://{bucket}/model",
               "--input", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out", "--id-column", "id",
               "--unit-mb", f"{unit_mb:.9f}", "--workers", str(workers), "--cpus-per-worker", str(cpus), *OPTIONS, *engine]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    summary = json.loads(storage.read_bytes(f"s3://{bucket}/out/_SUCCESS"))
    assert summary["rows_out"] == len(sentences) and summary["units"] == 8, summary
    return summary["throughput"]["rows_per_s_after_first_unit"], len(sentences) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model package (default: random transformer-small)")
    parser.add_argument("--rows", type=int, default=2000,
                        help="sentences: the test split's first N (up to 2,000), else the train split's last N")
    parser.add_argument("--engine", choices=["torch", "ctranslate2"], default="torch")
    parser.add_argument("--compute-type", default="default", help="e.g. int8 (both engines), float32")
    args = parser.parse_args()
    split = "test" if args.rows <= 2000 else "train"  # train's tail: real sentences, many of them
    lines = (DATA / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
    sentences = [line.split("\t")[0] for line in (lines[: args.rows] if split == "test" else lines[-args.rows:])]
    engine = [f"engine={args.engine}", f"compute_type={args.compute_type}"]
    with tempfile.TemporaryDirectory() as tmp:
        package = args.model or random_package(Path(tmp))
        if args.engine == "ctranslate2":
            from s2s_core.export.ct2 import EXPORT_DIR, export_ctranslate2
            export_ctranslate2(load_package(package), package / EXPORT_DIR)
        bare = bare_rate(package, sentences, engine)
        with run_s3_server(Path(tmp) / "s3") as server:
            jobs = {f"job, {w} x {c} CPU": job_rate(server, package, sentences, w, c, f"w{w}", engine)
                    for w, c in ((1, 2), (2, 1))}
    rows = [("bare Translator (2 threads)", f"{bare:,.1f}", "1.00", "", "")]
    rows += [(name, f"{steady:,.1f}", f"{steady / bare:.2f}", f"{e2e:,.1f}", f"{e2e / bare:.2f}")
             for name, (steady, e2e) in jobs.items()]
    table = (f"Bulk translate, {len(sentences):,} real en-it {split} sentences, transformer-small, beam 4, 25 tokens "
             f"each, engine {args.engine} ({args.compute_type}), S3 (SeaweedFS) in and out, 2 CPUs\n\n"
             "| run | rows/s past start-up | vs bare | rows/s end to end | vs bare |\n|---|---:|---:|---:|---:|\n"
             + "".join(f"| {' | '.join(row)} |\n" for row in rows))
    print(table)
    OUT_MD.parent.mkdir(parents=True, exist_ok=True)
    OUT_MD.write_text(table)


if __name__ == "__main__":
    main()
