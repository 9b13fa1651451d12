"""`s2s translate` / `s2s summarize` without Ray: quick use on --text and stdin, and every input
problem of a bulk job reported in one line with its exit code before Ray or Prefect start."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import cli
from pipelines.generate.units import Columns, plan_units
from pipelines.storage import Storage
from tests.conftest import REPO
from tests.pipelines.test_train import error_line

FAST = ["max_len_a=0", "max_len_b=6"]


def test_text_arguments_print_one_line_each(tiny_package, capsys):
    assert cli.main(["translate", "--model", str(tiny_package), "--text", "Hello there.", "--text", "  ",
                     "--text", "Click the button.", *FAST]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[0] and lines[2] and lines[3] == ""


def test_stdin_lines_stream_through_a_subprocess(tiny_package):
    text = "".join(f"Sentence number {i}.\n" for i in range(5))
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "summarize", "--model", str(tiny_package), *FAST],
                          input=text, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 5 and all(done.stdout.splitlines())


def test_a_missing_model_package(tmp_path, capsys):
    assert cli.main(["translate", "--model", str(tmp_path / "none"), "--text", "x"]) == 3
    assert error_line(capsys) == f"error: {tmp_path / 'none'}: is not a model package (no metadata.json)"


def test_decoding_options_are_checked_together(tiny_package, capsys):
    assert cli.main(["translate", "--model", str(tiny_package), "--text", "x", "beam_size=2", "nbest=3",
                     "top_p=0", "sampling=true"]) == 2
    line = error_line(capsys)
    assert "(3 problems)" in line and "`nbest` must be <= `beam_size` (2), but is 3" in line
    assert "`top_p` must be in (0, 1], but is 0" in line and "`beam_size` must be 1 with `sampling`" in line


@pytest.fixture
def parquet_input(tmp_path):
    path = tmp_path / "in" / "rows.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["One.", "Two."]}), path)
    return path


@pytest.mark.parametrize("args, code, message", [
    (["--column", "source"], 3, "rows.parquet: has no column 'source' (columns: id, text)"),
    (["--column", "text", "--id-column", "key"], 3, "rows.parquet: has no column 'key' (columns: id, text)"),
    (["--column", "text"], 2, "invalid configuration: `--output` is required with `--input`"),
    (["--column", "text", "--workers", "0"], 2, "`--workers` must be >= 1, but is 0"),
])
def test_bulk_problems_found_before_ray_starts(tiny_package, parquet_input, tmp_path, capsys, args, code, message):
    output = [] if "--output" in message else ["--output", str(tmp_path / "out")]
    assert cli.main(["translate", "--model", str(tiny_package), "--input", str(parquet_input), *output, *args]) == code
    assert message in error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_unreadable_and_missing_inputs(tiny_package, tmp_path, capsys):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    assert cli.main(["translate", "--model", str(tiny_package), "--input", str(bad), "--output", str(tmp_path / "o")]) == 3
    assert error_line(capsys).startswith(f"error: {bad}: is not a readable Parquet file")
    missing = tmp_path / "nothing-here"
    assert cli.main(["translate", "--model", str(tiny_package), "--input", str(missing), "--output", str(tmp_path / "o")]) == 3
    assert error_line(capsys).startswith(f"error: {missing}: ")


def test_line_formats_check_their_first_line(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(Exception, match=r"a.jsonl: has no field 'source' \(line 1\)"):
        plan_units(Storage(), str(tmp_path / "a.jsonl"), Columns())
    (tmp_path / "b.tsv").write_text("only one field\n")
    with pytest.raises(Exception, match=r"b.tsv: has no field 1 \(line 1 has 1\)"):
        plan_units(Storage(), str(tmp_path / "b.tsv"), Columns(text="1"))
    with pytest.raises(Exception, match="TSV fields are numbered from 0: column must be a number, but is 'text'"):
        plan_units(Storage(), str(tmp_path / "b.tsv"), Columns(text="text"))


def test_an_output_holding_other_files_is_refused(tiny_package, parquet_input, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    assert cli.main(["translate", "--model", str(tiny_package), "--input", str(parquet_input), "--column", "text",
                     "--output", str(tmp_path / "out")]) == 4
    assert "is not empty and holds no bulk job (precious.txt, ...)" in error_line(capsys)


def test_units_cut_large_line_files_into_line_aligned_ranges(tmp_path):
    lines = [f"line {i} " + "x" * (i % 37) for i in range(400)]
    (tmp_path / "big.tsv").write_text("".join(f"{line}\n" for line in lines))
    units = plan_units(Storage(), str(tmp_path / "big.tsv"), Columns(), unit_mb=0.001)
    assert len(units) > 5 and len({u.id for u in units}) == len(units)
    assert units == plan_units(Storage(), str(tmp_path / "big.tsv"), Columns(), unit_mb=0.001)  # stable
    from pipelines.generate.rows import read_unit
    texts = [t for unit in units for t in read_unit(Storage(), unit, Columns()).texts]
    assert texts == lines  # every line exactly once, in order, whatever the cuts


def test_a_large_row_group_is_cut_into_row_ranges(tmp_path):
    texts = [f"sentence {i} " + "y" * (i % 23) for i in range(1000)]
    pq.write_table(pa.table({"source": texts}), tmp_path / "one-group.parquet")
    group_bytes = pq.read_metadata(tmp_path / "one-group.parquet").row_group(0).total_byte_size
    units = plan_units(Storage(), str(tmp_path / "one-group.parquet"), Columns(), unit_mb=group_bytes / 7 / (1 << 20))
    assert len(units) == 7 and [u.first_row for u in units] == [u.row_range[0] for u in units]
    from pipelines.generate.rows import read_unit
    rows = [read_unit(Storage(), unit, Columns()) for unit in units]
    assert [t for r in rows for t in r.texts] == texts
    assert [i for r in rows for i in r.ids] == [f"one-group.parquet:{i}" for i in range(1000)]
