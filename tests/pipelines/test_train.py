"""`s2s train` end to end on real Ray Train (2 CPU workers, gloo DDP), Prefect and SeaweedFS:
the same loss curve for any worker count, a killed worker and a killed run both recover, and
the model package round-trips."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch

from pipelines import cli
from pipelines.storage import Storage, join
from s2s_core.package import load_package
from s2s_core.tokenizer import EOS_ID
from tests.conftest import REPO
from tests.pipelines.conftest import TINY

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("pipeline")]



def train(dataset: Path | str, output: Path | str, *args: str) -> int:
    return cli.main(["train", "--data", str(dataset), "--output", str(output), *args])


def losses(output: Path | str, storage: Storage | None = None) -> list[float]:
    uri = join(str(output), "metrics", "train.jsonl")
    text = (storage.read_bytes(uri).decode() if storage else Path(uri).read_text())
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))  # no gaps, no repeats
    return [r["loss"] for r in records]


def test_two_workers_follow_one_worker_with_the_same_global_batch(dataset, two_workers, tmp_path, capsys):
    one = tmp_path / "one-worker"
    assert train(dataset, one, "--workers", "1", *TINY, "max_steps=20", "optim.accumulation=2") == 0
    captured = capsys.readouterr()
    assert "train: step 20/20 | loss " in captured.err and " tok/s | padding " in captured.err
    assert f"model package: {one}/model (step 20)" in captured.out
    reference = losses(two_workers)
    assert len(reference) == 20 and reference[-1] < reference[0] - 1.0
    torch.testing.assert_close(losses(one), reference, rtol=1e-4, atol=0)
    assert json.loads((two_workers / "model/metadata.json").read_text())["workers"] == 2


def test_outputs_and_the_package_round_trip(dataset, two_workers):
    names = sorted(p.name for p in (two_workers / "checkpoints").glob("checkpoint-*"))
    assert names == ["checkpoint-0000010", "checkpoint-0000020"]
    for name in ("train.csv", "train.jsonl", "valid.csv", "curves.png"):
        assert (two_workers / "metrics" / name).stat().st_size > 0
    package = load_package(two_workers / "model")
    meta = package.metadata
    assert meta["step"] == 20 and meta["tokens_seen"] > 10_000 and meta["training_seconds"] > 0
    assert meta["dataset_id"] == json.loads((dataset / "manifest.json").read_text())["dataset_id"]
    assert package.config.src_vocab_size == 1000 and package.config.encoder_layers == 2
    run_config = json.loads((two_workers / "config.json").read_text())
    assert run_config["model"] == json.loads((two_workers / "model/config.json").read_text())
    src = torch.tensor([package.source_tokenizer.encode("Good morning, how are you?") + [EOS_ID]])
    assert package.model(src, torch.tensor([[1]])).shape == (1, 1, 1000)


def test_lstm_trains_validates_and_keeps_the_best(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths, as in `make demo`: workers run elsewhere
    output = tmp_path / "lstm"
    code = train(os.path.relpath(dataset, tmp_path), "lstm", "--workers", "1", *TINY, "preset=lstm-tiny", "max_steps=12",
                 "validation.every_steps=6", "validation.decode_sentences=20", "validation.metric=loss")
    assert code == 0
    valid = [json.loads(line) for line in (output / "metrics/valid.jsonl").read_text().splitlines()]
    assert [v["step"] for v in valid] == [6, 12] and all(0 <= v["chrf"] <= 100 for v in valid)
    best = min(valid, key=lambda v: v["valid_loss"])
    meta = json.loads((output / "model/metadata.json").read_text())
    assert meta["best_step"] == best["step"] and meta["validation"]["valid_loss"] == best["valid_loss"]
    assert (output / "best/model.safetensors").read_bytes() == (output / "model/model.safetensors").read_bytes()
    assert load_package(output / "model").config.family == "lstm"
    artifact = read_artifact("train-validation")
    assert [row["step"] for row in json.loads(artifact.data)] == [6, 12]
    curves = read_artifact("train-curves").data
    png = base64.b64decode(curves.split("data:image/png;base64,", 1)[1].split(")", 1)[0])
    assert png == (output / "metrics" / "curves.png").read_bytes()
    assert "valid_loss" in capsys.readouterr().out


def read_artifact(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                            limit=1, sort="CREATED_DESC")
    return artifact


def ray_train_workers(started_after: float) -> list[psutil.Process]:
    """Live Ray Train worker processes of this run (earlier runs' workers may still be exiting)."""
    found = []
    for process in psutil.process_iter(["cmdline", "create_time", "status"]):
        cmdline = process.info["cmdline"] or []
        if (cmdline and cmdline[0].startswith("ray::RayTrainWorker") and process.info["create_time"] >= started_after
                and process.info["status"] != psutil.STATUS_ZOMBIE):
            found.append(process)
    return found


def registered(snapshot: Path, name: str) -> bool:
    """Whether Ray Train's controller has registered checkpoint `name` (files alone are not
    enough: a worker killed between upload and registration restarts from the one before)."""
    try:
        return name in snapshot.read_text()
    except FileNotFoundError:
        return False


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_killed_worker_restarts_from_the_last_checkpoint(dataset, two_workers, tmp_path, capsys):
    output = tmp_path / "killed-worker"
    snapshot = output / "checkpoints/checkpoint_manager_snapshot.json"
    killed: list[int] = []
    started = time.time()

    def kill_a_worker_after_the_first_checkpoint():
        wait_for(lambda: registered(snapshot, "checkpoint-0000010"), 240, "the first checkpoint")
        victim = ray_train_workers(started)[-1]
        victim.send_signal(signal.SIGKILL)
        killed.append(victim.pid)

    killer = threading.Thread(target=kill_a_worker_after_the_first_checkpoint, daemon=True)
    killer.start()
    code = train(dataset, output, "--workers", "2", "--max-failures", "2", *TINY, "max_steps=40")
    killer.join(timeout=5)
    assert killed, "no worker was killed"
    assert code == 0
    err = capsys.readouterr().err
    assert "train: resumed from the checkpoint of step " in err
    assert json.loads((output / "model/metadata.json").read_text())["step"] == 40
    # Same config as the reference run (max_steps aside): the interrupted run repeats its curve.
    torch.testing.assert_close(losses(output)[:20], losses(two_workers), rtol=1e-4, atol=0)


def test_a_killed_run_resumes_from_its_checkpoints_on_s3(dataset, two_workers, s3_env, tmp_path, capsys):
    from prefect.settings import PREFECT_API_URL

    bucket = s3_env.create_bucket("train-resume")
    output = f"s3://{bucket}/runs/tiny"
    storage = Storage(s3_env.settings())
    command = [sys.executable, "-m", "pipelines.cli", "train", "--data", str(dataset), "--output", output,
               "--workers", "2", *TINY, "max_steps=40"]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO)}
    with open(tmp_path / "first.log", "wb") as log:
        # Its own session: the kill takes the driver and the local Ray it started, like a lost machine.
        run = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
        try:
            snapshot = join(output, "checkpoints/checkpoint_manager_snapshot.json")
            wait_for(lambda: (storage.exists(snapshot) and b"checkpoint-0000010" in storage.read_bytes(snapshot))
                     or run.poll() is not None, 300, "the first checkpoint on S3")
            assert run.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            os.killpg(run.pid, signal.SIGKILL)
        finally:
            run.wait(timeout=60)
    assert not storage.exists(join(output, "model/metadata.json"))

    assert train(dataset, output, "--workers", "2", *TINY, "max_steps=40") == 0
    assert "train: resumed from the checkpoint of step " in capsys.readouterr().err
    metadata = json.loads(storage.read_bytes(join(output, "model/metadata.json")))
    assert metadata["step"] == 40
    torch.testing.assert_close(losses(output, storage)[:20], losses(two_workers), rtol=1e-4, atol=0)
    keys = [e.uri for e in storage.list(join(output, "checkpoints"))]
    assert any(k.endswith("checkpoint-0000040/model.safetensors") for k in keys)


