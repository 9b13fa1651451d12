"""s2s_core.data.readers: TSV, JSONL, aligned text and Parquet parsing, row-level rejects."""

from __future__ import annotations

import pyarrow as pa
import pytest

from s2s_core.data.config import ReaderConfig
from s2s_core.data.readers import (
    BOM,
    check_parquet_schema,
    detect_format,
    parse_aligned,
    parse_jsonl,
    parse_parquet_table,
    parse_tsv,
    split_lines,
)
from s2s_core.data.rows import REJECTS_SCHEMA, Parsed, Reason
from s2s_core.errors import InputError


def rejects_of(parsed: Parsed) -> list[tuple[int, str]]:
    return list(zip(parsed.rejects.row, parsed.rejects.reason))


def check_counts(parsed: Parsed, lines: int) -> None:
    assert parsed.rows_read == lines
    assert parsed.rows_read == parsed.rows.num_rows + len(parsed.rejects)
    rows = parsed.rows.column("row").to_pylist() + parsed.rejects.row
    assert sorted(rows) == list(range(1, lines + 1))  # every row accounted for exactly once
    assert set(parsed.rejects.reason) <= {r.value for r in Reason}


# ---------------------------------------------------------------- detect_format / split_lines


@pytest.mark.parametrize("name, fmt", [
    ("a.tsv", "tsv"), ("s3://b/dir/a.tsv.gz", "tsv"), ("A.TSV", "tsv"), ("x.jsonl", "jsonl"),
    ("x.jsonl.gz", "jsonl"), ("x.ndjson", "jsonl"), ("x.parquet", "parquet"), ("x.pq", "parquet"),
    ("x.txt", None), ("x.gz", None), ("x.csv", None), ("corpus.en", None), ("tsv", None), ("x.tsv.bz2", None),
])
def test_detect_format(name, fmt):
    assert detect_format(name) == fmt


@pytest.mark.parametrize("data, lines", [
    (b"", []), (b"\n", [b""]), (b"a", [b"a"]), (b"a\n", [b"a"]), (b"a\r\nb\r\n", [b"a", b"b"]),
    (b"a\n\nb", [b"a", b"", b"b"]), (b"a\rb\n", [b"a\rb"]), (b"a\r\r\n", [b"a\r"]),
])
def test_split_lines(data, lines):
    assert split_lines(data, at_file_start=False) == lines


def test_split_lines_bom_only_at_file_start():
    assert split_lines(BOM + b"a\n" + BOM + b"b\n", at_file_start=True) == [b"a", BOM + b"b"]
    assert split_lines(BOM + b"a\n", at_file_start=False) == [BOM + b"a"]


# ---------------------------------------------------------------- TSV


def test_tsv_good_lines():
    data = "Hello\tCiao\nThe cat.\tIl gatto.\n\tonly target\n".encode()
    parsed = parse_tsv(data)
    assert parsed.rows.column_names == ["row", "source", "target"]
    assert parsed.rows.schema.field("row").type == pa.int64()
    assert parsed.rows.to_pylist() == [
        {"row": 1, "source": "Hello", "target": "Ciao"},
        {"row": 2, "source": "The cat.", "target": "Il gatto."},
        {"row": 3, "source": "", "target": "only target"},  # empty sides are the cleaner's business
    ]
    assert len(parsed.rejects) == 0
    check_counts(parsed, 3)


def test_tsv_keeps_text_verbatim():
    parsed = parse_tsv("  a  b \t c\u00a0\n".encode())
    assert parsed.rows.to_pylist() == [{"row": 1, "source": "  a  b ", "target": " c\u00a0"}]


def test_tsv_bad_field_counts():
    long_line = "x" * 500
    data = f"good\tbuono\nno tab here\na\tb\tc\n{long_line}\n".encode()
    parsed = parse_tsv(data)
    assert parsed.rows.column("row").to_pylist() == [1]
    assert rejects_of(parsed) == [(2, "bad_field_count"), (3, "bad_field_count"), (4, "bad_field_count")]
    assert parsed.rejects.detail == ["expected 2 tab-separated fields, found 1",
                                     "expected 2 tab-separated fields, found 3",
                                     "expected 2 tab-separated fields, found 1"]
    assert parsed.rejects.raw == [b"no tab here", b"a\tb\tc", long_line.encode()]
    assert parsed.rejects.source[:2] == ["no tab here", "a\tb\tc"]
    assert 0 < len(parsed.rejects.source[2]) < len(long_line)  # only a preview of a long bad line
    assert long_line.startswith(parsed.rejects.source[2])
    check_counts(parsed, 4)


