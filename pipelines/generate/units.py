"""Planning a bulk job: resolve the input into work units with stable ids, check the columns.

A unit is a whole file, a run of Parquet row groups, or a line-aligned byte range of a large
TSV/JSONL file. Its id is derived from the file's name (relative to the input root), size and
the unit's position, so the same input always yields the same units and output names.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

import pyarrow.parquet as pq

from pipelines.storage import FileEntry, NotFound, Storage, basename, parent
from s2s_core.data.readers import detect_format
from s2s_core.errors import ConfigError, InputError

MB = 1 << 20


@dataclass(frozen=True)
class Columns:
    """Where the text and the row id are. TSV files have no header: fields are numbered from 0."""

    text: str = "source"
    id: str | None = None
    """None: ids are `file:row` (Parquet, from 0) or `file@byte` (TSV/JSONL: the offset where the
    line starts), so they do not depend on how the input is cut into units."""
    lang: str | None = None
    """Each row's target language code (multilingual models); None: the job's for every row."""

    def named(self) -> tuple[str, ...]:
        """The columns a file must have."""
        return tuple(c for c in dict.fromkeys((self.text, self.id, self.lang)) if c is not None)

    def tsv_field(self, name: str | None) -> int | None:
        """The TSV field number of a column name: a number, or 0 for the default `source`."""
        if name is None:
            return None
        return 0 if name == "source" else int(name)


@dataclass(frozen=True)
class Unit:
    """One piece of work: read, generate and commit as a whole."""

    id: str
    uri: str
    name: str
    """The file's path relative to the input root (used in default row ids)."""
    format: str
    size: int
    """Bytes of the whole file."""
    offset: int = 0
    length: int | None = None
    """Line formats: the byte range [offset, offset + length) whose lines this unit owns; None: all."""
    row_groups: tuple[int, ...] = ()
    row_range: tuple[int, int] | None = None
    """Parquet: only rows [start, stop) of the (single) row group; None: all its rows."""
    first_row: int = 0
    """Parquet: the file-level number of the unit's first row."""
    weight: int = 0
    """Bytes of input, for progress and ETA."""


def plan_units(storage: Storage, input_uri: str, columns: Columns, unit_mb: float = 32.0) -> list[Unit]:
    """Every unit of the input, in a stable order. Raises InputError for a missing or unreadable
    input or a missing column, ConfigError for a TSV column that is not a field number."""
    try:
        entries = storage.list(input_uri)
    except NotFound as missing:
        raise InputError(input_uri, missing.cause) from None
    files = [(e, detect_format(basename(e.uri))) for e in entries]
    files = [(e, fmt) for e, fmt in files if fmt is not None and not basename(e.uri).startswith(("_", "."))]
    if not files:
        raise InputError(input_uri, "holds no .parquet, .jsonl or .tsv files" if entries else "matches no files")
    single_file = len(entries) == 1 and entries[0].uri == input_uri
    root = parent(input_uri) if single_file or any(ch in basename(input_uri) for ch in "*?[") else input_uri
    root = root.rstrip("/") + "/"
    units = []
    for entry, fmt in files:
        name = entry.uri[len(root):] if entry.uri.startswith(root) else basename(entry.uri)
        units += _file_units(storage, entry, name, fmt, columns, int(unit_mb * MB))
    if not units:  # an empty file among others has no rows to answer; an input of only those is a mistake
        raise InputError(input_uri, "is empty (no rows)" if single_file else "holds only empty files (no rows)")
    return units


def _file_units(storage: Storage, entry: FileEntry, name: str, fmt: str, columns: Columns, unit_bytes: int) -> list[Unit]:
    if entry.uri.lower().endswith(".gz"):
        raise InputError(entry.uri, "compressed inputs are not supported by bulk jobs (units are byte ranges); "
                                    "decompress it or use Parquet")
    if fmt == "parquet":
        return _parquet_units(storage, entry, name, columns, unit_bytes)
    if entry.size == 0:
        return []
    _check_line_columns(storage, entry, fmt, columns)
    return [_unit(entry, name, fmt, f"b{start}", offset=start, length=min(unit_bytes, entry.size - start),
                  weight=min(unit_bytes, entry.size - start))
            for start in range(0, max(entry.size, 1), unit_bytes)]


