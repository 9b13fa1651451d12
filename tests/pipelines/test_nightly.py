"""The nightly flow on real data (prepare -> train -> score -> promote -> submissions), and the
retries of a flow's I/O tasks against a real S3 server that is briefly unreachable."""

from __future__ import annotations

import contextvars
import json
import socket
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.local_s3 import free_ports
from pipelines.orchestrate.nightly import nightly
from pipelines.orchestrate.submissions import Registry, Submission, submission_id
from pipelines.storage import Storage
from tests.conftest import SAMPLE
from tests.pipelines.conftest import TINY, sample_pairs
from tests.pipelines.test_generate import output_rows, success

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("pipeline")]


def flow_run_names() -> list[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return [run.name for run in client.read_flow_runs(limit=200)]


@pytest.fixture
def night(tmp_path, monkeypatch):
    """Two corpus drops of real pairs, a fixed dev set, and a state folder with one submission."""
    monkeypatch.setenv("S2S_STATE", str(tmp_path / "state"))
    pairs = sample_pairs("train")
    (tmp_path / "drops" / "2026-11-23").mkdir(parents=True)
    (tmp_path / "drops" / "2026-11-24").mkdir()
    for name, part in (("2026-11-23", pairs[:1500]), ("2026-11-24", pairs[1500:3000])):
        (tmp_path / "drops" / name / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in part))
    ids = [f"q{i}" for i in range(30)]
    pq.write_table(pa.table({"id": ids, "source": [s for s, _ in sample_pairs("test")[:30]]}), tmp_path / "in.parquet")
    return tmp_path, ids


def overrides(folder: Path) -> list[str]:
    train = [*TINY, "max_steps=10"]
    return [f"drops={folder / 'drops'}", f"root={folder / 'root'}", f"valid=[{SAMPLE / 'dev.tsv'}]",
            "prepare_overrides=[tokenizer.vocab_size=600, split.test_rows=0]",
            f"train_overrides=[{', '.join(train)}]", "eval_sentences=20", "workers=1"]


def test_nightly_trains_promotes_and_serves_submissions_then_does_nothing_the_second_time(night, tiny_package):
    folder, ids = night
    registry = Registry(Storage(), str(folder / "state"))
    output = str(folder / "translated")
    registry.save(Submission(id=submission_id("translate", output), task="translate", model=str(tiny_package),
                             input=str(folder / "in.parquet"), output=output, id_column="id",
                             options=["max_len_a=0", "max_len_b=6", "beam_size=2"]))

    first = nightly(overrides=overrides(folder))
    assert first["prepared"] and first["trained"] and first["promoted"]
    assert first["submissions"] == [submission_id("translate", output)]
    pointer = json.loads((folder / "root" / "models" / "current.json").read_text())
    assert json.loads((folder / "state" / "models" / "current.json").read_text()) == pointer  # submit's default
    assert Path(pointer["model"], "metadata.json").exists() and pointer["model"].startswith(str(folder / "root"))
    recorded = json.loads((folder / "root" / "nightly.json").read_text())
    assert recorded["data_key"] == first["data_key"] and recorded["scores"]["promoted"] is None
    assert sorted(r["id"] for r in output_rows(output)) == sorted(ids) and success(output)["rows_out"] == 30
    assert registry.get(submission_id("translate", output)).state == "done"

    runs_before = flow_run_names()
    second = nightly(overrides=overrides(folder))
    assert second == {"prepared": False, "trained": False, "promoted": False, "submissions": [], "failed": [],
                      "data_key": first["data_key"]}
    new_runs = [name for name in flow_run_names() if name not in runs_before]
    assert all(name.startswith("nightly-") for name in new_runs), new_runs  # no prepare, train or bulk run

    # A third drop, continuing the promoted model: its tokenizer is reused and its weights start the run.
    (folder / "drops" / "2026-11-25").mkdir()
    extra = sample_pairs("train")[3000:4000]
    (folder / "drops" / "2026-11-25" / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in extra))
    third = nightly(overrides=[*overrides(folder), "on_new_data=continue"])
    assert third["prepared"] and third["trained"] and third["data_key"] != first["data_key"]
    night3 = json.loads((folder / "root" / "nightly.json").read_text())
    assert night3["continued_from"] == pointer["model"] and night3["scores"]["promoted"] is not None
    manifest = json.loads(Path(night3["dataset"], "manifest.json").read_text())
    package = json.loads(Path(pointer["model"], "metadata.json").read_text())["files"]
    assert manifest["tokenizer"]["reused_from"] == str(Path(pointer["model"], "tokenizer"))
    assert all(package[f["path"]]["sha256"] == f["sha256"] for f in manifest["tokenizer"]["files"])
    run_config = json.loads(Path(night3["run"], "config.json").read_text())
    assert run_config["train"]["init_from"] == pointer["model"]