def test_tsv_invalid_utf8_keeps_raw_bytes():
    bad = b"caf\xe9\tcaff\xc3"
    parsed = parse_tsv(b"ok\tbene\n" + bad + b"\nfine\tbene\n")
    assert parsed.rows.column("row").to_pylist() == [1, 3]
    assert rejects_of(parsed) == [(2, "invalid_utf8")]
    assert parsed.rejects.raw == [bad]
    assert parsed.rejects.detail == ["invalid UTF-8 byte at column 4"]  # \xe9 is the 4th byte
    assert parsed.rejects.source == [None]
    check_counts(parsed, 3)


def test_tsv_crlf_and_final_line_without_newline():
    parsed = parse_tsv(b"a\tb\r\nc\td\r\ne\tf")
    assert parsed.rows.to_pylist() == [{"row": 1, "source": "a", "target": "b"},
                                       {"row": 2, "source": "c", "target": "d"},
                                       {"row": 3, "source": "e", "target": "f"}]
    check_counts(parsed, 3)


def test_tsv_bom_stripped_at_file_start_only():
    data = BOM + b"a\tb\n" + BOM + b"c\td\n"
    start = parse_tsv(data, at_file_start=True)
    assert start.rows.column("source").to_pylist() == ["a", "\ufeffc"]
    middle = parse_tsv(data, at_file_start=False)  # a chunk from the middle of a file
    assert middle.rows.column("source").to_pylist() == ["\ufeffa", "\ufeffc"]


def test_tsv_blank_lines_are_empty_rejects():
    parsed = parse_tsv(b"a\tb\n\n\r\nc\td\n")
    assert rejects_of(parsed) == [(2, "empty"), (3, "empty")]
    assert parsed.rejects.detail == [None, None]
    assert parsed.rejects.raw == [b"", b""]
    assert parsed.rows.column("row").to_pylist() == [1, 4]
    check_counts(parsed, 4)


def test_tsv_empty_chunk():
    parsed = parse_tsv(b"")
    assert parsed.rows.num_rows == 0 and len(parsed.rejects) == 0 and parsed.rows_read == 0
    assert parsed.rows.column_names == ["row", "source", "target"]


def test_tsv_mixed_rows_read_adds_up():
    lines = [b"a\tb", b"", b"x", b"\xff\tq", b"a\tb\tc", b"c\td", b"\tonly target"]
    parsed = parse_tsv(b"\n".join(lines) + b"\n")
    assert parsed.rows.column("row").to_pylist() == [1, 6, 7]
    assert dict(rejects_of(parsed)) == {2: "empty", 3: "bad_field_count", 4: "invalid_utf8", 5: "bad_field_count"}
    check_counts(parsed, len(lines))


def test_rejects_to_table_applies_row_offset():
    parsed = parse_tsv(b"a\tb\nbad\n\xff\n")
    table = parsed.rejects.to_table("s3://b/in.tsv", row_offset=100)
    assert table.schema == REJECTS_SCHEMA
    assert table.column("row").to_pylist() == [102, 103]
    assert table.column("origin").to_pylist() == ["s3://b/in.tsv"] * 2
    assert table.column("raw").to_pylist() == [b"bad", b"\xff"]


# ---------------------------------------------------------------- JSONL