# --- bad input: one line, an exit code, no traceback ------------------------------------------

def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_data_without_a_manifest(tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    assert train(tmp_path / "raw", tmp_path / "out", *TINY) == 3  # input: not a prepared dataset
    assert error_line(capsys) == f"error: {tmp_path / 'raw'}: no manifest.json: not a prepared dataset (run `s2s prepare` first)"


def test_tokenizer_and_model_vocabularies_differ(dataset, tmp_path, capsys):
    assert train(dataset, tmp_path / "out", *TINY, "model.src_vocab_size=500", "model.tgt_vocab_size=500") == 2
    line = error_line(capsys)
    assert "`model.src_vocab_size` is 500 but the dataset tokenizer has 1000 pieces" in line
    assert "`model.tgt_vocab_size` is 500" in line


def test_config_problems_are_reported_together(dataset, tmp_path, capsys):
    assert train(dataset, tmp_path / "out", "preset=transformer-huge", "max_steps=0", "optim.lr=-1",
                 "batching.max_tokenz=9", "--workers", "0") == 2
    line = error_line(capsys)
    assert "`--workers` must be >= 1, but is 0" in line
    assert train(dataset, tmp_path / "out", "preset=transformer-huge", "max_steps=0", "optim.lr=-1",
                 "batching.max_tokenz=9") == 2
    line = error_line(capsys)
    for part in ("transformer-huge", "transformer-small", "lstm-attention", "max_steps", "optim.lr",
                 "batching.max_tokenz", "max_tokens"):
        assert part in line, part


def test_a_different_config_on_the_same_output_is_refused(dataset, two_workers, capsys):
    assert train(dataset, two_workers, "--workers", "2", *TINY, "max_steps=20", "optim.lr=1e-3") == 4
    line = error_line(capsys)
    assert f"error: {two_workers}: holds a run with a different config (train.optim.lr: 0.002 -> 0.001)" in line
    assert "--overwrite" in line


def test_more_workers_than_the_cluster_can_place(dataset, tmp_path, capsys):
    started = time.monotonic()
    assert train(dataset, tmp_path / "out", "--workers", "5", *TINY) == 6
    assert "5 workers x 1 CPU need 5 CPU, but the Ray cluster has 2" in error_line(capsys)
    assert time.monotonic() - started < 30


def test_a_corrupted_checkpoint_is_named(dataset, two_workers, tmp_path, capsys):
    output = tmp_path / "corrupted"
    shutil.copytree(two_workers, output)
    weights = output / "checkpoints/checkpoint-0000020/model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code = train(dataset, output, "--workers", "1", "--max-failures", "0", *TINY, "max_steps=30")
    assert code == 3
    line = error_line(capsys)
    assert line.startswith(f"error: {output}/checkpoints/checkpoint-0000020/model.safetensors: truncated or altered")


def test_init_from_a_package_with_another_tokenizer_is_refused(dataset, tiny_package, tmp_path, capsys):
    """Continued training reads the package's weights with the dataset's token ids: they must agree."""
    code = train(dataset, tmp_path / "continued", *TINY, "max_steps=2", f"init_from={tiny_package}")
    assert code == 2
    message = capsys.readouterr().err.strip()
    assert "has another tokenizer than the dataset" in message and f"tokenizer.from={tiny_package}" in message
    assert not (tmp_path / "continued").exists()


@pytest.mark.parametrize("loader", ["stream", "memory"])
def test_length_limits_that_leave_no_usable_pair_are_one_line(dataset, tmp_path, capsys, loader):
    # Found by the plan from the token-id shards' lengths (either loader), before Ray Train
    # starts: the flow has not claimed the output yet.
    assert train(dataset, tmp_path / "out", *TINY, "max_steps=2", "batching.max_source_len=1",
                 "batching.max_target_len=1", f"batching.loader={loader}") == 2
    assert "no training batches: no train pair is non-empty on both sides and within" in error_line(capsys)
    assert not (tmp_path / "out").exists()
