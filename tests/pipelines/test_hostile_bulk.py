"""Hostile input to bulk and quick `s2s translate`, by class: each case one line naming the file,
row or field, the README's exit code (never 70), no traceback; row problems become counted error
rows (rows in = ok + error).

Classes: (1) rows that cannot be used, in a bulk job and on stdin; (2) damaged inputs and model
packages; (3) outputs that would eat their input, or that another job is writing; (4) Ray's own
start-up warnings kept off a failing command's stderr.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import cli, outputs
from pipelines.storage import Storage
from s2s_core.errors import OutputError
from tests.conftest import REPO
from tests.pipelines.test_generate import output_rows, success, translate
from tests.pipelines.test_train import error_line, wait_for

FAST = ["max_len_a=0", "max_len_b=4", "beam_size=1"]  # random weights: keep outputs short

# -- (1) rows that cannot be used: one bulk job over every case -------------------------------------

JSONL_ROWS = [  # (line, expected error); None: a good row. Line 1 must be good (the plan reads it).
    (b'{"source": "Open the file."}', None),
    (b'{"source": "\\ud800x"}', "invalid UTF-8: lone surrogate U+D800 at character 1"),
    (b'["Open the file."]', "not a JSON object (a JSON array)"),
    (b'"just a string"', "not a JSON object (a JSON string)"),
    (b'{"source": 42}', "not a string (int)"),
    (b'{"source": 4.5}', "not a string (float)"),
    (b'{"source": {"text": "nested"}}', "not a string (dict)"),
    (b'{"source": null}', "null"),
    (b'{"text": "elsewhere"}', "no field 'source'"),
    (b'{"source": "a\\u0000b"}', "NUL byte at character 2: binary data, not text"),
    (b'{"source": "a\x00b"}', "invalid JSON (Invalid control character at)"),
    (b'{"source": "caf\xe9"}', "invalid UTF-8 byte at column 16"),
    (b'{"source": "unterminated', "invalid JSON (Unterminated string starting at)"),
    (b'{"source": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "invalid JSON (nested too deeply)"),
    (b'{"source": ' + b"1" * 5000 + b"}", "invalid JSON (a number too long)"),
    (b'{"source": "Close it."}', None),
]
TSV_ROWS = [  # field 0 is the text
    (b"Open the file.\tx", None),
    (b"caf\xe9 au lait\tx", "invalid UTF-8 byte at column 4"),
    (b"a\x00b\tx", "NUL byte at character 2: binary data, not text"),
    (b"Close it.", None),
]
PARQUET_ROWS = [b"Open the file.", b"\xff\xfe bad", None, "a\x00b".encode(), b"Close it."]
PARQUET_ERRORS = [None, "invalid UTF-8 byte at column 1", "null", "NUL byte at character 2: binary data, not text",
                  None]


def line_ids(name: str, data: bytes) -> list[str]:
    """Default ids of a line file's rows: `name@offset of the line`."""
    return [f"{name}@0"] + [f"{name}@{i + 1}" for i, byte in enumerate(data[:-1]) if byte == ord("\n")]


def utf8_unchecked(values: list[bytes | None]) -> pa.Array:
    """A Parquet *string* column holding the given bytes, valid UTF-8 or not (Arrow does not check)."""
    binary = pa.array(values, pa.binary())
    return pa.Array.from_buffers(pa.string(), len(binary), binary.buffers(), null_count=binary.null_count)


@pytest.fixture(scope="module")
def hostile_rows(tmp_path_factory) -> tuple[Path, dict[str, str | None]]:
    """A folder of CRLF JSONL, CRLF TSV, Parquet (a string column with invalid UTF-8; an int
    column) and an empty file; returns it and every row's expected error by id."""
    folder = tmp_path_factory.mktemp("hostile-rows")
    expected: dict[str, str | None] = {}
    for name, rows in (("rows.jsonl", JSONL_ROWS), ("rows.tsv", TSV_ROWS)):
        data = b"".join(line + b"\r\n" for line, _ in rows)
        (folder / name).write_bytes(data)
        expected.update(zip(line_ids(name, data), (error for _, error in rows)))
    pq.write_table(pa.table({"source": utf8_unchecked(PARQUET_ROWS)}), folder / "texts.parquet")
    expected.update({f"texts.parquet:{i}": error for i, error in enumerate(PARQUET_ERRORS)})
    pq.write_table(pa.table({"source": [1, 2, 3]}), folder / "numbers.parquet")
    expected.update({f"numbers.parquet:{i}": "not a string (int)" for i in range(3)})
    (folder / "empty.jsonl").write_bytes(b"")  # no rows: nothing to answer, not an error
    return folder, expected