def jsonl(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def test_jsonl_good_lines_and_metadata_columns():
    parsed = parse_jsonl(jsonl('{"source": "Hi", "target": "Ciao", "domain": "chat", "score": 0.5}',
                               '{"target": "Sì", "source": "Yes", "domain": "news", "score": 1.5}'), ReaderConfig())
    assert parsed.rows.column_names == ["row", "source", "target", "domain", "score"]
    assert parsed.rows.to_pylist() == [
        {"row": 1, "source": "Hi", "target": "Ciao", "domain": "chat", "score": 0.5},
        {"row": 2, "source": "Yes", "target": "Sì", "domain": "news", "score": 1.5},
    ]
    check_counts(parsed, 2)


def test_jsonl_metadata_dropped_when_not_kept():
    parsed = parse_jsonl(jsonl('{"source": "a", "target": "b", "domain": "x"}'), ReaderConfig(keep_metadata=False))
    assert parsed.rows.column_names == ["row", "source", "target"]


def test_jsonl_without_metadata_has_just_the_pair():
    parsed = parse_jsonl(jsonl('{"source": "a", "target": "b"}'), ReaderConfig())
    assert parsed.rows.column_names == ["row", "source", "target"]


def test_jsonl_custom_field_names():
    config = ReaderConfig(source_field="en", target_field="it")
    parsed = parse_jsonl(jsonl('{"en": "dog", "it": "cane", "id": 7}', '{"source": "x", "target": "y"}'), config)
    # `id` is one of our column names: the input's own id is kept as `input_id`
    assert parsed.rows.to_pylist() == [{"row": 1, "source": "dog", "target": "cane", "input_id": 7}]
    assert rejects_of(parsed) == [(2, "missing_field")]
    assert parsed.rejects.detail == ["no field 'en'"]


def test_jsonl_row_rejects():
    lines = [
        '{"source": "ok", "target": "bene"}',
        '{"source": "broken", ',
        '["source", "target"]',
        '"just a string"',
        '{"source": "only source"}',
        '{"source": 3, "target": "tre"}',
        '{"source": "null target", "target": null}',
        '',
        '   ',
        '{"source": "ok2", "target": "bene2"}',
    ]
    parsed = parse_jsonl(jsonl(*lines), ReaderConfig())
    assert parsed.rows.column("row").to_pylist() == [1, 10]
    assert parsed.rows.column("source").to_pylist() == ["ok", "ok2"]
    assert rejects_of(parsed) == [(2, "invalid_json"), (3, "invalid_json"), (4, "invalid_json"),
                                  (5, "missing_field"), (6, "not_a_string"), (7, "not_a_string"),
                                  (8, "empty"), (9, "empty")]
    detail = dict(zip(parsed.rejects.row, parsed.rejects.detail))
    assert "column" in detail[2]
    assert detail[3] == "expected a JSON object, found list"
    assert detail[4] == "expected a JSON object, found str"
    assert detail[5] == "no field 'target'"
    assert detail[6] == "field 'source' is int"
    assert detail[7] == "field 'target' is NoneType"
    assert parsed.rejects.raw[:3] == [line.encode() for line in lines[1:4]]
    check_counts(parsed, len(lines))


def test_jsonl_invalid_utf8_crlf_and_bom():
    data = BOM + b'{"source": "a", "target": "b"}\r\n{"source": "\xff", "target": "c"}\r\n{"source": "d", "target": "e"}'
    parsed = parse_jsonl(data, ReaderConfig(), at_file_start=True)
    assert parsed.rows.column("source").to_pylist() == ["a", "d"]
    assert rejects_of(parsed) == [(2, "invalid_utf8")]
    assert parsed.rejects.raw == [b'{"source": "\xff", "target": "c"}']
    check_counts(parsed, 3)


def test_jsonl_metadata_stays_aligned_with_kept_rows():
    parsed = parse_jsonl(jsonl('{"source": "a", "target": "b", "n": 1}', 'oops',
                               '{"source": "c", "target": "d", "n": 3}'), ReaderConfig())
    assert parsed.rows.to_pylist() == [{"row": 1, "source": "a", "target": "b", "n": 1},
                                       {"row": 3, "source": "c", "target": "d", "n": 3}]


def test_jsonl_metadata_field_first_seen_in_a_later_record_is_kept():
    parsed = parse_jsonl(jsonl('{"source": "a", "target": "b"}', '{"source": "c", "target": "d", "lang": "it"}'),
                         ReaderConfig())
    assert "lang" in parsed.rows.column_names
    assert parsed.rows.column("lang").to_pylist() == [None, "it"]


def test_jsonl_metadata_field_with_mixed_types_does_not_fail_the_chunk():
    parsed = parse_jsonl(jsonl('{"source": "a", "target": "b", "id": 1}', '{"source": "c", "target": "d", "id": "x"}'),
                         ReaderConfig())
    assert parsed.rows.num_rows == 2


def test_jsonl_lone_surrogate_is_a_row_reject():
    parsed = parse_jsonl(jsonl('{"source": "\\ud800", "target": "x"}', '{"source": "a", "target": "b"}'),
                         ReaderConfig())
    assert parsed.rows.column("row").to_pylist() == [2]
    assert len(parsed.rejects) == 1


@pytest.mark.parametrize("line", ['{"src": "a", "tgt": "b", "source": "europarl"}',
                                  '{"src": "a", "tgt": "b", "row": 7}'])
def test_jsonl_metadata_never_duplicates_a_core_column(line):
    parsed = parse_jsonl(jsonl(line), ReaderConfig(source_field="src", target_field="tgt"))
    names = parsed.rows.column_names
    assert len(names) == len(set(names)), names
    assert parsed.rows.column("source").to_pylist() == ["a"]


# ---------------------------------------------------------------- aligned text


def test_aligned_pairs_lines_and_strips_bom_and_crlf():
    parsed = parse_aligned(BOM + b"one\r\ntwo\r\n", BOM + b"uno\ndue", "c.en", "c.it")
    assert parsed.rows.to_pylist() == [{"row": 1, "source": "one", "target": "uno"},
                                       {"row": 2, "source": "two", "target": "due"}]
    check_counts(parsed, 2)


def test_aligned_unequal_line_counts_names_both_files():
    with pytest.raises(InputError, match=r"^s3://b/c\.en: has 3 lines but s3://b/c\.it has 2") as info:
        parse_aligned(b"a\nb\nc\n", b"x\ny\n", "s3://b/c.en", "s3://b/c.it")
    assert info.value.uri == "s3://b/c.en"
    assert "s3://b/c.it" in info.value.reason


@pytest.mark.parametrize("side", ["source", "target"])
def test_aligned_invalid_utf8_on_one_side(side):
    good, bad = b"a\nb\nc\n", b"x\n\xfe\xffy\nz\n"
    src, tgt = (bad, good) if side == "source" else (good, bad)
    parsed = parse_aligned(src, tgt, "c.en", "c.it")
    assert parsed.rows.column("row").to_pylist() == [1, 3]
    assert rejects_of(parsed) == [(2, "invalid_utf8")]
    assert parsed.rejects.raw == [b"\xfe\xffy"]
    check_counts(parsed, 3)


def test_aligned_empty_files():
    parsed = parse_aligned(b"", b"", "a", "b")
    assert parsed.rows.num_rows == 0 and parsed.rows_read == 0


# ---------------------------------------------------------------- Parquet


def test_parquet_table_nulls_become_empty_rejects_and_rows_keep_numbers():
    table = pa.table({"source": ["a", None, "c", "d"], "target": ["x", "y", None, "w"], "lang": ["1", "2", "3", "4"]})
    parsed = parse_parquet_table(table, ReaderConfig())
    assert parsed.rows.to_pylist() == [{"row": 1, "source": "a", "target": "x", "lang": "1"},
                                       {"row": 4, "source": "d", "target": "w", "lang": "4"}]
    assert rejects_of(parsed) == [(2, "empty"), (3, "empty")]
    assert parsed.rejects.detail == ["null value", "null value"]
    assert parsed.rejects.source == [None, "c"]
    assert parsed.rejects.target == ["y", None]
    check_counts(parsed, 4)


def test_parquet_table_custom_columns_large_string_and_no_metadata():
    table = pa.table({"id": pa.array([1, 2]), "en": pa.array(["a", "b"], pa.large_string()),
                      "it": pa.array(["x", "y"], pa.large_string())})
    parsed = parse_parquet_table(table, ReaderConfig(source_field="en", target_field="it"))
    assert parsed.rows.column_names == ["row", "source", "target", "input_id"]
    assert parsed.rows.schema.field("source").type == pa.string()
    assert parsed.rows.column("input_id").to_pylist() == [1, 2]
    plain = parse_parquet_table(table, ReaderConfig(source_field="en", target_field="it", keep_metadata=False))
    assert plain.rows.column_names == ["row", "source", "target"]


def test_parquet_metadata_never_duplicates_a_core_column():
    table = pa.table({"src": ["a"], "tgt": ["b"], "source": ["europarl"]})
    parsed = parse_parquet_table(table, ReaderConfig(source_field="src", target_field="tgt"))
    names = parsed.rows.column_names
    assert len(names) == len(set(names)), names


def test_check_parquet_schema_accepts_string_columns():
    schema = pa.schema([("source", pa.string()), ("target", pa.large_string()), ("n", pa.int32())])
    check_parquet_schema(schema, ReaderConfig(), "in.parquet")  # no error


def test_check_parquet_schema_missing_columns():
    schema = pa.schema([("en", pa.string()), ("target", pa.string())])
    with pytest.raises(InputError, match=r"^in\.parquet: has no column 'source' \(columns: en, target\)") as info:
        check_parquet_schema(schema, ReaderConfig(), "in.parquet")
    assert "reader.source_field" in info.value.reason
    with pytest.raises(InputError, match=r"has no column 'src', 'tgt'"):
        check_parquet_schema(schema, ReaderConfig(source_field="src", target_field="tgt"), "in.parquet")


@pytest.mark.parametrize("kind", [pa.int64(), pa.binary(), pa.list_(pa.string())])
def test_check_parquet_schema_non_string_column(kind):
    schema = pa.schema([("source", pa.string()), ("target", kind)])
    with pytest.raises(InputError, match=r"^x\.pq: column 'target' has type .+, expected string$") as info:
        check_parquet_schema(schema, ReaderConfig(), "x.pq")
    assert str(kind) in info.value.reason
