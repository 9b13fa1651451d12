"""Reading one unit's rows: ids and texts, with a reason for every row that cannot be used.

A bad row (null, not a string, invalid UTF-8, invalid JSON, missing field) is kept with its
error, so it still gets an output row and is counted: nothing is dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from pipelines.datasets import read_line_range
from pipelines.generate.units import Columns, Unit
from pipelines.storage import Storage
from s2s_core.data.readers import split_lines


@dataclass
class UnitRows:
    """Parallel lists, one entry per input row of the unit."""

    ids: list[str] = field(default_factory=list)
    texts: list[str | None] = field(default_factory=list)
    """The text to generate from; None for a bad row."""
    errors: list[str | None] = field(default_factory=list)
    """Why a row is bad; None for a good one."""

    def add(self, row_id: str, value: Any) -> None:
        """Add a row whose text field holds `value` (any JSON/Arrow value)."""
        text, error = _as_text(value)
        self.ids.append(row_id)
        self.texts.append(text)
        self.errors.append(error)


class _Missing:
    """The field is absent from the row (not null: absent)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _as_text(value: Any) -> tuple[str | None, str | None]:
    if isinstance(value, str):
        return value, None
    if isinstance(value, _Missing):
        return None, value.reason
    if value is None:
        return None, "null"
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8"), None
        except UnicodeDecodeError as err:
            return None, f"invalid UTF-8 byte at column {err.start + 1}"
    return None, f"not a string ({type(value).__name__})"


def read_unit(storage: Storage, unit: Unit, columns: Columns) -> UnitRows:
    """Every row of `unit`, in input order."""
    if unit.format == "parquet":
        return _parquet_rows(storage, unit, columns)
    start, data = read_line_range(storage, unit.uri, unit.offset, unit.length, unit.size)
    lines = split_lines(data, at_file_start=unit.offset == 0)
    parse = _jsonl_fields if unit.format == "jsonl" else _tsv_fields
    rows = UnitRows()
    for line_start, line in zip(_line_starts(data, start), lines):
        text, row_id = parse(line, columns)
        rows.add(f"{unit.name}@{line_start}" if row_id is None else str(row_id), text)
    return rows


def _line_starts(data: bytes, start: int) -> list[int]:
    """File offsets of the lines of `data`, which begins at file offset `start`."""
    starts, position = [], start
    for raw in data.split(b"\n")[: data.count(b"\n") + (0 if data.endswith(b"\n") else 1)]:
        starts.append(position)
        position += len(raw) + 1
    return starts


def _parquet_rows(storage: Storage, unit: Unit, columns: Columns) -> UnitRows:
    wanted = [c for c in (columns.text, columns.id) if c is not None]
    with storage.open_read(unit.uri) as handle:
        table = pq.ParquetFile(handle).read_row_groups(list(unit.row_groups), columns=list(dict.fromkeys(wanted)))
    if unit.row_range is not None:
        table = table.slice(unit.row_range[0], unit.row_range[1] - unit.row_range[0])
    texts = table.column(columns.text).to_pylist()  # binary columns stay bytes: UTF-8 is checked per row
    ids = table.column(columns.id).to_pylist() if columns.id else [None] * len(texts)
    rows = UnitRows()
    for i, (text, row_id) in enumerate(zip(texts, ids)):
        rows.add(f"{unit.name}:{unit.first_row + i}" if row_id is None else str(row_id), text)
    return rows


def _jsonl_fields(line: bytes, columns: Columns) -> tuple[Any, Any]:
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as err:
        return _Missing(f"invalid UTF-8 byte at column {err.start + 1}"), None
    except json.JSONDecodeError as err:
        return _Missing(f"invalid JSON ({err.msg})"), None
    if not isinstance(record, dict):
        return _Missing("not a JSON object"), None
    text = record[columns.text] if columns.text in record else _Missing(f"no field '{columns.text}'")
    return text, record.get(columns.id) if columns.id else None


def _tsv_fields(line: bytes, columns: Columns) -> tuple[Any, Any]:
    fields = line.split(b"\t")
    text_field, id_field = columns.tsv_field(columns.text), columns.tsv_field(columns.id)
    text: Any = fields[text_field] if text_field < len(fields) else _Missing(f"no field {text_field}")
    row_id = fields[id_field].decode("utf-8", errors="replace") if id_field is not None and id_field < len(fields) else None
    return text, row_id
