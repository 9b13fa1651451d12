"""Driver side of `train`: resolve and check everything, then launch Ray Train and show progress.

Output layout (local directory or s3:// prefix):
    config.json          the resolved run config; a rerun with a different one is refused
    checkpoints/         Ray Train's run: checkpoint-NNNNNNN/ (last K) + its own state files
    best/                model package of the best validation score so far
    metrics/             train.{jsonl,csv}, valid.{jsonl,csv}, curves.png
    model/               the final model package (best if validated, else last)
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import replace
from typing import Any, Callable, TextIO

import ray
from ray.util.queue import Empty, Queue

from pipelines import ray_runtime
from pipelines.train.plan import RUN_NAME
from pipelines.train.worker import TrainJob, train_loop
from s2s_core.errors import S2SError


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
        raise reported(outcome["error"]) from None
    return outcome["result"]


def reported(error: BaseException) -> BaseException:
    """What to raise for a failed run: our own error from inside the workers; else the first
    worker's error itself, whose type and first line say what went wrong (Ray's own message is
    'Training failed due to worker errors:' and a traceback)."""
    found = ray_runtime.unwrap(error)
    failures = list(getattr(found, "worker_failures", {}).values())
    if isinstance(found, S2SError) or not failures or not isinstance(failures[0], BaseException):
        return found
    return failures[0]


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
