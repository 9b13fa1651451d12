"""Bulk `s2s translate` / `s2s summarize` on a real local Ray, Prefect and SeaweedFS: every input
row answered exactly once, bad rows kept and counted, reruns skip committed units, and a killed
actor or a killed driver loses and duplicates nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import cli
from pipelines.packages import STAGING_PREFIX
from pipelines.storage import Storage, join
from tests.conftest import REPO
from tests.pipelines.conftest import sample_pairs
from tests.pipelines.test_train import read_artifact, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("pipeline")]

FAST = ["max_len_a=0", "max_len_b=6", "beam_size=2"]  # random weights: cap the output length


def translate(package: Path | str, source: Path | str, output: Path | str, *args: str) -> int:
    return cli.main(["translate", "--model", str(package), "--input", str(source), "--output", str(output), *args])


def output_rows(output: str, storage: Storage | None = None) -> list[dict]:
    """Every row of every unit output under `output` (whatever committed or not)."""
    storage = storage or Storage()
    rows = []
    for entry in storage.list(output):
        name = entry.uri.rsplit("/", 1)[1]
        if name.endswith(".parquet") and "/_" not in entry.uri:
            with storage.open_read(entry.uri) as handle:
                rows += pq.read_table(handle).to_pylist()
    return rows


def success(output: str, storage: Storage | None = None) -> dict:
    return json.loads((storage or Storage()).read_bytes(join(str(output), "_SUCCESS")))


@pytest.fixture(scope="module")
def mixed_input(tmp_path_factory) -> tuple[Path, list[str]]:
    """Parquet (row groups of 40, two nulls), JSONL (five kinds of bad or empty rows) and TSV
    files of real sentences; returns the folder and every row's expected id."""
    folder = tmp_path_factory.mktemp("mixed")
    sentences = [source for source, _ in sample_pairs("test")]
    texts = sentences[:120]
    texts[7] = texts[50] = None
    pq.write_table(pa.table({"source": texts, "n": list(range(120))}), folder / "a.parquet", row_group_size=40)
    lines = [json.dumps({"source": s}).encode() for s in sentences[120:175]]
    lines += [b'{"source": 5}', b'{"source": "broken', b'{"source": "caf\xe9"}', b'{"source": "   "}', b'{"source": ""}']
    (folder / "b.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (folder / "c.tsv").write_text("".join(f"{s}\tx\n" for s in sentences[200:240]), encoding="utf-8")
    (folder / "README.txt").write_text("not an input: skipped")
    expected = [f"a.parquet:{i}" for i in range(120)]
    for name in ("b.jsonl", "c.tsv"):  # line files: `name@offset of the line`
        data = (folder / name).read_bytes()
        expected += [f"{name}@0"] + [f"{name}@{i + 1}" for i, byte in enumerate(data[:-1]) if byte == ord("\n")]
    return folder, expected


@pytest.fixture(scope="module")
def mixed_run(tiny_package, mixed_input, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("mixed-out") / "out"
    assert translate(tiny_package, mixed_input[0], output, "--unit-mb", "0.002", *FAST) == 0
    return output


def test_every_row_is_answered_exactly_once_with_bad_rows_counted(mixed_input, mixed_run):
    _, expected = mixed_input
    rows = output_rows(str(mixed_run))
    assert sorted(r["id"] for r in rows) == sorted(expected)  # each id once, none missing
    by_id = {r["id"]: r for r in rows}
    assert by_id["a.parquet:7"]["error"] == "null" and by_id["a.parquet:7"]["output"] is None
    jsonl = [by_id[i] for i in expected if i.startswith("b.jsonl")]
    assert [r["error"] for r in jsonl[55:59]] == ["not a string (int)", "invalid JSON (Unterminated string starting at)",
                                                  "invalid UTF-8 byte at column 16", None]
    assert jsonl[58]["empty"] and jsonl[58]["output"] == "" and jsonl[59]["empty"]
    good = [r for r in rows if r["error"] is None and not r["empty"]]
    assert all(r["output"] and r["tokens"] > 0 for r in good)
    assert len({r["model_id"] for r in rows}) == 1
    summary = success(str(mixed_run))
    assert summary["rows_in"] == summary["rows_out"] == len(expected)
    assert summary["error"] == 5 and summary["empty"] == 2
    assert summary["ok"] + summary["error"] == summary["rows_in"]
    assert summary["tokens"] == sum(r["tokens"] for r in rows)
    assert summary["generation"]["beam_size"] == 2


def test_units_are_named_outputs_with_one_commit_marker_each(mixed_run):
    parts = sorted(p.stem for p in mixed_run.glob("*.parquet"))
    markers = sorted(p.stem for p in (mixed_run / "_commits").glob("*.json"))
    assert parts == markers and len(parts) == success(str(mixed_run))["units"]
    assert len(parts) > 5  # row groups and byte ranges of 2 KB: several units per file
    for marker in (mixed_run / "_commits").glob("*.json"):
        record = json.loads(marker.read_text())
        assert pq.read_metadata(mixed_run / f"{marker.stem}.parquet").num_rows == record["rows_out"]


def test_a_rerun_skips_committed_units_and_changes_nothing(tiny_package, mixed_input, mixed_run, capsys):
    before = {p.name: p.read_bytes() for p in mixed_run.glob("*.parquet")}
    assert translate(tiny_package, mixed_input[0], mixed_run, "--unit-mb", "0.002", *FAST) == 0
    assert "units already committed: skipped" in capsys.readouterr().err
    assert success(str(mixed_run))["units_this_run"] == 0
    assert {p.name: p.read_bytes() for p in mixed_run.glob("*.parquet")} == before


def test_other_options_on_the_same_output_need_overwrite(tiny_package, mixed_input, tmp_path, capsys):
    output = tmp_path / "out"
    assert translate(tiny_package, mixed_input[0], output, *FAST) == 0
    assert translate(tiny_package, mixed_input[0], output, "max_len_a=0", "max_len_b=6", "beam_size=1") == 4
    assert "holds a bulk job with a different generation" in capsys.readouterr().err
    assert translate(tiny_package, mixed_input[0], output, "--overwrite", "max_len_a=0", "max_len_b=6",
                     "beam_size=1") == 0
    assert success(str(output))["generation"]["beam_size"] == 1
    assert sorted(r["id"] for r in output_rows(str(output))) == sorted(mixed_input[1])


def test_s3_in_s3_out_with_a_package_on_s3_and_id_columns(tiny_package, s3_env, capsys):
    storage = Storage(s3_env.settings())
    bucket = s3_env.create_bucket("bulk")
    for path in tiny_package.rglob("*"):
        if path.is_file():
            storage.upload(path, f"s3://{bucket}/model/{path.relative_to(tiny_package)}")
    sources = [source for source, _ in sample_pairs("dev")[:90]]
    storage.write_bytes(f"s3://{bucket}/in/part-1.tsv", "".join(f"row{i}\t{s}\n" for i, s in enumerate(sources)).encode())
    code = cli.main(["summarize", "--model", f"s3://{bucket}/model", "--input", f"s3://{bucket}/in/*.tsv",
                     "--output", f"s3://{bucket}/out", "--column", "1", "--id-column", "0", "--unit-mb", "0.004",
                     *FAST, "max_source_tokens=8"])
    assert code == 0
    rows = output_rows(f"s3://{bucket}/out", storage)
    assert sorted(r["id"] for r in rows) == sorted(f"row{i}" for i in range(90))
    assert {r["id"]: r["source"] for r in rows} == {f"row{i}": s for i, s in enumerate(sources)}
    summary = success(f"s3://{bucket}/out", storage)
    assert summary["truncated"] == sum(r["truncated"] for r in rows) > 0  # 8 tokens: long rows are cut
    assert "| rows out | 90 |" in read_artifact("summarize-summary").data
    assert f"s3://{bucket}/out: 90 rows (0 errors" in capsys.readouterr().out


def staged_packages() -> set[str]:
    """The temporary directories that hold downloaded s3:// packages (actors run on this machine)."""
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith(STAGING_PREFIX)}


def test_repeated_s3_bulk_jobs_leave_no_downloaded_package_behind(tiny_package, s3_env):
    storage = Storage(s3_env.settings())
    bucket = s3_env.create_bucket("staging")
    for path in tiny_package.rglob("*"):
        if path.is_file():
            storage.upload(path, f"s3://{bucket}/model/{path.relative_to(tiny_package)}")
    storage.write_bytes(f"s3://{bucket}/in.tsv", "".join(f"{s}\n" for s, _ in sample_pairs("dev")[:20]).encode())
    before = staged_packages()
    for run in ("a", "b", "c"):  # each a new output, so each run starts actors that download the package
        assert translate(f"s3://{bucket}/model", f"s3://{bucket}/in.tsv", f"s3://{bucket}/out-{run}", *FAST) == 0
        assert success(f"s3://{bucket}/out-{run}", storage)["rows_out"] == 20
    assert staged_packages() == before


def unit_workers() -> list[psutil.Process]:
    """Live actor processes of bulk jobs (Ray names them after the actor class)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and cmdline[0].startswith("ray::UnitWorker") and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


@pytest.fixture(scope="module")
def many_units(tmp_path_factory) -> tuple[Path, list[str]]:
    """600 real sentences in one row group, cut into 30 row-range units of 20 rows (each
    taking a visible fraction of a second); returns the folder and the ids."""
    folder = tmp_path_factory.mktemp("many")
    sentences = [source for source, _ in sample_pairs("train")[:600]]
    pq.write_table(pa.table({"id": [f"s{i}" for i in range(600)], "source": sentences}), folder / "in.parquet")
    group_bytes = pq.read_metadata(folder / "in.parquet").row_group(0).total_byte_size
    SLOW[SLOW.index("--unit-mb") + 1] = f"{group_bytes / 30 / (1 << 20):.9f}"
    return folder, [f"s{i}" for i in range(600)]


SLOW = ["--id-column", "id", "--unit-mb", "set by many_units", "--workers", "2", "max_len_a=0", "max_len_b=30",
        "beam_size=4"]


def test_a_killed_actor_is_restarted_and_its_unit_retried(tiny_package, many_units, tmp_path):
    output = tmp_path / "out"
    killed: list[int] = []

    def kill_an_actor_mid_job():
        wait_for(lambda: len(list((output / "_commits").glob("*.json"))) >= 3, 240, "three committed units")
        victim = unit_workers()[0]
        victim.send_signal(signal.SIGKILL)
        killed.append(victim.pid)

    killer = threading.Thread(target=kill_an_actor_mid_job, daemon=True)
    killer.start()
    assert translate(tiny_package, many_units[0], output, *SLOW) == 0
    killer.join(timeout=5)
    assert killed, "no actor was killed"
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE
    assert sorted(r["id"] for r in output_rows(str(output))) == sorted(many_units[1])
    assert success(str(output))["rows_out"] == 600 and success(str(output))["units"] == 30


def test_a_killed_driver_is_finished_by_running_the_same_command(tiny_package, many_units, tmp_path, capsys):
    from prefect.settings import PREFECT_API_URL

    output = tmp_path / "out"
    command = [sys.executable, "-m", "pipelines.cli", "translate", "--model", str(tiny_package),
               "--input", str(many_units[0]), "--output", str(output), *SLOW]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO)}
    with open(tmp_path / "first.log", "wb") as log:
        # Its own session: the kill takes the driver, its local Ray and the actors, like a lost machine.
        run = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: len(list((output / "_commits").glob("*.json"))) >= 4 or run.poll() is not None,
                     300, "four committed units")
            assert run.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            os.killpg(run.pid, signal.SIGKILL)
        finally:
            run.wait(timeout=60)
    # A unit already being written when the driver died may still land its marker (Ray's worker
    # processes exit once they notice their owner is gone), so count once the markers settle.
    committed = settled_count(output / "_commits")
    assert 4 <= committed < 30 and not (output / "_SUCCESS").exists()

    assert translate(tiny_package, many_units[0], output, *SLOW) == 0
    assert f"{committed} of 30 units already committed: skipped" in capsys.readouterr().err
    assert sorted(r["id"] for r in output_rows(str(output))) == sorted(many_units[1])
    summary = success(str(output))
    assert summary["rows_in"] == summary["rows_out"] == 600 and summary["units_this_run"] == 30 - committed


def settled_count(folder: Path, quiet_s: float = 3.0, timeout: float = 60.0) -> int:
    """The number of commit markers in `folder` once it has not changed for `quiet_s` seconds."""
    deadline = time.monotonic() + timeout
    count, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = len(list(folder.glob("*.json")))
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return count
        time.sleep(0.2)
    raise AssertionError(f"commit markers in {folder} kept changing for {timeout:.0f} s")


def long_documents(path: Path, rows: int) -> float:
    """`rows` JSONL documents of about 100 KB of real text each; returns the file's size in MB."""
    text = " ".join(source for source, _ in sample_pairs("train"))[:100_000]
    with open(path, "w", encoding="utf-8") as out:
        for i in range(rows):
            out.write(json.dumps({"id": f"d{i}", "source": f"{i} {text}"}) + "\n")
    return path.stat().st_size / (1 << 20)


SUMMARIZE_LONG = ["--id-column", "id", "--unit-mb", "4", "--workers", "2", "max_source_tokens=16", "max_len_a=0",
                  "max_len_b=2"]


def test_memory_stays_bounded_on_a_dataset_larger_than_the_object_store(tiny_package, tmp_path):
    """115 MB of documents through a Ray whose object store has 80 MB: actors read their units
    from storage and write their outputs themselves, so rows never pass through the object
    store, and an actor's peak memory depends on the unit size (4 MB), not on the dataset's:
    the same as for a dataset 4 times smaller."""
    from prefect.settings import PREFECT_API_URL

    small_mb = long_documents(tmp_path / "small.jsonl", 300)
    assert cli.main(["summarize", "--model", str(tiny_package), "--input", str(tmp_path / "small.jsonl"),
                     "--output", str(tmp_path / "small-out"), *SUMMARIZE_LONG]) == 0
    small = success(str(tmp_path / "small-out"))["throughput"]["worker_peak_rss_mb"]
    large_mb = long_documents(tmp_path / "large.jsonl", 1200)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO),
           "S2S_LOCAL_RAY_CPUS": "2", "S2S_LOCAL_RAY_OBJECT_STORE_MB": "80"}
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "summarize", "--model", str(tiny_package),
                           "--input", str(tmp_path / "large.jsonl"), "--output", str(tmp_path / "out"),
                           *SUMMARIZE_LONG], cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = success(str(tmp_path / "out"))
    assert large_mb > 80 > small_mb and summary["rows_out"] == 1200 and summary["truncated"] == 1200
    assert summary["units"] >= 28
    large = summary["throughput"]["worker_peak_rss_mb"]
    assert large < small + (large_mb - small_mb) / 4, (small, large)


def test_more_workers_than_the_cluster_can_place_fail_at_once(tiny_package, mixed_input, tmp_path, capsys):
    """Resources are explicit: 3 actors x 1 CPU on the 2-CPU test Ray is refused up front
    instead of leaving a third actor pending and the job waiting forever."""
    code = translate(tiny_package, mixed_input[0], tmp_path / "out", "--workers", "3", *FAST)
    assert code == 6
    assert "3 workers x 1 CPU need 3 CPU, but the Ray cluster has 2" in capsys.readouterr().err


def test_on_an_autoscaling_cluster_the_job_waits_for_nodes_then_says_so(tiny_package, mixed_input, tmp_path, capsys,
                                                                         monkeypatch):
    """With S2S_SCALE_WAIT_S the missing CPUs are requested from the autoscaler first; this test
    Ray has none, so after the wait the job still fails in one line, saying it waited."""
    monkeypatch.setenv("S2S_SCALE_WAIT_S", "1")
    code = translate(tiny_package, mixed_input[0], tmp_path / "out", "--workers", "3", *FAST)
    assert code == 6
    assert "need 3 CPU, but the Ray cluster has 2 after waiting 1 s for the autoscaler" in capsys.readouterr().err
