"""Driver side of `train`: resolve and check everything, then launch Ray Train and show progress.

Output layout (local directory or s3:// prefix):
    config.json          the resolved run config; a rerun with a different one is refused
    checkpoints/         Ray Train's run: checkpoint-NNNNNNN/ (last K) + its own state files
    best/                model package of the best validation score so far
    metrics/             train.{jsonl,csv}, valid.{jsonl,csv}, curves.png
    model/               the final model package (best if validated, else last)
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import replace
from typing import Any, Callable, TextIO

import ray
from ray.util.queue import Empty, Queue

from pipelines import ray_runtime
from pipelines.storage import NotFound, Storage, join
from pipelines.train import data as train_data
from pipelines.train.worker import RUN_NAME, TrainJob, train_loop
from s2s_core.config import load_yaml, merge, parse_overrides, to_dict
from s2s_core.errors import CheckpointError, ConfigError, InputError, OutputError
from s2s_core.tokenizer import Tokenizer
from s2s_core.training import config as train_config

RESUMABLE_CHANGES = {"max_steps", "max_epochs", "max_minutes"}  # a rerun may extend training without --force


def resolve_config(config_file: str | None, overrides: list[str]) -> tuple[train_config.TrainConfig, Any]:
    """Defaults <- YAML file <- key=value overrides: (TrainConfig, ModelConfig), checked together."""
    data = load_yaml(config_file) if config_file else {}
    return train_config.resolve(merge(data, parse_overrides(overrides)))


def fit_vocabulary(model: Any, storage: Storage, data: str, manifest: dict) -> Any:
    """Fill the model's vocabulary sizes from the dataset tokenizer, or refuse a mismatch."""
    if not (manifest.get("tokenizer") or {}).get("files"):
        raise InputError(data, "the dataset has no tokenizer (prepare it with tokenizer.enabled=true)")
    local = train_data.download_tokenizer(storage, data, manifest)
    sizes = {"src_vocab_size": Tokenizer.from_dir(local, "source").vocab_size,
             "tgt_vocab_size": Tokenizer.from_dir(local, "target").vocab_size}
    wrong = [f"`model.{k}` is {getattr(model, k)} but the dataset tokenizer has {v} pieces"
             for k, v in sizes.items() if getattr(model, k) not in (0, v)]
    if wrong:
        raise ConfigError(wrong)
    return replace(model, **sizes)


def check_init_from(storage: Storage, train: train_config.TrainConfig, manifest: dict) -> None:
    """`init_from` must name a package whose tokenizer is the dataset's (else its weights would
    be read with other token ids).

    Raises:
        CheckpointError: not a package; ConfigError: the tokenizers differ.
    """
    if not train.init_from:
        return
    try:
        package_files = json.loads(storage.read_bytes(join(train.init_from, "metadata.json")))["files"]
    except NotFound:
        raise CheckpointError(train.init_from, "is not a model package (no metadata.json) for init_from") from None
    dataset_files = {f["path"]: f["sha256"] for f in (manifest.get("tokenizer") or {}).get("files", [])}
    differ = [path for path, sha in dataset_files.items()
              if path != "tokenizer/settings.json" and package_files.get(path, {}).get("sha256") != sha]
    if differ:
        raise ConfigError([f"`init_from` {train.init_from} has another tokenizer than the dataset ({differ[0]}): "
                           f"prepare the dataset with tokenizer.reuse={join(train.init_from, 'tokenizer')}"])


def run_config_of(train: train_config.TrainConfig, model: Any, data: str, manifest: dict) -> dict:
    return {"train": to_dict(train), "model": to_dict(model), "data": data, "dataset_id": manifest.get("dataset_id")}


def check_output(storage: Storage, output: str, run_config: dict, force: bool) -> bool:
    """Refuse to resume onto a run with a different config, unless `force`.

    Returns True when `output` holds a run with a different config that `force` will discard.
    """
    existing_uri = join(output, "config.json")
    if not storage.exists(existing_uri):
        return False
    changed = _differences(json.loads(storage.read_bytes(existing_uri)), run_config)
    if changed and not force:
        raise OutputError(output, "holds a run with a different config (" + ", ".join(changed[:5]) +
                          "); use another --output, or --force to discard it and start over")
    return bool(changed)