def reaped_pid() -> int:
    """The pid of a process of this host that has exited (as a SIGKILLed driver's has)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.slow
@pytest.mark.usefixtures("pipeline")
def test_bad_rows_are_counted_error_rows_with_their_reason(tiny_package, hostile_rows, tmp_path, capsys):
    folder, expected = hostile_rows
    output = tmp_path / "out"
    # A lease left by a driver that died on this host (SIGKILL) does not block the job.
    output.mkdir()
    (output / outputs.LEASE).write_text(json.dumps({"owner": "dead", "host": outputs.socket.gethostname(),
                                                    "pid": reaped_pid(), "expires": 4e9, "expires_at": "later"}))
    assert translate(tiny_package, folder, output, "--unit-mb", "0.001", *FAST) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and not [line for line in err.splitlines() if line.startswith("error:")]
    listed = output_rows(str(output))
    assert sorted(row["id"] for row in listed) == sorted(expected)  # every row once: none dropped, none doubled
    rows = {row["id"]: row for row in listed}
    assert {i: rows[i]["error"] for i in expected} == expected
    assert all(rows[i]["output"] is None and rows[i]["source"] is None for i, error in expected.items() if error)
    assert all(rows[i]["output"] for i, error in expected.items() if error is None)
    summary = success(str(output))
    bad = sum(error is not None for error in expected.values())
    assert summary["rows_in"] == summary["rows_out"] == len(expected) == summary["ok"] + summary["error"]
    assert summary["error"] == bad and summary["ok"] == len(expected) - bad
    assert not (output / outputs.LEASE).exists()  # released at the end


# -- (1) quick translation: stdin lines and --text arguments ---------------------------------------

STDIN_CASES = [  # (stdin bytes, expected output lines that are empty, exit code, error line)
    (b"Open the file.\n\xff\xfe bad\nClose it.\n", [False, True, False], 3,
     "error: stdin: line 2: invalid UTF-8 byte 0xff at column 1; its output line is empty"),
    (b"a\x00b\nClose it.", [True, False], 3,
     "error: stdin: line 1: NUL byte at character 2: binary data, not text; its output line is empty"),
    (b"\xff\nok\n\xc3\n", [True, False, True], 3, "error: stdin: 2 lines cannot be used (lines 1, 3; "
     "line 1: invalid UTF-8 byte 0xff at column 1); their output lines are empty"),
    (b"Open the file.\r\nClose it.\r\n", [False, False], 0, None),
    (b"", [], 0, None),
]


@pytest.mark.parametrize("data, empty, code, message", STDIN_CASES, ids=["bad-utf8", "nul", "several", "crlf", "empty"])
def test_stdin_lines_that_cannot_be_used_get_an_empty_line_and_are_named(tiny_package, capsys, monkeypatch, data,
                                                                          empty, code, message):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    assert cli.main(["translate", "--model", str(tiny_package), *FAST]) == code
    captured = capsys.readouterr()
    assert [line == "" for line in captured.out.splitlines()] == empty
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in captured.err and errors == ([message] if message else [])


def test_text_arguments_that_are_not_utf8(tiny_package, capsys):
    # How Python hands over an argument with the byte 0xff (surrogateescape).
    assert cli.main(["translate", "--model", str(tiny_package), "--text", "ok", "--text", "ab\udcff", *FAST]) == 3
    captured = capsys.readouterr()
    assert captured.out.split("\n")[1:] == ["", ""]  # the second output line is empty
    assert [line for line in captured.err.splitlines() if line.startswith("error:")] == [
        "error: --text: argument 2: invalid UTF-8 byte 0xff at character 3; its output line is empty"]


def test_the_issue_command_gives_valid_lines_their_output(tiny_package):
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "translate", "--model", str(tiny_package), *FAST],
                          input=b"Open the file.\n\xff\xfe bad\nClose it.\n", capture_output=True, cwd=REPO,
                          timeout=120)
    assert done.returncode == 3
    lines = done.stdout.decode().split("\n")
    assert len(lines) == 4 and lines[0] and lines[1] == "" and lines[2] and lines[3] == ""
    assert done.stderr.decode().splitlines() == [
        "error: stdin: line 2: invalid UTF-8 byte 0xff at column 1; its output line is empty"]


# -- (2), (3) found by the plan, before Ray or Prefect start ---------------------------------------

def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def parquet_bytes(rows: int = 40) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({"source": [f"Sentence number {i}." for i in range(rows)]}), sink, row_group_size=10)
    return sink.getvalue()


def damaged_package(tiny_package: Path, tmp: Path, name: str, change) -> Path:
    package = tmp / "package"
    shutil.copytree(tiny_package, package)
    target = package / name
    if change == "delete":
        target.unlink()
    else:
        target.write_bytes(change(target.read_bytes()))
    return package


def flip(data: bytes, at: int = 5000) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


# (case id, input files, --input, --output, package damage, exit code, the one error line; {tmp} is the folder)
PLAN_CASES = [
    ("empty-file", {"in/e.jsonl": b""}, "in/e.jsonl", "out", None, 3, "{tmp}/in/e.jsonl: is empty (no rows)"),
    ("only-empty-files", {"in/a.jsonl": b"", "in/b.tsv": b""}, "in", "out", None, 3,
     "{tmp}/in: holds only empty files (no rows)"),
    ("parquet-cut-mid-file", {"in/cut.parquet": parquet_bytes()[:700]}, "in", "out", None, 3,
     "{tmp}/in/cut.parquet: is not a readable Parquet file (Parquet magic bytes not found in footer."),
    ("not-parquet-inside", {"in/x.parquet": b'{"source": "json, not parquet"}\n'}, "in", "out", None, 3,
     "{tmp}/in/x.parquet: is not a readable Parquet file"),
    ("jsonl-line-1-array", {"in/a.jsonl": b'["x"]\n{"source": "y"}\n'}, "in", "out", None, 3,
     "{tmp}/in/a.jsonl: line 1 is a JSON array, not an object: each JSONL row must be an object"),
    ("jsonl-line-1-number", {"in/a.jsonl": b"7\n"}, "in", "out", None, 3,
     "{tmp}/in/a.jsonl: line 1 is a JSON number, not an object"),
    ("jsonl-line-1-too-deep", {"in/a.jsonl": b"[" * 100_000 + b"\n"}, "in", "out", None, 3,
     "{tmp}/in/a.jsonl: line 1 is not valid JSON"),
    ("output-is-the-input-file", {"in/a.jsonl": b'{"source": "x"}\n'}, "in/a.jsonl", "in/a.jsonl", None, 4,
     "{tmp}/in/a.jsonl: is also the input {tmp}/in/a.jsonl: give an --output of its own"),
    ("output-inside-the-input", {"in/a.jsonl": b'{"source": "x"}\n'}, "in", "in/out", None, 4,
     "{tmp}/in/out: is inside the input {tmp}/in: a rerun would read its own outputs"),
    ("output-inside-a-glob-input", {"in/a.parquet": parquet_bytes()}, "in/*.parquet", "in/out", None, 4,
     "{tmp}/in/out: is inside the input {tmp}/in/*.parquet"),
    ("output-holds-the-input", {"data/in/a.jsonl": b'{"source": "x"}\n'}, "data/in", "data", None, 4,
     "{tmp}/data: holds the input {tmp}/data/in: --overwrite would delete it"),
    ("output-is-another-file", {"in/a.jsonl": b'{"source": "x"}\n', "notes.txt": b"x"}, "in", "notes.txt", None, 4,
     "{tmp}/notes.txt: is a file: --output names a directory (or s3:// prefix) for the results"),
    ("output-under-a-file", {"in/a.jsonl": b'{"source": "x"}\n', "notes.txt": b"x"}, "in", "notes.txt/out", None, 4,
     "{tmp}/notes.txt/out: lies under the file {tmp}/notes.txt"),
    ("output-is-the-package", {"in/a.jsonl": b'{"source": "x"}\n'}, "in", "package", None, 4,
     "{tmp}/package: holds the model package {tmp}/package: --overwrite would delete it"),
    ("package-weights-altered", {"in/a.jsonl": b'{"source": "x"}\n'}, "in", "out", ("model.safetensors", flip), 3,
     "{tmp}/package/model.safetensors: corrupted: its SHA-256 does not match metadata.json"),
    ("package-file-truncated", {"in/a.jsonl": b'{"source": "x"}\n'}, "in", "out",
     ("tokenizer/spm.model", lambda data: data[:100]), 3,
     "{tmp}/package/tokenizer/spm.model: truncated or altered: 100 bytes, expected"),
    ("package-file-missing", {"in/a.jsonl": b'{"source": "x"}\n'}, "in", "out", ("config.json", "delete"), 3,
     "{tmp}/package/config.json: missing from the model package"),
    ("package-metadata-not-json", {"in/a.jsonl": b'{"source": "x"}\n'}, "in", "out",
     ("metadata.json", lambda data: data[:50]), 3, "{tmp}/package/metadata.json: is not valid JSON"),
]


@pytest.mark.parametrize("files, source, output, damage, code, message", [case[1:] for case in PLAN_CASES],
                         ids=[case[0] for case in PLAN_CASES])
def test_bad_inputs_outputs_and_packages_are_named_before_ray_starts(tiny_package, tmp_path, capsys, files, source,
                                                                     output, damage, code, message):
    for name, data in files.items():
        write(tmp_path / name, data)
    package = damaged_package(tiny_package, tmp_path, *damage) if damage else tmp_path / "package"
    if not damage:
        shutil.copytree(tiny_package, package)
    assert translate(package, tmp_path / source, tmp_path / output, *FAST) == code
    assert error_line(capsys).startswith("error: " + message.format(tmp=tmp_path))
    assert not (tmp_path / "out").exists()


# -- (2) damage found by the workers: carried to the CLI as itself ----------------------------------

def s2s_process(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """`s2s ARGS` in a fresh process (its own local Ray), against the test Prefect API."""
    from prefect.settings import PREFECT_API_URL

    full_env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO),
                "S2S_LOCAL_RAY_CPUS": "1", **env}
    # As in a user's shell: this process's own Ray set RAY_AUTH_MODE=token, which would keep the
    # child's Ray from warning about token authentication (the warning this is about).
    full_env.pop("RAY_AUTH_MODE", None)
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.usefixtures("pipeline")
def test_corrupt_parquet_pages_are_named_in_one_line_of_stderr(tiny_package, tmp_path):
    """Bytes 100-400 of a real Parquet file flipped: the footer still reads, so the plan passes and
    a worker finds the damage. A fresh process starts its own Ray (which warns about token
    authentication on every start): stderr is still exactly the one error line."""
    data = bytearray(parquet_bytes())
    for i in range(100, 400):
        data[i] ^= 0xFF
    write(tmp_path / "in" / "damaged.parquet", bytes(data))
    done = s2s_process("translate", "--model", str(tiny_package), "--input", str(tmp_path / "in"),
                       "--output", str(tmp_path / "out"), *FAST)
    assert done.returncode == 3, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr  # no Ray warning, no traceback: the one line
    assert re.fullmatch(rf"error: {re.escape(str(tmp_path))}/in/damaged.parquet: row group 0 cannot be read "
                        r"\([^\x00-\x1f]+\): the file is damaged; replace it and run the same command again", lines[0])
    assert not (tmp_path / "out").exists()  # nothing was committed: the output is not left claimed


@pytest.mark.slow
@pytest.mark.usefixtures("pipeline")
def test_an_altered_package_on_s3_is_named_by_the_worker(tiny_package, s3_env, tmp_path, capsys):
    """On s3:// the plan compares sizes only (hashing would download the package into the
    driver): a flipped byte is found by the actor, whose CheckpointError reaches the CLI as
    itself (exit 3, not the cluster's 6), naming the file by its s3:// URI."""
    storage = Storage(s3_env.settings())
    bucket = s3_env.create_bucket("hostile")
    package = damaged_package(tiny_package, tmp_path, "model.safetensors", flip)
    storage.upload_tree(package, f"s3://{bucket}/model")
    storage.write_bytes(f"s3://{bucket}/in/a.jsonl", b'{"source": "Open the file."}\n')
    assert translate(f"s3://{bucket}/model", f"s3://{bucket}/in", f"s3://{bucket}/out", *FAST) == 3
    assert error_line(capsys) == (f"error: s3://{bucket}/model/model.safetensors: corrupted: its SHA-256 does not "
                                  "match metadata.json")
    assert not storage.exists(f"s3://{bucket}/out")


@pytest.mark.slow
@pytest.mark.parametrize("source, output, message", [
    ("in", "in/out", "s3://{b}/in/out: is inside the input s3://{b}/in"),
    ("in/a.jsonl", "in/a.jsonl", "s3://{b}/in/a.jsonl: is also the input s3://{b}/in/a.jsonl"),
    ("in", "notes.txt", "s3://{b}/notes.txt: is a file: --output names a directory (or s3:// prefix)"),
], ids=["inside", "same-object", "an-object"])
def test_s3_outputs_that_would_eat_their_input(tiny_package, s3_env, capsys, request, source, output, message):
    storage = Storage(s3_env.settings())
    bucket = s3_env.create_bucket(f"apart-{request.node.callspec.id}")
    storage.write_bytes(f"s3://{bucket}/in/a.jsonl", b'{"source": "x"}\n')
    storage.write_bytes(f"s3://{bucket}/notes.txt", b"x")
    assert translate(tiny_package, f"s3://{bucket}/{source}", f"s3://{bucket}/{output}") == 4
    assert error_line(capsys).startswith("error: " + message.format(b=bucket))


# -- (3) one output, one job: the lease ---------------------------------------------------------------

def lease_record(expires_in: float = 60, **fields) -> dict:
    """A lease of another job; by default a live process of this host (this one), for a minute."""
    record = {"owner": "someone-else", "host": outputs.socket.gethostname(), "pid": os.getpid(),
              "expires": outputs.time.time() + expires_in, "expires_at": "soon"}
    return {**record, **fields}


@pytest.mark.parametrize("fields, held", [
    ({}, True),  # a live process on this host
    ({"host": "another-host", "pid": 1}, True),  # another host: trusted until it expires
    ({"pid": None}, True),
    ({"expires_in": -1}, False),  # expired
    ({"host": "another-host", "expires_in": -1}, False),
    ({"pid": "dead"}, False),  # its process died on this host: free at once
    (None, False),  # not JSON
], ids=["live", "other-host", "no-pid", "expired", "other-host-expired", "dead-pid", "garbage"])
def test_a_lease_is_free_unless_another_live_job_holds_it(tmp_path, fields, held):
    if fields is None:
        write(tmp_path / outputs.LEASE, b"not json")
    else:
        record = lease_record(**{**fields, **({"pid": reaped_pid()} if fields.get("pid") == "dead" else {})})
        write(tmp_path / outputs.LEASE, json.dumps(record).encode())
    lease = outputs.Lease(Storage(), str(tmp_path), "bulk job")
    if held:
        with pytest.raises(OutputError, match=r"another bulk job is writing here \(pid .* lease someone-"):
            lease.take()
        return
    lease.take()
    assert json.loads((tmp_path / outputs.LEASE).read_text())["owner"] == lease.owner
    lease.release()
    assert not (tmp_path / outputs.LEASE).exists()


@pytest.mark.slow
@pytest.mark.usefixtures("pipeline")
def test_a_second_identical_command_stops_while_the_first_runs(tiny_package, tmp_path, capsys):
    """Two identical commands at once: the second exits 4 at once, naming the first (its pid and
    host) and when its lease expires; the first is not disturbed."""
    write(tmp_path / "in" / "a.parquet", parquet_bytes(400))
    args = ["translate", "--model", str(tiny_package), "--input", str(tmp_path / "in"),
            "--output", str(tmp_path / "out"), *FAST]
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO),
           "S2S_LOCAL_RAY_CPUS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: (tmp_path / "out" / outputs.LEASE).exists() or first.poll() is not None, 120, "the lease")
        assert first.poll() is None
        assert cli.main(args) == 4
        line = error_line(capsys)
        assert line.startswith(f"error: {tmp_path}/out: another bulk job is writing here (pid {first.pid} on "
                               f"{outputs.socket.gethostname()}, lease ")
        assert "its lease is renewed while it runs and expires at " in line and "wait for it to finish" in line
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
