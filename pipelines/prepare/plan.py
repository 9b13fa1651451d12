"""Planning: resolve the inputs (files, prefixes, globs, aligned pairs) and cut them into chunks.

Everything that can be known without reading the data is checked here, before any Ray or
Prefect start-up, so a wrong path or a Parquet file without the named columns fails in about
a second with one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import pyarrow.parquet as pq

from pipelines.outputs import check_apart
from pipelines.storage import FileEntry, NotFound, Storage, absolute, basename, join
from s2s_core.config import resolve
from s2s_core.data.config import PrepareConfig
from s2s_core.data.readers import check_parquet_schema, detect_format
from s2s_core.errors import ConfigError, InputError
from s2s_core.tokenizer import SETTINGS_FILE

Role = Literal["auto", "valid", "test"]
# Held-out inputs win deduplication: a pair in both the test input and a training input is
# kept in test and dropped from train, so the test set never leaks into training.
ROLE_PRIORITY: dict[str, int] = {"test": 0, "valid": 1, "auto": 2}
MB = 1 << 20


@dataclass(frozen=True)
class InputSpec:
    """One input: a file, or an aligned pair (`files` = source file, target file)."""

    origin: str
    """The name recorded in the `origin` column: the file URI, or `corpus.{en,it}`."""
    role: Role
    format: str
    files: tuple[FileEntry, ...]

    @property
    def gzip(self) -> bool:
        return self.files[0].uri.lower().endswith(".gz")

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class Chunk:
    """A piece of one input read by one task: a byte range, a run of row groups, or all of it."""

    index: int
    """Position in the global order (role priority, input, offset); dedup keeps the lowest."""
    input_index: int
    offset: int = 0
    length: int | None = None
    """Bytes of a line-format range; None reads the whole input."""
    row_groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class Plan:
    inputs: tuple[InputSpec, ...]
    chunks: tuple[Chunk, ...]
    num_shards: int


@dataclass(frozen=True, kw_only=True)
class PrepareRequest:
    """What `s2s prepare` (and the `prepare_corpus` flow) is asked to do."""

    inputs: list[str]
    """Corpora: files, directories/prefixes, globs or aligned pair prefixes (local or s3://)."""
    output: str
    """Where the dataset goes."""
    valid_inputs: list[str] = field(default_factory=list)
    """Held-out validation inputs instead of a hash split."""
    test_inputs: list[str] = field(default_factory=list)
    """Held-out test inputs instead of a hash split."""
    config_file: str | None = None
    """YAML overlay of the prepare config."""
    overrides: list[str] = field(default_factory=list)
    """`key=value` config overrides."""
    overwrite: bool = False
    """Replace a different dataset (or foreign files) at `output`."""
    ray_address: str | None = None
    """A Ray cluster to run on; None: the settings' (else a local Ray)."""


@dataclass(frozen=True)
class PreparePlan:
    """A checked request: the resolved config and inputs."""

    output: str
    config: PrepareConfig
    inputs: Plan


def plan(storage: Storage, request: PrepareRequest) -> PreparePlan:
    """Resolve and check the config and every input, without reading data, Ray or Prefect.

    Raises:
        ConfigError, InputError: naming the value or input at fault.
    """
    config = resolve(PrepareConfig, request.config_file, request.overrides)
    check_apart([*request.inputs, *request.valid_inputs, *request.test_inputs], request.output)
    roles: list[tuple[str, Role]] = [(u, "auto") for u in request.inputs]
    roles += [(u, "valid") for u in request.valid_inputs] + [(u, "test") for u in request.test_inputs]
    if config.tokenizer.reuse:  # absolute, as the output: Ray tasks may run in another directory
        config = replace(config, tokenizer=replace(config.tokenizer, reuse=absolute(config.tokenizer.reuse)))
        tokenizer_directory(storage, config.tokenizer.reuse)
    return PreparePlan(absolute(request.output), config, plan_inputs(storage, roles, config))


def tokenizer_directory(storage: Storage, uri: str) -> str:
    """The tokenizer directory that `tokenizer.from` (alias `tokenizer.reuse`) names: a model
    package's `tokenizer/`, or `uri` itself when it holds a tokenizer (settings.json).

    Raises:
        InputError: `uri` is neither a model package nor a tokenizer directory.
    """
    for candidate in (join(uri, "tokenizer"), uri):
        if storage.exists(join(candidate, SETTINGS_FILE)):
            return candidate
    raise InputError(uri, "is neither a model package nor a tokenizer directory (no tokenizer/settings.json or "
                          "settings.json) for tokenizer.from")


def plan_inputs(storage: Storage, inputs: list[tuple[str, Role]], config: PrepareConfig) -> Plan:
    """Resolve every (uri, role) into InputSpecs and chunks. Raises InputError/ConfigError."""
    if not any(role == "auto" for _, role in inputs):
        raise ConfigError(["at least one --input is required"])
    specs = [spec for uri, role in inputs for spec in _resolve(storage, uri, role, config)]
    specs.sort(key=lambda s: ROLE_PRIORITY[s.role])  # stable: keeps the order given within a role
    for spec in specs:
        _check_input(storage, spec, config)
    _check_counts(specs, config)
    chunks = []
    for input_index, spec in enumerate(specs):
        for chunk in _chunks(storage, spec, config):
            chunks.append(Chunk(index=len(chunks), input_index=input_index, offset=chunk.offset,
                                length=chunk.length, row_groups=chunk.row_groups))
    total_mb = sum(s.size for s in specs) / MB
    num_shards = config.shards.num_shards or max(1, math.ceil(total_mb / config.shards.input_mb_per_shard))
    return Plan(tuple(specs), tuple(chunks), num_shards)


def _resolve(storage: Storage, uri: str, role: Role, config: PrepareConfig) -> list[InputSpec]:
    reader = config.reader
    try:
        entries = storage.list(uri)
    except NotFound as missing:
        aligned = _aligned_pair(storage, uri, config)
        if aligned is None:
            raise InputError(uri, missing.cause) from None
        return [InputSpec(f"{uri}.{{{reader.source_lang},{reader.target_lang}}}", role, "text", aligned)]
    if not entries:
        raise InputError(uri, "matches no files")
    specs = []
    for entry in entries:
        fmt = reader.format if reader.format != "auto" else detect_format(basename(entry.uri))
        if fmt is None:
            if len(entries) > 1:
                continue  # a prefix may hold other files (a README, _SUCCESS): skip them
            raise InputError(entry.uri, "cannot tell the format from the name; set reader.format "
                                        "(tsv, jsonl, parquet) or use a .tsv/.jsonl/.parquet name")
        specs.append(InputSpec(entry.uri, role, fmt, (entry,)))
    if not specs:
        raise InputError(uri, "holds no .tsv, .jsonl or .parquet files")
    return specs


def _aligned_pair(storage: Storage, uri: str, config: PrepareConfig) -> tuple[FileEntry, ...] | None:
    """`corpus` -> (corpus.en, corpus.it) when both exist; None when neither does."""
    names = [f"{uri}.{config.reader.source_lang}", f"{uri}.{config.reader.target_lang}"]
    found = [storage.exists(name) for name in names]
    if not any(found):
        return None
    if not all(found):
        missing = names[found.index(False)]
        raise InputError(missing, f"not found (aligned input {uri} needs both {names[0]} and {names[1]})")
    return tuple(storage.info(name) for name in names)


def _check_input(storage: Storage, spec: InputSpec, config: PrepareConfig) -> None:
    for entry in spec.files:
        if entry.size == 0:
            raise InputError(entry.uri, "is empty")
    if spec.format == "parquet":
        with storage.open_read(spec.files[0].uri) as handle:
            try:
                schema = pq.read_schema(handle)
            except Exception as err:  # pyarrow raises several types for a bad footer
                raise InputError(spec.files[0].uri, f"is not a readable Parquet file ({err})") from None
        check_parquet_schema(schema, config.reader, spec.files[0].uri)


MAX_PIECES = 100_000
"""Most chunks, and most shards: each chunk's task returns one object per shard, so both
multiply into Ray objects (the same bound as `shards.num_shards`)."""


def _check_counts(specs: list[InputSpec], config: PrepareConfig) -> None:
    """Refuse sizes that would cut the inputs into more chunks or shards than Ray can track,
    before any is made (a `chunk_mb` of 1e-9 is a task per byte).

    Raises:
        ConfigError: naming the option, the count it gives and the bound.
    """
    shards = config.shards
    chunk_bytes = max(1, int(shards.chunk_mb * MB))
    line_bytes = sum(s.size for s in specs if s.format not in ("parquet", "text") and not s.gzip)
    problems = []
    if math.ceil(line_bytes / chunk_bytes) > MAX_PIECES:
        problems.append(f"`shards.chunk_mb` {shards.chunk_mb:g} cuts {line_bytes / MB:.3g} MB of input into "
                        f"{math.ceil(line_bytes / chunk_bytes):,} chunks, more than {MAX_PIECES:,}: raise it")
    total_mb = sum(s.size for s in specs) / MB
    if shards.num_shards is None and math.ceil(total_mb / shards.input_mb_per_shard) > MAX_PIECES:
        problems.append(f"`shards.input_mb_per_shard` {shards.input_mb_per_shard:g} gives "
                        f"{math.ceil(total_mb / shards.input_mb_per_shard):,} shards for {total_mb:.3g} MB of "
                        f"input, more than {MAX_PIECES:,}: raise it or set `shards.num_shards`")
    if problems:
        raise ConfigError(problems)


def _chunks(storage: Storage, spec: InputSpec, config: PrepareConfig) -> list[Chunk]:
    chunk_bytes = max(1, int(config.shards.chunk_mb * MB))
    if spec.format == "parquet":
        with storage.open_read(spec.files[0].uri) as handle:
            meta = pq.ParquetFile(handle).metadata
        out, group, size = [], [], 0
        for i in range(meta.num_row_groups):
            group.append(i)
            size += meta.row_group(i).total_byte_size
            if size >= chunk_bytes or i == meta.num_row_groups - 1:
                out.append(Chunk(0, 0, row_groups=tuple(group)))
                group, size = [], 0
        return out or [Chunk(0, 0)]
    if spec.format == "text" or spec.gzip:
        return [Chunk(0, 0)]
    size = spec.files[0].size
    return [Chunk(0, 0, offset=start, length=min(chunk_bytes, size - start)) for start in range(0, size, chunk_bytes)]
