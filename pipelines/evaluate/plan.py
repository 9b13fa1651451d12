"""Planning an evaluation: the `EvalRequest`, the test set, and everything checked before generating.

`plan(storage, request)` checks the metrics, decoding options, numbers, packages, test set and
output, so a mistake fails in about a second, before Prefect starts or any model generates.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import settings
from pipelines.datasets import MANIFEST, read_manifest, read_split
from pipelines.outputs import check_apart, check_not_a_file
from pipelines.packages import check_model_config, package_id
from pipelines.storage import Storage, absolute, join
from s2s_core.data.readers import split_lines
from s2s_core.errors import ConfigError, InputError
from s2s_core.files import short_reason
from s2s_core.generation.config import GenerationConfig, resolve_generation
from s2s_core.metrics import DEFAULT_METRICS, METRICS

REPORT_FILES = ("report.json", "report.md", "outputs.txt")


@dataclass(frozen=True)
class TestSet:
    sources: list[str]
    references: list[str]
    origins: list[str] | None
    fingerprint: str


@dataclass(frozen=True, kw_only=True)
class EvalRequest:
    """What `s2s evaluate` (and the `evaluate_model` flow) is asked to do."""

    model: str
    """Model package to score."""
    test: str
    """A prepared dataset (its test split), a TSV (source, reference[, origin]) or a Parquet file."""
    output: str
    """Where report.json, report.md and outputs.txt go."""
    task: str = "translate"
    """'translate' or 'summarize'."""
    metrics: list[str] | None = None
    """bleu, chrf, rouge; None: the task's defaults."""
    baseline: str | None = None
    """A second package: is `model` significantly better or worse?"""
    config_file: str | None = None
    """YAML file of decoding options."""
    overrides: list[str] = field(default_factory=list)
    """`key=value` decoding options."""
    bootstrap: int = 0
    """Resamples for 95% confidence intervals, at most MAX_RESAMPLES; 0: none."""
    resamples: int = 1000
    """Paired bootstrap resamples (with `baseline`), 1 to MAX_RESAMPLES."""

    def problems(self) -> list[str]:
        # The resamples are held as one (resamples, sentences) index array: bound them.
        return [f"`--{name}` must be in [{low}, {MAX_RESAMPLES}], but is {value}"
                for name, value, low in (("bootstrap", self.bootstrap, 0), ("resamples", self.resamples, 1))
                if not low <= value <= MAX_RESAMPLES]


MAX_RESAMPLES = 10_000
"""Most bootstrap resamples (1,000 is the usual number; each costs a pass over the scores)."""


@dataclass(frozen=True)
class EvalPlan:
    """A checked request: absolute URIs, the metrics and decoding options, the package ids."""

    model: str
    test: str
    output: str
    baseline: str | None
    metrics: list[str]
    config: GenerationConfig
    model_id: str
    baseline_id: str | None
    test_set: TestSet


def plan(storage: Storage, request: EvalRequest) -> EvalPlan:
    """Check everything an evaluation needs, reading the test set once to check it.

    Raises:
        ConfigError, InputError, CheckpointError, OutputError, StorageError: naming what is wrong.
    """
    problems = request.problems()
    if problems:
        raise ConfigError(problems)
    metrics = check_metrics(request.task, request.metrics)
    config = resolve_generation(request.config_file, request.overrides, request.task)
    model, test, output = absolute(request.model), absolute(request.test), absolute(request.output)
    baseline = absolute(request.baseline) if request.baseline else None
    check_apart([test], output)
    max_bytes = settings.max_model_bytes(settings.load_settings())
    for package in (model, baseline) if baseline else (model,):
        check_model_config(storage, package, max_bytes)  # a damaged or huge config fails here, not mid-flow
    model_id = package_id(storage, model)
    baseline_id = package_id(storage, baseline) if baseline else None
    check_not_a_file(storage, output, "report.json, report.md and outputs.txt")
    return EvalPlan(model, test, output, baseline, metrics, config, model_id, baseline_id, read_test_set(storage, test))


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
        if not storage.exists(join(uri, MANIFEST)):
            raise InputError(uri, "is not a test set: give a prepared dataset, a .tsv or a .parquet file")
        manifest = read_manifest(storage, uri)
        table = read_split(storage, uri, manifest, "test", ["source", "target", "origin"])
        rows = list(zip(*(table.column(c).to_pylist() for c in table.column_names)))
        uri = f"{uri} (test split)"
    if not rows:
        raise InputError(uri, "the test set is empty")
    check_texts(uri, rows)
    sources, references = [r[0] for r in rows], [r[1] for r in rows]
    origins = [r[2] for r in rows] if all(len(r) > 2 and r[2] for r in rows) else None
    digest = hashlib.sha256("\n".join(f"{s}\t{t}" for s, t in zip(sources, references)).encode()).hexdigest()
    return TestSet(sources, references, origins, digest[:16])


def check_texts(uri: str, rows: list[tuple]) -> None:
    """Every source and reference must be text (a Parquet null or number is not).

    Raises:
        InputError: naming the first row (1-based) and column that is not.
    """
    for number, row in enumerate(rows, start=1):
        for column, value in zip(("source", "target"), row):
            if not isinstance(value, str):
                what = "null" if value is None else f"{type(value).__name__}, not text"
                raise InputError(uri, f"row {number}: `{column}` is {what} (every row needs a source and a target)")


def _parquet(storage: Storage, uri: str) -> list[tuple]:
    try:
        table = pq.read_table(io.BytesIO(storage.read_bytes(uri)))
    except pa.ArrowInvalid as err:  # not Parquet, or truncated
        reason = short_reason(err).replace("Could not open Parquet input source '<Buffer>': ", "")
        raise InputError(uri, f"is not a readable Parquet file ({reason})") from None
    missing = [c for c in ("source", "target") if c not in table.column_names]
    if missing:
        raise InputError(uri, f"has no column {missing[0]!r} (a test set needs source and target)")
    columns = ["source", "target"] + (["origin"] if "origin" in table.column_names else [])
    return list(zip(*(table.column(c).to_pylist() for c in columns)))


def _tsv_rows(storage: Storage, uri: str) -> list[tuple]:
    rows = []
    # Lines end at \n only: str.splitlines would also cut at U+2028, \x1c-\x1e, \x85, \v and \f inside a field.
    for number, raw in enumerate(split_lines(storage.read_bytes(uri), at_file_start=True), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(uri, f"line {number} is not UTF-8 text (byte {err.start + 1} of the line: "
                                  f"{raw[err.start:err.start + 1]!r})") from None
        fields = line.split("\t")
        if len(fields) < 2:
            raise InputError(uri, f"line {number} has {len(fields)} field (source TAB reference expected)")
        rows.append(tuple(fields[:3]))
    return rows


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