def _parquet_units(storage: Storage, entry: FileEntry, name: str, columns: Columns, unit_bytes: int) -> list[Unit]:
    with storage.open_read(entry.uri) as handle:
        try:
            meta = pq.ParquetFile(handle).metadata
            names = meta.schema.to_arrow_schema().names
        except Exception as err:  # pyarrow raises several types for a bad footer or schema
            raise InputError(entry.uri, f"is not a readable Parquet file ({reader_message(err)})") from None
    for column in columns.named():
        if column not in names:
            raise InputError(entry.uri, f"has no column '{column}' (columns: {', '.join(names)})")
    units, group, size, first_row, rows = [], [], 0, 0, 0
    for i in range(meta.num_row_groups):
        group_rows, group_bytes = meta.row_group(i).num_rows, meta.row_group(i).total_byte_size
        if group_bytes > unit_bytes and group_rows > 1 and not group:  # one big group: row ranges of it
            units += _row_ranges(entry, name, i, first_row, group_rows, group_bytes, unit_bytes)
            first_row += group_rows
            continue
        group.append(i)
        size, rows = size + group_bytes, rows + group_rows
        if size >= unit_bytes or i == meta.num_row_groups - 1:
            units.append(_unit(entry, name, "parquet", f"rg{group[0]}-{group[-1]}", row_groups=tuple(group),
                               first_row=first_row, weight=size))
            first_row, group, size, rows = first_row + rows, [], 0, 0
    return units


def _row_ranges(entry: FileEntry, name: str, group: int, first_row: int, rows: int, group_bytes: int,
                unit_bytes: int) -> list[Unit]:
    """Units of consecutive rows of one row group larger than a unit."""
    per_unit = max(1, -(-rows * unit_bytes // group_bytes))  # rounded up: no sliver of a unit at the end
    return [_unit(entry, name, "parquet", f"rg{group}r{start}", row_groups=(group,), first_row=first_row + start,
                  row_range=(start, min(rows, start + per_unit)), weight=group_bytes * min(per_unit, rows - start) // rows)
            for start in range(0, rows, per_unit)]


def _check_line_columns(storage: Storage, entry: FileEntry, fmt: str, columns: Columns) -> None:
    """A column missing from the first line is missing from the input: one error, not N bad rows."""
    window = storage.read_bytes(entry.uri, 0, min(entry.size, 1 * MB))
    if b"\n" not in window and entry.size > len(window):
        return  # a first line longer than the window: its rows are checked one by one
    first = window.split(b"\n", 1)[0].decode("utf-8", errors="replace").lstrip("\ufeff")
    if fmt == "jsonl":
        try:
            record = json.loads(first)
        except (ValueError, RecursionError):  # ValueError: bad JSON, or an int over Python's digit limit
            raise InputError(entry.uri, "line 1 is not valid JSON") from None
        if not isinstance(record, dict):
            raise InputError(entry.uri, f"line 1 is a JSON {json_kind(record)}, not an object: "
                                        "each JSONL row must be an object with the text field")
        for column in columns.named():
            if column not in record:
                raise InputError(entry.uri, f"has no field '{column}' (line 1)")
        return
    for column in columns.named():
        try:
            field = columns.tsv_field(column)
        except ValueError:
            raise ConfigError([f"TSV fields are numbered from 0: column must be a number, but is '{column}'"]) from None
        if field is not None and field >= len(first.split("\t")):
            raise InputError(entry.uri, f"has no field {field} (line 1 has {len(first.split(chr(9)))})")


def reader_message(err: BaseException) -> str:
    """The first line of a reader's error, printable: it may quote bytes of the damaged data."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def json_kind(value: object) -> str:
    """What a parsed JSON value is, in JSON's words (for messages)."""
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")


def _unit(entry: FileEntry, name: str, fmt: str, position: str, **fields) -> Unit:
    digest = hashlib.sha256(f"{name}\0{entry.size}\0{position}".encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name.rsplit(".", 1)[0])[-40:]
    return Unit(id=f"{stem}-{position}-{digest}", uri=entry.uri, name=name, format=fmt, size=entry.size, **fields)
