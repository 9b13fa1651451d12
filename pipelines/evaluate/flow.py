"""Prefect flow `evaluate_model`: translate a test set with a model package and score it.

Writes OUTPUT/report.json (scores with sacrebleu's signatures, model id, test-set fingerprint,
decoding options, speed) and OUTPUT/report.md, also attached to the run as a markdown artifact.
Scores are computed on detokenized text, so they compare with published sacrebleu numbers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import time
from dataclasses import dataclass

import pyarrow.parquet as pq
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from pipelines.generate.worker import local_package, package_id, resolve_generation
from pipelines.retry import io_task_options
from pipelines.settings import load_settings
from pipelines.storage import NotFound, Storage, absolute, basename, join
from pipelines.train.data import shard_uris
from s2s_core.config import to_dict
from s2s_core.errors import ConfigError, InputError
from s2s_core.metrics import translation_scores


@dataclass(frozen=True)
class TestSet:
    sources: list[str]
    references: list[str]
    origins: list[str] | None
    fingerprint: str


def read_test_set(storage: Storage, uri: str) -> TestSet:
    """A prepared dataset's test split, a TSV (source, reference[, origin]) or a Parquet file
    (columns source, target[, origin]).

    Raises:
        InputError: unreadable, empty, or without the needed columns (naming the file and line).
    """
    if uri.endswith((".tsv", ".parquet")) and not storage.exists(uri):
        raise InputError(uri, "not found")
    if uri.endswith(".tsv"):
        rows = _tsv_rows(storage, uri)
    elif uri.endswith(".parquet"):
        rows = _parquet(storage, uri)
    else:
        try:
            manifest = json.loads(storage.read_bytes(join(uri, "manifest.json")))
        except NotFound:
            raise InputError(uri, "is not a test set: give a prepared dataset, a .tsv or a .parquet file") from None
        rows = [row for shard in shard_uris(uri, manifest, "test") for row in _parquet(storage, shard)]
    if not rows:
        raise InputError(uri, "the test set is empty")
    sources, references = [r[0] for r in rows], [r[1] for r in rows]
    origins = [r[2] for r in rows] if all(len(r) > 2 and r[2] for r in rows) else None
    digest = hashlib.sha256("\n".join(f"{s}\t{t}" for s, t in zip(sources, references)).encode()).hexdigest()
    return TestSet(sources, references, origins, digest[:16])


def _parquet(storage: Storage, uri: str) -> list[tuple]:
    table = pq.read_table(io.BytesIO(storage.read_bytes(uri)))
    missing = [c for c in ("source", "target") if c not in table.column_names]
    if missing:
        raise InputError(uri, f"has no column {missing[0]!r} (a test set needs source and target)")
    columns = ["source", "target"] + (["origin"] if "origin" in table.column_names else [])
    return list(zip(*(table.column(c).to_pylist() for c in columns)))


def _tsv_rows(storage: Storage, uri: str) -> list[tuple]:
    rows = []
    for number, line in enumerate(storage.read_bytes(uri).decode("utf-8").splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) < 2:
            raise InputError(uri, f"line {number} has {len(fields)} field (source TAB reference expected)")
        rows.append(tuple(fields[:3]))
    return rows


@task
def read(storage: Storage, uri: str) -> TestSet:
    return read_test_set(storage, uri)


def _run_name() -> str:
    from prefect.runtime import flow_run
    test = basename(str(flow_run.parameters.get("test", "test")).rstrip("/")).split(".")[0] or "test"
    return f"evaluate-{test}-{dt.date.today():%Y%m%d}"


@flow(name="evaluate_model", flow_run_name=_run_name)
def evaluate_model(model: str, test: str, output: str, task: str = "translate", config_file: str | None = None,
                   overrides: list[str] | None = None, bootstrap: int = 0) -> dict:
    """Score `model` on `test`; returns the report (also written to OUTPUT/report.json and .md)."""
    if task != "translate":
        raise ConfigError([f"`--task {task}`: only translation is scored so far (ROUGE for summarize is not there yet)"])
    from s2s_core.generation import Translator
    from s2s_core.package import load_package

    settings = load_settings()
    storage = Storage(settings.s3)
    model, test, output = absolute(model), absolute(test), absolute(output)
    config = resolve_generation(config_file, overrides or [])
    model_id = package_id(storage, model)
    test_set = read.with_options(**io_task_options(settings))(storage, test)
    translator = Translator(load_package(local_package(storage, model)), config)
    start = time.perf_counter()
    hypotheses = [result.text for result in translator(test_set.sources)]
    seconds = time.perf_counter() - start
    report = {"model": model, "model_id": model_id, "test": test, "test_fingerprint": test_set.fingerprint,
              "generation": to_dict(config), "scores": translation_scores(hypotheses, test_set.references, bootstrap),
              "speed": {"seconds": round(seconds, 2), "sentences_per_s": round(len(hypotheses) / max(seconds, 1e-9), 1)}}
    if test_set.origins:
        report["by_origin"] = {origin: translation_scores(*_subset(hypotheses, test_set, origin))
                               for origin in sorted(set(test_set.origins))}
    storage.write_bytes(join(output, "report.json"), (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())
    storage.write_bytes(join(output, "report.md"), report_markdown(report).encode())
    create_markdown_artifact(report_markdown(report), key="evaluation-report", description=f"{model_id} on {test}")
    return report


def _subset(hypotheses: list[str], test_set: TestSet, origin: str) -> tuple[list[str], list[str]]:
    chosen = [i for i, o in enumerate(test_set.origins or []) if o == origin]
    return [hypotheses[i] for i in chosen], [test_set.references[i] for i in chosen]


def report_markdown(report: dict) -> str:
    scores = report["scores"]
    ci = {m: f" ± {scores[f'{m}_ci95']}" if f"{m}_ci95" in scores else "" for m in ("bleu", "chrf")}
    signature = {m: scores["signature"][m].replace("|", "\\|") for m in ("bleu", "chrf")}  # pipes in a table cell
    lines = [f"# Evaluation of `{report['model_id']}`", "", f"test set `{report['test']}` "
             f"(fingerprint {report['test_fingerprint']}, {scores['sentences']} sentences)", "",
             "| metric | score | sacrebleu signature |", "|---|---:|---|",
             f"| BLEU | {scores['bleu']}{ci['bleu']} | `{signature['bleu']}` |",
             f"| chrF | {scores['chrf']}{ci['chrf']} | `{signature['chrf']}` |"]
    for origin, by in report.get("by_origin", {}).items():
        lines.append(f"| BLEU / chrF ({origin}, {by['sentences']} sentences) | {by['bleu']} / {by['chrf']} | |")
    lines += ["", f"speed: {report['speed']['sentences_per_s']} sentences/s; beam {report['generation']['beam_size']}"]
    return "\n".join(lines) + "\n"