def claim_output(storage: Storage, output: str, run_config: dict, force: bool) -> None:
    """Check `output` (see `check_output`), discard a different run if forced, record our config."""
    if check_output(storage, output, run_config, force):
        for name in (RUN_NAME, "best", "metrics", "model"):
            storage.delete(join(output, name), recursive=True)
    storage.write_bytes(join(output, "config.json"), (json.dumps(run_config, indent=2, sort_keys=True) + "\n").encode())


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            if where == "train." and key in RESUMABLE_CHANGES:
                continue
            out += _differences(old.get(key), new.get(key), f"{where}{key}.")
        return out
    return [] if old == new else [f"{where.rstrip('.')}: {old!r} -> {new!r}"]


def launch(job: TrainJob, workers: int, gpus_per_worker: float, max_failures: int, stream: TextIO = sys.stderr):
    """Run the TorchTrainer to completion, printing progress lines; returns Ray's Result."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    storage_path, filesystem = job.storage.ray_location(job.output)
    progress = Queue(maxsize=1000, actor_options={"num_cpus": 0})
    job = replace(job, progress=progress)
    trainer = TorchTrainer(
        train_loop, train_loop_config={"job": job},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0,
                                     resources_per_worker={"CPU": job.cpus_per_worker,
                                                           **({"GPU": gpus_per_worker} if gpus_per_worker else {})}),
        run_config=RunConfig(name=RUN_NAME, storage_path=storage_path, storage_filesystem=filesystem,
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=job.train.checkpoint.keep_last)),
    )
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=_fit_into, args=(trainer, outcome), daemon=True)
    thread.start()
    reporter = ProgressPrinter(stream)
    while thread.is_alive():
        _drain(progress, reporter, timeout=0.5)
    _drain(progress, reporter, timeout=0)
    ray.kill(progress.actor)
    if "error" in outcome:
        raise ray_runtime.unwrap(outcome["error"]) from None
    return outcome["result"]


def _fit_into(trainer, outcome: dict) -> None:
    try:
        outcome["result"] = trainer.fit()
    except BaseException as err:  # noqa: BLE001 - re-raised in the driver thread
        outcome["error"] = err


def _drain(queue: Queue, reporter: "ProgressPrinter", timeout: float) -> None:
    try:
        while True:
            reporter.show(queue.get(block=timeout > 0, timeout=timeout or None))
            timeout = 0
    except Empty:
        pass


class ProgressPrinter:
    """One line per logged step: step/total, loss, tokens/s, padding, lr, ETA.

    The ETA is measured from the first record received, so Ray start-up and data loading
    (or the steps a resumed run already did) do not distort the rate.
    """

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.clock = stream, clock
        self.first: tuple[float, int] | None = None  # (monotonic time, step) of the first record

    def show(self, record: dict) -> None:
        if record.get("event") == "resumed":
            self.stream.write(f"train: resumed from the checkpoint of step {record['step']} "
                              f"(epoch {record['epoch']}, micro-batch {record['position']})\n")
            self.first = None  # the rate restarts with the new workers
            return
        step, total, now = record["step"], record["max_steps"], self.clock()
        if self.first is None:
            self.first = (now, step)
        rate = (step - self.first[1]) / (now - self.first[0]) if now > self.first[0] else 0.0
        seconds = [(total - step) / rate] if rate > 0 else []
        if record.get("time_left_s") is not None:  # `max_minutes` may end the run first
            seconds.append(record["time_left_s"])
        eta = f"{min(seconds):,.0f}s" if seconds else "?"
        self.stream.write(f"train: step {step}/{total} | loss {record['loss']:.3f} | "
                          f"{record['tokens_per_s']:,.0f} tok/s | padding {record['padding']:.1%} | "
                          f"lr {record['lr']:.2e} | ETA {eta}\n")
        self.stream.flush()
