"""The shapes that flow between readers, cleaning and the pipeline: parsed rows and rejects."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import pyarrow as pa


class Reason(str, Enum):
    """Why a row was dropped. The values are what `rejects/` and the manifest record."""

    INVALID_UTF8 = "invalid_utf8"
    BAD_FIELD_COUNT = "bad_field_count"
    INVALID_JSON = "invalid_json"
    MISSING_FIELD = "missing_field"
    NOT_A_STRING = "not_a_string"
    CONTROL_CHARS = "control_chars"
    EMPTY = "empty"
    TOO_LONG_CHARS = "too_long_chars"
    TOO_LONG_TOKENS = "too_long_tokens"
    LENGTH_RATIO = "length_ratio"
    IDENTICAL = "identical"
    WRONG_LANGUAGE = "wrong_language"
    DUPLICATE = "duplicate"


# Column names of shards and of the pipeline's internal tables. An input's metadata column with
# one of these names is kept as `input_<name>`, so it can never shadow or duplicate ours.
RESERVED_COLUMNS = frozenset({"id", "source", "target", "origin", "row", "split_key", "pos", "role"})


def metadata_name(name: str) -> str:
    return f"input_{name}" if name in RESERVED_COLUMNS else name


REJECTS_SCHEMA = pa.schema([
    ("origin", pa.string()),       # input URI
    ("row", pa.int64()),           # 1-based line number (text formats) or row number (Parquet)
    ("reason", pa.string()),       # a Reason value
    ("detail", pa.string()),       # human-readable specifics (which field, the kept duplicate's id...)
    ("source", pa.string()),       # the text as read, when it could be decoded
    ("target", pa.string()),
    ("raw", pa.binary()),          # the undecodable/unparseable line, byte for byte
])


@dataclass
class Rejects:
    """Row-level rejects collected while reading, as columns (cheap to append, cheap to convert)."""

    row: list[int] = field(default_factory=list)
    reason: list[str] = field(default_factory=list)
    detail: list[str | None] = field(default_factory=list)
    source: list[str | None] = field(default_factory=list)
    target: list[str | None] = field(default_factory=list)
    raw: list[bytes | None] = field(default_factory=list)

    def add(self, row: int, reason: Reason, detail: str | None = None, source: str | None = None,
            target: str | None = None, raw: bytes | None = None) -> None:
        self.row.append(row)
        self.reason.append(reason.value)
        self.detail.append(detail)
        self.source.append(source)
        self.target.append(target)
        self.raw.append(raw)

    def __len__(self) -> int:
        return len(self.row)

    def to_table(self, origin: str, row_offset: int = 0) -> pa.Table:
        """As a REJECTS_SCHEMA table; `row_offset` turns chunk-relative rows into file rows."""
        return pa.table({
            "origin": pa.array([origin] * len(self), pa.string()),
            "row": pa.array([r + row_offset for r in self.row], pa.int64()),
            "reason": pa.array(self.reason, pa.string()),
            "detail": pa.array(self.detail, pa.string()),
            "source": pa.array(self.source, pa.string()),
            "target": pa.array(self.target, pa.string()),
            "raw": pa.array(self.raw, pa.binary()),
        }, schema=REJECTS_SCHEMA)


@dataclass
class Parsed:
    """What a reader returns for one chunk.

    `rows` has columns `row` (int64, 1-based within the chunk), `source`, `target` (string)
    and any metadata columns; `rows_read` counts every row seen, so
    rows_read == rows.num_rows + len(rejects).
    """

    rows: pa.Table
    rejects: Rejects
    rows_read: int
