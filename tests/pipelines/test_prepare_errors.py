"""Bad input to `s2s prepare`: one clear line naming the problem, a non-zero exit, no traceback.

File-level problems stop the run; row-level problems are rejects (see test_prepare.py).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import cli
from tests.conftest import REPO, SAMPLE

FAST = ["tokenizer.enabled=false"]


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(["prepare", *args])
    err = capsys.readouterr().err
    return code, "\n".join(line for line in err.splitlines() if line.startswith("error:"))


def test_missing_input(tmp_path, capsys):
    code, err = run_cli(capsys, "--input", str(tmp_path / "nope.tsv"), "--output", str(tmp_path / "out"))
    assert code == 3 and err == f"error: {tmp_path / 'nope.tsv'}: not found"


def test_empty_input(tmp_path, capsys):
    (tmp_path / "empty.tsv").write_bytes(b"")
    code, err = run_cli(capsys, "--input", str(tmp_path / "empty.tsv"), "--output", str(tmp_path / "out"))
    assert code == 3 and err == f"error: {tmp_path / 'empty.tsv'}: is empty"


def test_parquet_without_the_named_columns(tmp_path, capsys):
    pq.write_table(pa.table({"en": ["a"], "it": ["b"]}), tmp_path / "x.parquet")
    code, err = run_cli(capsys, "--input", str(tmp_path / "x.parquet"), "--output", str(tmp_path / "out"))
    assert code == 3
    assert "x.parquet: has no column 'source', 'target' (columns: en, it)" in err


def test_unknown_format_and_config_errors_reported_together(tmp_path, capsys):
    code, err = run_cli(capsys, "--input", str(SAMPLE / "dev.tsv"), "--output", str(tmp_path / "out"),
                        "split.valid_fraction=1.5", "tokenizer.vocab_size=0", "clean.bogus=1")
    assert code == 2
    assert "4 problems" in err and "unknown key `clean.bogus` (valid keys: " in err
    assert "`split.valid_fraction` must be in [0, 1), but is 1.5" in err
    assert "`tokenizer.vocab_size` must be >= 16, but is 0" in err
    assert "`split.valid_fraction + test_fraction` must be below 1, but is 1.51" in err
    (tmp_path / "notes.txt").write_text("hello\tciao\n")
    code, err = run_cli(capsys, "--input", str(tmp_path / "notes.txt"), "--output", str(tmp_path / "out"))
    assert code == 3 and "cannot tell the format" in err


@pytest.mark.slow
@pytest.mark.usefixtures("pipeline")
def test_misaligned_text_files_and_bad_gzip(tmp_path, capsys):
    (tmp_path / "c.en").write_text("one\ntwo\nthree\n")
    (tmp_path / "c.it").write_text("uno\ndue\n")
    code, err = run_cli(capsys, "--input", str(tmp_path / "c"), "--output", str(tmp_path / "out"), *FAST)
    assert code == 3
    assert err == f"error: {tmp_path / 'c.en'}: has 3 lines but {tmp_path / 'c.it'} has 2: aligned files must have equal line counts"
    (tmp_path / "bad.tsv.gz").write_bytes(gzip.compress(b"a\tb\n")[:-6])
    code, err = run_cli(capsys, "--input", str(tmp_path / "bad.tsv.gz"), "--output", str(tmp_path / "out2"), *FAST)
    assert code == 3 and "bad.tsv.gz: is not a valid gzip file" in err


@pytest.mark.slow
@pytest.mark.usefixtures("pipeline")
def test_jsonl_row_problems_are_rejects_not_errors(tmp_path, capsys):
    lines = ['{"source": "Open the file", "target": "Apri il file"}', "{not json", "[1, 2]",
             '{"source": "Save"}', '{"source": 3, "target": "tre"}']
    (tmp_path / "x.jsonl").write_text("\n".join(lines) + "\n")
    code = cli.main(["prepare", "--input", str(tmp_path / "x.jsonl"), "--output", str(tmp_path / "out"), *FAST])
    assert code == 0
    counts = json.loads((tmp_path / "out/manifest.json").read_text())["counts"]
    assert counts["rejected"] == {"invalid_json": 2, "missing_field": 1, "not_a_string": 1}
    assert counts["kept"] == 1 and counts["read"] == 5


@pytest.mark.slow
@pytest.mark.usefixtures("pipeline")
def test_output_holding_another_dataset_is_refused(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert cli.main(["prepare", "--input", str(SAMPLE / "dev.tsv"), "--output", out, *FAST]) == 0
    code, err = run_cli(capsys, "--input", str(SAMPLE / "test.tsv"), "--output", out, *FAST)
    assert code == 4 and "holds a dataset with a different id" in err and "--overwrite" in err
    (tmp_path / "other").mkdir()
    (tmp_path / "other/notes.txt").write_text("mine")
    code, err = run_cli(capsys, "--input", str(SAMPLE / "test.tsv"), "--output", str(tmp_path / "other"), *FAST)
    assert code == 4 and "is not empty" in err


@pytest.mark.slow
def test_s3_missing_bucket_and_wrong_credentials(tmp_path, capsys, s3_env, monkeypatch):
    code, err = run_cli(capsys, "--input", "s3://nosuchbucket/x.tsv", "--output", str(tmp_path / "out"))
    assert code == 3 and err == "error: s3://nosuchbucket/x.tsv: bucket 'nosuchbucket' does not exist"
    bucket = s3_env.create_bucket("creds-test")
    s3_env.client().put_object(Bucket=bucket, Key="x.tsv", Body=b"a\tb\n")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-123")
    code, err = run_cli(capsys, "--input", f"s3://{bucket}/x.tsv", "--output", str(tmp_path / "out"))
    assert code == 5 and err.startswith(f"error: s3://{bucket}/x.tsv: access denied")
    assert "wrong-secret-123" not in err and s3_env.secret_key not in err


def s2s(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect"), S2S_LOCAL_RAY_CPUS="2")
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_process_prints_one_line_without_traceback(tmp_path):
    (tmp_path / "c.en").write_text("one\ntwo\n")
    (tmp_path / "c.it").write_text("uno\n")
    done = s2s(tmp_path, "prepare", "--input", str(tmp_path / "c"), "--output", str(tmp_path / "out"), *FAST)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"error: {tmp_path / 'c.en'}: has 2 lines but {tmp_path / 'c.it'} has 1: "
                      "aligned files must have equal line counts"]
    debug = s2s(tmp_path, "--debug", "prepare", "--input", str(tmp_path / "missing.tsv"), "--output", str(tmp_path / "o"))
    assert debug.returncode == 3 and "Traceback" in debug.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("pipeline")
def test_a_parquet_file_with_corrupt_pages_is_named_with_its_row_group(tmp_path, capsys):
    pairs = [line.split("\t")[:2] for line in (SAMPLE / "train.tsv").read_text(encoding="utf-8").split("\n")[:500]]
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"source": [s for s, _ in pairs], "target": [t for _, t in pairs]}), path,
                   compression="snappy")
    data = bytearray(path.read_bytes())
    data[100:400] = bytes(byte ^ 0xFF for byte in data[100:400])  # the footer stays intact
    path.write_bytes(bytes(data))
    code, err = run_cli(capsys, "--input", str(path), "--output", str(tmp_path / "out"), "tokenizer.enabled=false")
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 3 and len(lines) == 1 and f"{path}: row groups [0] cannot be read" in lines[0]
    assert "Traceback" not in err