def test_a_night_continues_an_imported_model_and_compares_the_result_with_it(night, marian_checkpoint, capsys):
    """An imported checkpoint as the promoted model: the night prepares the new drops with its
    tokenizer, fine-tunes it, and scores the result against it before promoting either."""
    from pipelines import cli
    from pipelines.orchestrate import promotion
    from pipelines.packages import package_id

    folder, _ = night
    imported, storage = str(folder / "opus-mt-en-it"), Storage()
    assert cli.main(["import", "--from", str(marian_checkpoint), "--output", imported]) == 0
    root = str(folder / "root")
    promotion.promote(storage, str(folder / "state"), root, imported, package_id(storage, imported), {})
    pointer = promotion.current(storage, root)

    night_done = nightly(overrides=[*overrides(folder), "on_new_data=continue", "metric=chrf"])
    assert night_done["prepared"] and night_done["trained"]
    recorded = json.loads((folder / "root" / "nightly.json").read_text())
    assert recorded["continued_from"] == pointer["model"]
    new, old = recorded["scores"]["new"]["chrf"], recorded["scores"]["promoted"]["chrf"]
    assert night_done["promoted"] == (new > old)  # min_improvement 0: the better one stays promoted
    run_config = json.loads(Path(recorded["run"], "config.json").read_text())
    assert run_config["train"]["init_from"] == pointer["model"]
    assert run_config["model"]["output_bias"] is True  # the Marian import's own config, not the tiny preset
    tuned = json.loads(Path(recorded["run"], "model", "metadata.json").read_text())
    assert tuned["origin"]["family"] == "marian"


class Outage:
    """A TCP forwarder to the real S3 server that refuses connections (nothing listens on its
    port) until `restore()`: a network outage between the job and its storage."""

    def __init__(self, target_port: int) -> None:
        self.port, self.target_port = free_ports(1)[0], target_port
        self._listener: socket.socket | None = None

    def restore(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def task_runs_awaiting_retry() -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterState, TaskRunFilterStateName

    with get_client(sync_client=True) as client:
        return client.read_task_runs(task_run_filter=TaskRunFilter(
            state=TaskRunFilterState(name=TaskRunFilterStateName(any_=["AwaitingRetry"]))))


def test_a_task_failing_once_on_unreachable_storage_is_retried_and_the_flow_succeeds(
        s3_env, tiny_package, tmp_path, monkeypatch):
    from pipelines.generate.flow import bulk_generate

    bucket = s3_env.create_bucket("retry-input")
    ids = [f"t{i}" for i in range(20)]
    table = pa.table({"id": ids, "source": [s for s, _ in sample_pairs("dev")[:20]]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    Storage(s3_env.settings()).write_bytes(f"s3://{bucket}/in.parquet", sink.getvalue().to_pybytes())
    outage = Outage(int(s3_env.endpoint_url.rsplit(":", 1)[1]))
    monkeypatch.setenv("S2S_S3_ENDPOINT", f"http://127.0.0.1:{outage.port}")
    monkeypatch.setenv("S2S_IO_RETRY_DELAY_S", "3")

    def restore_after_the_first_failure() -> None:
        deadline = time.monotonic() + 120
        while not task_runs_awaiting_retry() and time.monotonic() < deadline:
            time.sleep(0.2)
        outage.restore()

    # The watcher reads the same (test) Prefect API as this thread: it runs in a copy of our context.
    watcher = threading.Thread(target=contextvars.copy_context().run, args=(restore_after_the_first_failure,))
    watcher.start()
    output = str(tmp_path / "out")
    state = bulk_generate(task="translate", model=str(tiny_package), input=f"s3://{bucket}/in.parquet",
                          output=output, id_column="id", overrides=["max_len_a=0", "max_len_b=6", "beam_size=2"],
                          return_state=True)
    watcher.join(timeout=10)
    assert state.is_completed() and state.result()["rows_out"] == 20
    assert sorted(r["id"] for r in output_rows(output)) == sorted(ids)
    plan_runs = [run for run in task_runs_of(state.state_details.flow_run_id) if run.task_key.startswith("plan")]
    assert [(run.run_count, run.state.type.value) for run in plan_runs] == [(2, "COMPLETED")]


def task_runs_of(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
