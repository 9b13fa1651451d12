"""Reading one unit's rows: ids and texts, with a reason for every row that cannot be used.

A bad row (null, not a string, invalid UTF-8 or a lone surrogate, a NUL byte, invalid JSON, not
a JSON object, missing field; with a target language column, a missing or unusable code) is kept
with its error, so it still gets an output row and is counted: nothing is dropped silently. A file that cannot be read at all (a damaged Parquet row
group) is an InputError naming the file and the row group: no row of it can be answered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.datasets import read_line_range
from pipelines.generate.units import Columns, Unit, json_kind, reader_message
from pipelines.storage import Storage
from s2s_core.data.readers import split_lines
from s2s_core.errors import InputError


class _Missing:
    """The field is absent from the row (not null: absent)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


NO_LANGUAGE = _Missing("no language column")
"""The language of a row when the job has no language column (not an error)."""


@dataclass
class UnitRows:
    """Parallel lists, one entry per input row of the unit."""

    ids: list[str] = field(default_factory=list)
    texts: list[str | None] = field(default_factory=list)
    """The text to generate from; None when it is unusable."""
    errors: list[str | None] = field(default_factory=list)
    """Why a row is bad; None for a good one."""
    langs: list[str | None] = field(default_factory=list)
    """The row's target language code (from the language column); None: the job's."""

    def add(self, row_id: str, value: Any, lang: Any = NO_LANGUAGE) -> None:
        """Add a row whose text field holds `value` and language field `lang` (any JSON/Arrow
        value; `NO_LANGUAGE`: the job has no language column)."""
        text, error = _as_text(value)
        code, problem = (None, None) if lang is NO_LANGUAGE else _as_text(lang)
        if error is None and problem is not None:
            error = f"target language: {problem}"
        elif error is None and code is not None and not code.strip():
            error = "target language: empty"
        self.ids.append(row_id)
        self.texts.append(text)
        self.errors.append(error)
        self.langs.append(code)

    def reject(self, index: int, reason: str) -> None:
        """Mark row `index` bad (its text is kept for the output row)."""
        self.errors[index] = reason


def _as_text(value: Any) -> tuple[str | None, str | None]:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as err:
            return None, f"invalid UTF-8 byte at column {err.start + 1}"
    if isinstance(value, str):
        problem = text_problem(value)
        return (None, problem) if problem else (value, None)
    if isinstance(value, _Missing):
        return None, value.reason
    if value is None:
        return None, "null"
    return None, f"not a string ({type(value).__name__})"


