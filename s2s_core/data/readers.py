"""Readers: bytes (or Arrow tables) of one input chunk -> parsed rows + row-level rejects.

Readers are pure: the pipeline fetches the bytes (a line-aligned byte range of a TSV/JSONL
file, a Parquet row group, a whole gzip or aligned-text file) and hands them over here. A
problem with one row becomes a reject with a reason; a problem with the whole input raises
`InputError` naming it.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from s2s_core.data.config import ReaderConfig
from s2s_core.data.rows import Parsed, Reason, Rejects, metadata_name
from s2s_core.errors import InputError

BOM = b"\xef\xbb\xbf"
_PREVIEW = 200  # characters of a bad line kept in a reject's `detail`


def detect_format(name: str) -> str | None:
    """The format implied by a file name (`x.tsv.gz` -> `tsv`), or None."""
    lowered = name.lower().removesuffix(".gz")
    for suffix, fmt in ((".tsv", "tsv"), (".jsonl", "jsonl"), (".ndjson", "jsonl"),
                        (".parquet", "parquet"), (".pq", "parquet")):
        if lowered.endswith(suffix):
            return fmt
    return None


def split_lines(data: bytes, at_file_start: bool) -> list[bytes]:
    """Lines of a chunk without their `\\n` / `\\r\\n`; a final newline ends the last line."""
    if at_file_start and data.startswith(BOM):
        data = data[len(BOM):]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _decode(line: bytes, row: int, rejects: Rejects) -> str | None:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as err:
        rejects.add(row, Reason.INVALID_UTF8, f"invalid UTF-8 byte at column {err.start + 1}", raw=line)
        return None


def parse_tsv(data: bytes, at_file_start: bool = False) -> Parsed:
    """`source<TAB>target` lines. A line with any other number of fields is rejected."""
    lines = split_lines(data, at_file_start)
    rejects = Rejects()
    rows, sources, targets = [], [], []
    for row, line in enumerate(lines, start=1):
        text = _decode(line, row, rejects)
        if text is None:
            continue
        fields = text.split("\t")
        if len(fields) != 2:
            rejects.add(row, Reason.EMPTY if text == "" else Reason.BAD_FIELD_COUNT,
                        None if text == "" else f"expected 2 tab-separated fields, found {len(fields)}",
                        source=text[:_PREVIEW], raw=line)
            continue
        rows.append(row)
        sources.append(fields[0])
        targets.append(fields[1])
    return Parsed(_rows_table(rows, sources, targets), rejects, len(lines))


def parse_jsonl(data: bytes, config: ReaderConfig, at_file_start: bool = False) -> Parsed:
    """One JSON object per line; `config.source_field`/`target_field` hold the texts, other
    fields become metadata columns (when `keep_metadata`)."""
    lines = split_lines(data, at_file_start)
    rejects = Rejects()
    rows, sources, targets, metadata = [], [], [], []
    for row, line in enumerate(lines, start=1):
        text = _decode(line, row, rejects)
        if text is None:
            continue
        record = _json_record(text, row, line, rejects)
        if record is None:
            continue
        pair = _pair_from_record(record, config, row, line, rejects)
        if pair is None:
            continue
        rows.append(row)
        sources.append(pair[0])
        targets.append(pair[1])
        if config.keep_metadata:
            metadata.append({k: v for k, v in record.items() if k not in (config.source_field, config.target_field)})
    table = _rows_table(rows, sources, targets)
    for name, column in _metadata_columns(metadata).items():
        table = table.append_column(metadata_name(name), column)
    return Parsed(table, rejects, len(lines))


def _metadata_columns(records: list[dict[str, Any]]) -> dict[str, pa.Array]:
    """Columns for every key seen in any record (null where absent). A key whose values do
    not share one Arrow type (1 in one record, "x" in another) is kept as JSON text."""
    names = list(dict.fromkeys(key for record in records for key in record))
    columns = {}
    for name in names:
        values = [record.get(name) for record in records]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
            columns[name] = pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
    return columns


def _json_record(text: str, row: int, line: bytes, rejects: Rejects) -> dict[str, Any] | None:
    if not text.strip():
        rejects.add(row, Reason.EMPTY, raw=line)
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        rejects.add(row, Reason.INVALID_JSON, f"{err.msg} at column {err.colno}", raw=line)
        return None
    if not isinstance(record, dict):
        rejects.add(row, Reason.INVALID_JSON, f"expected a JSON object, found {type(record).__name__}", raw=line)
        return None
    return record


def _pair_from_record(record: dict[str, Any], config: ReaderConfig, row: int, line: bytes,
                      rejects: Rejects) -> tuple[str, str] | None:
    values = []
    for name in (config.source_field, config.target_field):
        if name not in record:
            rejects.add(row, Reason.MISSING_FIELD, f"no field {name!r}", raw=line)
            return None
        value = record[name]
        if not isinstance(value, str):
            rejects.add(row, Reason.NOT_A_STRING, f"field {name!r} is {type(value).__name__}", raw=line)
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # valid JSON can escape a lone surrogate (\ud800)
            rejects.add(row, Reason.INVALID_UTF8, f"field {name!r} holds a lone surrogate", raw=line)
            return None
        values.append(value)
    return values[0], values[1]


def parse_aligned(source_data: bytes, target_data: bytes, source_uri: str, target_uri: str) -> Parsed:
    """Two plain-text files, line i of one translating line i of the other.

    Raises:
        InputError: if the files have different numbers of lines.
    """
    source_lines = split_lines(source_data, at_file_start=True)
    target_lines = split_lines(target_data, at_file_start=True)
    if len(source_lines) != len(target_lines):
        raise InputError(source_uri, f"has {len(source_lines)} lines but {target_uri} has "
                                     f"{len(target_lines)}: aligned files must have equal line counts")
    rejects = Rejects()
    rows, sources, targets = [], [], []
    for row, (src_line, tgt_line) in enumerate(zip(source_lines, target_lines), start=1):
        src = _decode(src_line, row, rejects)
        tgt = _decode(tgt_line, row, rejects) if src is not None else None
        if src is None or tgt is None:
            continue
        rows.append(row)
        sources.append(src)
        targets.append(tgt)
    return Parsed(_rows_table(rows, sources, targets), rejects, len(source_lines))


def check_parquet_schema(schema: pa.Schema, config: ReaderConfig, uri: str) -> None:
    """Raises InputError unless the named source/target columns exist and hold strings."""
    missing = [n for n in (config.source_field, config.target_field) if n not in schema.names]
    if missing:
        raise InputError(uri, f"has no column {', '.join(map(repr, missing))} (columns: {', '.join(schema.names)}); "
                              "set reader.source_field / reader.target_field")
    for name in (config.source_field, config.target_field):
        kind = schema.field(name).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise InputError(uri, f"column {name!r} has type {kind}, expected string")


def parse_parquet_table(table: pa.Table, config: ReaderConfig) -> Parsed:
    """Rows of a Parquet row group; null texts are rejected as empty."""
    source = table[config.source_field].cast(pa.string())
    target = table[config.target_field].cast(pa.string())
    valid = pa.compute.and_(pa.compute.is_valid(source), pa.compute.is_valid(target))
    rows = pa.array(range(1, table.num_rows + 1), pa.int64())
    rejects = Rejects()
    for i in pa.compute.indices_nonzero(pa.compute.invert(valid)).to_pylist():
        rejects.add(i + 1, Reason.EMPTY, "null value", source=source[i].as_py(), target=target[i].as_py())
    out = pa.table({"row": rows, "source": source, "target": target})
    if config.keep_metadata:
        for name in table.column_names:
            if name not in (config.source_field, config.target_field):
                out = out.append_column(metadata_name(name), table[name])
    return Parsed(out.filter(valid), rejects, table.num_rows)


def _rows_table(rows: list[int], sources: list[str], targets: list[str]) -> pa.Table:
    return pa.table({
        "row": pa.array(rows, pa.int64()),
        "source": pa.array(sources, pa.string()),
        "target": pa.array(targets, pa.string()),
    })
