"""Prefect flow `evaluate_model`: translate a test set with a model package and score it.

Writes OUTPUT/report.json (scores with their signatures, model id, test-set fingerprint, decoding
options, speed), OUTPUT/report.md (also attached to the run as a markdown artifact) and the
outputs. Translation: BLEU/chrF by sacrebleu on detokenized text, so they compare with published
sacrebleu numbers. Summarization: ROUGE-1/2/L F1 by rouge-score, stemming on. With a baseline
package, a paired bootstrap test says whether the difference between the two is significant.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from dataclasses import dataclass

import pyarrow.parquet as pq
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from pipelines.generate.worker import TEXT_LAYERS, local_package, package_id, resolve_generation
from pipelines.progress import Progress
from pipelines.retry import io_task_options
from pipelines.settings import load_settings
from pipelines.storage import NotFound, Storage, absolute, basename, join
from pipelines.train.data import shard_uris
from s2s_core.config import to_dict
from s2s_core.errors import ConfigError, InputError
from s2s_core.generation import GenerationConfig
from s2s_core.metrics import DEFAULT_METRICS, METRICS, corpus_scores, paired_bootstrap


EXAMPLES = 5
"""Test sentences shown with their reference and output in the report."""
PROGRESS_CHUNK = 256
"""Sentences generated between two progress lines."""


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


def check_metrics(task: str, metrics: list[str] | None) -> list[str]:
    """The metrics to compute: the given ones, else the task's defaults.

    Raises:
        ConfigError: an unknown task or metric.
    """
    if task not in DEFAULT_METRICS:
        raise ConfigError([f"unknown task {task!r} (valid: {', '.join(DEFAULT_METRICS)})"])
    chosen = list(metrics or DEFAULT_METRICS[task])
    unknown = [m for m in chosen if m not in METRICS]
    if unknown or not chosen:
        raise ConfigError([f"`--metrics`: unknown metric {unknown[0] if unknown else ''!r} (valid: {', '.join(METRICS)})"])
    return chosen


def _run_name() -> str:
    from prefect.runtime import flow_run
    test = basename(str(flow_run.parameters.get("test", "test")).rstrip("/")).split(".")[0] or "test"
    return f"evaluate-{test}-{dt.date.today():%Y%m%d}"


@task
def generate(storage: Storage, task_name: str, model: str, config: GenerationConfig,
             sources: list[str]) -> tuple[list[str], float, dict]:
    """(outputs in input order, seconds, the engine that ran) of one model package on the test
    sources, with a progress line (decoding is batch-invariant, so generating in chunks changes
    no output)."""
    from s2s_core.package import load_package

    generator = TEXT_LAYERS[task_name](load_package(local_package(storage, model)), config)
    progress = Progress(f"{task_name} {basename(model.rstrip('/'))}", len(sources), every=5.0)
    outputs: list[str] = []
    for start in range(0, len(sources), PROGRESS_CHUNK):
        results = generator(sources[start:start + PROGRESS_CHUNK])
        outputs += [result.text for result in results]
        progress.update(len(results), sentences=len(results), tokens=sum(r.tokens for r in results))
    return outputs, progress.finish(), generator.engine.describe()


@flow(name="evaluate_model", flow_run_name=_run_name)
def evaluate_model(model: str, test: str, output: str, task: str = "translate", metrics: list[str] | None = None,
                   baseline: str | None = None, config_file: str | None = None, overrides: list[str] | None = None,
                   bootstrap: int = 0, resamples: int = 1000) -> dict:
    """Score `model` on `test` (and, with `baseline`, test whether it beats that package); returns
    the report, also written to OUTPUT/report.json and .md, with the outputs in OUTPUT/outputs.txt."""
    settings = load_settings()
    storage = Storage(settings.s3)
    model, test, output = absolute(model), absolute(test), absolute(output)
    metrics = check_metrics(task, metrics)
    config = resolve_generation(config_file, overrides or [], task)
    model_id = package_id(storage, model)
    baseline_id = package_id(storage, absolute(baseline)) if baseline else None
    test_set = read.with_options(**io_task_options(settings))(storage, test)
    outputs, seconds, engine = generate(storage, task, model, config, test_set.sources)
    report = {"task": task, "model": model, "model_id": model_id, "test": test,
              "test_fingerprint": test_set.fingerprint, "generation": to_dict(config), "engine": engine,
              "metrics": metrics,
              "scores": corpus_scores(outputs, test_set.references, metrics, bootstrap),
              "speed": {"seconds": round(seconds, 2), "sentences_per_s": round(len(outputs) / max(seconds, 1e-9), 1)},
              "examples": [{"source": s, "reference": r, "output": o} for s, r, o in
                           zip(test_set.sources[:EXAMPLES], test_set.references[:EXAMPLES], outputs)]}
    if test_set.origins:
        report["by_origin"] = {origin: corpus_scores(*_subset(outputs, test_set, origin), metrics)
                               for origin in sorted(set(test_set.origins))}
    if baseline:
        baseline_outputs, _, _ = generate(storage, task, absolute(baseline), config, test_set.sources)
        report["comparison"] = {"baseline": absolute(baseline), "baseline_id": baseline_id, "resamples": resamples,
                                "scores": paired_bootstrap(baseline_outputs, outputs, test_set.references, metrics,
                                                           resamples)}
    storage.write_bytes(join(output, "report.json"), (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())
    storage.write_bytes(join(output, "report.md"), report_markdown(report).encode())
    storage.write_bytes(join(output, "outputs.txt"), "".join(f"{line}\n" for line in outputs).encode())
    create_markdown_artifact(report_markdown(report), key="evaluation-report", description=f"{model_id} on {test}")
    return report


def _subset(hypotheses: list[str], test_set: TestSet, origin: str) -> tuple[list[str], list[str]]:
    chosen = [i for i, o in enumerate(test_set.origins or []) if o == origin]
    return [hypotheses[i] for i in chosen], [test_set.references[i] for i in chosen]


SCORE_NAMES = {"bleu": "BLEU", "chrf": "chrF", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}


def score_names(metrics: list[str]) -> list[str]:
    """Report keys of `metrics`: 'rouge' gives its three scores."""
    return [name for metric in metrics for name in (["rouge1", "rouge2", "rougeL"] if metric == "rouge" else [metric])]


def score_lines(report: dict) -> list[str]:
    """One printable line per score: 'BLEU = 31.2 ± 1.1  nrefs:1|...'."""
    scores, lines = report["scores"], []
    for name in score_names(report["metrics"]):
        ci = f" ± {scores[name + '_ci95']}" if name + "_ci95" in scores else ""
        signature = scores["signature"]["rouge" if name.startswith("rouge") else name]
        lines.append(f"{SCORE_NAMES[name]} = {scores[name]}{ci}  {signature}")
    if "rouge" in report["metrics"]:
        lines.append(f"output length {scores['output_words']} words (references {scores['reference_words']})")
    return lines


def report_markdown(report: dict) -> str:
    scores, names = report["scores"], score_names(report["metrics"])
    lines = [f"# Evaluation of `{report['model_id']}` ({report['task']})", "",
             f"test set `{report['test']}` (fingerprint {report['test_fingerprint']}, {scores['sentences']} sentences)",
             "", "| metric | score | signature |", "|---|---:|---|"]
    for name in names:
        ci = f" ± {scores[name + '_ci95']}" if name + "_ci95" in scores else ""
        signature = scores["signature"]["rouge" if name.startswith("rouge") else name].replace("|", "\\|")
        lines.append(f"| {SCORE_NAMES[name]} | {scores[name]}{ci} | `{signature}` |")
    for origin, by in report.get("by_origin", {}).items():
        values = " / ".join(str(by[name]) for name in names)
        lines.append(f"| {' / '.join(SCORE_NAMES[n] for n in names)} ({origin}, {by['sentences']} sentences) | {values} | |")
    if "rouge" in report["metrics"]:
        lines += ["", f"average output length {scores['output_words']} words; references {scores['reference_words']}"]
    if "comparison" in report:
        comparison = report["comparison"]
        lines += ["", f"## Against `{comparison['baseline_id']}` (paired bootstrap, {comparison['resamples']} resamples)",
                  "", "| metric | baseline | this model | difference | p-value |", "|---|---:|---:|---:|---:|"]
        for name, row in comparison["scores"].items():
            verdict = " (significant)" if row["p_value"] < 0.05 else ""
            lines.append(f"| {SCORE_NAMES[name]} | {row['baseline']} | {row['candidate']} | {row['delta']:+.2f} | "
                         f"{row['p_value']}{verdict} |")
    engine = report.get("engine", {})
    lines += ["", f"speed: {report['speed']['sentences_per_s']} sentences/s; beam {report['generation']['beam_size']}"
                  + (f"; engine {engine['engine']} ({engine['compute_type']})" if engine else "")]
    if report.get("examples"):
        lines += ["", "| source | reference | output |", "|---|---|---|"]
        lines += [f"| {markdown_cell(e['source'])} | {markdown_cell(e['reference'])} | {markdown_cell(e['output'])} |" for e in report["examples"]]
    return "\n".join(lines) + "\n"


def markdown_cell(text: str, limit: int = 160) -> str:
    """Text fit for one markdown table cell."""
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return text.replace("|", "\\|").replace("\n", " ")