def text_problem(text: str, escaped_bytes: bool = False) -> str | None:
    """Why `text` cannot be generated from, or None. A JSON escape (`"\\ud800"`) or a command
    line argument that is not UTF-8 (with `escaped_bytes`: Python keeps its bytes as
    U+DC80..U+DCFF) gives a str with no UTF-8 form: the tokenizer (and Arrow) refuse it, so it
    is a bad row, not a crash. A NUL byte means binary data, not text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        code = ord(text[err.start])
        if escaped_bytes and 0xDC80 <= code <= 0xDCFF:
            return f"invalid UTF-8 byte 0x{code - 0xDC00:02x} at character {err.start + 1}"
        return f"invalid UTF-8: lone surrogate U+{code:04X} at character {err.start + 1}"
    if "\0" in text:
        return f"NUL byte at character {text.index(chr(0)) + 1}: binary data, not text"
    return None


def safe_id(value: Any) -> str:
    """A row id that Arrow can store: bytes decoded leniently, lone surrogates escaped."""
    text = value.decode("utf-8", errors="backslashreplace") if isinstance(value, bytes) else str(value)
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def read_unit(storage: Storage, unit: Unit, columns: Columns) -> UnitRows:
    """Every row of `unit`, in input order."""
    if unit.format == "parquet":
        return _parquet_rows(storage, unit, columns)
    start, data = read_line_range(storage, unit.uri, unit.offset, unit.length, unit.size)
    lines = split_lines(data, at_file_start=unit.offset == 0)
    parse = _jsonl_fields if unit.format == "jsonl" else _tsv_fields
    rows = UnitRows()
    for line_start, line in zip(_line_starts(data, start), lines):
        text, row_id, lang = parse(line, columns)
        rows.add(f"{unit.name}@{line_start}" if row_id is None else safe_id(row_id), text, lang)
    return rows


def _line_starts(data: bytes, start: int) -> list[int]:
    """File offsets of the lines of `data`, which begins at file offset `start`."""
    starts, position = [], start
    for raw in data.split(b"\n")[: data.count(b"\n") + (0 if data.endswith(b"\n") else 1)]:
        starts.append(position)
        position += len(raw) + 1
    return starts


def _parquet_rows(storage: Storage, unit: Unit, columns: Columns) -> UnitRows:
    table = _read_row_groups(storage, unit, list(columns.named()))
    if unit.row_range is not None:
        table = table.slice(unit.row_range[0], unit.row_range[1] - unit.row_range[0])
    texts = _as_bytes(table.column(columns.text)).to_pylist()
    ids = _as_bytes(table.column(columns.id)).to_pylist() if columns.id else [None] * len(texts)
    langs = _as_bytes(table.column(columns.lang)).to_pylist() if columns.lang else [NO_LANGUAGE] * len(texts)
    rows = UnitRows()
    for i, (text, row_id, lang) in enumerate(zip(texts, ids, langs)):
        rows.add(f"{unit.name}:{unit.first_row + i}" if row_id is None else safe_id(row_id), text, lang)
    return rows


def _read_row_groups(storage: Storage, unit: Unit, wanted: list[str]) -> pa.Table:
    """The unit's row groups, one at a time, so that damage is named by row group (the footer
    was readable when the job was planned; a page of data may still be corrupt or cut off)."""
    with storage.open_read(unit.uri) as handle:
        reader = pq.ParquetFile(handle)
        groups = []
        for group in unit.row_groups:
            try:
                groups.append(reader.read_row_group(group, columns=wanted))
            except (OSError, pa.ArrowException, ValueError, EOFError) as err:  # pyarrow raises several kinds
                raise InputError(unit.uri, f"row group {group} cannot be read ({reader_message(err)}): the file is damaged; "
                                           "replace it and run the same command again") from None
    return pa.concat_tables(groups)


def _as_bytes(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Text columns as binary: Arrow does not check UTF-8 when it reads Parquet, so a string
    column may hold invalid bytes, and converting it to Python at once would fail for the whole
    unit; as bytes, each row is decoded (and refused) on its own."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.cast(pa.large_binary())
    return column


def _jsonl_fields(line: bytes, columns: Columns) -> tuple[Any, Any, Any]:
    """(text, id, language) of a JSONL line; a bad line's text is `_Missing` with the reason."""
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as err:
        return _Missing(f"invalid UTF-8 byte at column {err.start + 1}"), None, NO_LANGUAGE
    except json.JSONDecodeError as err:
        return _Missing(f"invalid JSON ({err.msg})"), None, NO_LANGUAGE
    except ValueError:  # an integer over Python's digit limit (JSONDecodeError is caught above)
        return _Missing("invalid JSON (a number too long)"), None, NO_LANGUAGE
    except RecursionError:
        return _Missing("invalid JSON (nested too deeply)"), None, NO_LANGUAGE
    if not isinstance(record, dict):
        return _Missing(f"not a JSON object (a JSON {json_kind(record)})"), None, NO_LANGUAGE
    text = record[columns.text] if columns.text in record else _Missing(f"no field '{columns.text}'")
    lang = NO_LANGUAGE if columns.lang is None else record.get(columns.lang, _Missing(f"no field '{columns.lang}'"))
    return text, record.get(columns.id) if columns.id else None, lang


def _tsv_fields(line: bytes, columns: Columns) -> tuple[Any, Any, Any]:
    """(text, id, language) of a TSV line."""
    fields = line.split(b"\t")
    text_field, id_field = columns.tsv_field(columns.text), columns.tsv_field(columns.id)
    text: Any = fields[text_field] if text_field < len(fields) else _Missing(f"no field {text_field}")
    row_id = fields[id_field] if id_field is not None and id_field < len(fields) else None
    lang_field = columns.tsv_field(columns.lang)
    lang: Any = NO_LANGUAGE if lang_field is None else (
        fields[lang_field] if lang_field < len(fields) else _Missing(f"no field {lang_field}"))
    return text, row_id, lang
