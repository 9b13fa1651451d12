"""The Ray Train worker function: a thin adapter around `s2s_core.training`.

Every worker plans the same global batch stream and takes its stride of it; rank 0 validates,
writes checkpoints (reported to Ray Train, which stores them under OUTPUT/checkpoints and keeps
the last K), the best model package (OUTPUT/best), metrics (OUTPUT/metrics) and, at the end,
the final package (OUTPUT/model). Progress records go to the driver through a Ray queue.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch

from pipelines.datasets import download_tokenizer
from pipelines.packages import staged_package
from pipelines.storage import Storage, join
from pipelines.token_ids import StorageShards
from pipelines.train import data as train_data
from pipelines.train.plan import RUN_NAME
from s2s_core.errors import CheckpointError
from s2s_core.files import load_weights
from s2s_core.package import save_package
from s2s_core.tokenizer import Tokenizer
from s2s_core.training.batching import RowLayout, TokenizedPairs
from s2s_core.training.config import TrainConfig
from s2s_core.training.setup import build_trainer, row_layout, sharded_stream
from s2s_core.training.streaming import ShardedStream
from s2s_core.training.trainer import Callbacks, Trainer, fit


@dataclass
class TrainJob:
    """Everything a worker needs, resolved and checked by the driver."""

    storage: Storage
    data: str
    manifest: dict
    output: str
    train: TrainConfig
    model: Any
    run_config: dict
    cpus_per_worker: float
    progress: Any = None  # ray.util.queue.Queue, or None


def train_loop(loop_config: dict) -> None:
    """Entry point of each Ray Train worker."""
    job: TrainJob = loop_config["job"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(job.cpus_per_worker)))
    device = ray.train.torch.get_device()
    workdir = Path(tempfile.mkdtemp(prefix=f"s2s-train-{rank}-"))
    try:
        tokenizer_dir = download_tokenizer(job.storage, job.data, job.manifest, workdir / "tokenizer")
        src_tok, tgt_tok = Tokenizer.from_dir(tokenizer_dir, "source"), Tokenizer.from_dir(tokenizer_dir, "target")
        # The rows the model sees: the tokenizer's templates and the model's decoder start token
        # (an imported model's own: what its tokenizer and `generate` make).
        layout = row_layout(src_tok, tgt_tok, job.model)
        trainer = _build_trainer(job, src_tok, tgt_tok, layout, device, rank, world)
        init_from = job.train.init_from
        inherited = _start_from_package(trainer, job.storage, init_from) if init_from else {}
        if _maybe_resume(trainer, job.output) and rank == 0 and job.progress is not None:
            job.progress.put({"event": "resumed", "step": trainer.state.step, "epoch": trainer.state.epoch,
                              "position": trainer.state.position})
        valid = None
        if job.train.validation.every_steps:
            # Every rank loads it (small) so all agree on whether to validate; rank 0 scores.
            valid = train_data.load_valid(job.storage, job.data, job.manifest, src_tok, tgt_tok,
                                          max(job.train.validation.loss_sentences, job.train.validation.decode_sentences),
                                          layout)
        callbacks = RankCallbacks(job, tokenizer_dir, workdir, rank, inherited)
        fit(trainer, valid, tgt_tok, callbacks.as_callbacks())
        if rank == 0:
            callbacks.publish_final(trainer)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _build_trainer(job: TrainJob, src_tok: Tokenizer, tgt_tok: Tokenizer, layout: RowLayout, device: torch.device,
                   rank: int, world: int) -> Trainer:
    if job.train.batching.loader == "stream":  # token-id shards, a window at a time
        data: TokenizedPairs | ShardedStream = sharded_stream(
            StorageShards(job.storage, job.data, job.manifest, "train"), job.train, layout)
    else:  # the whole train split, read and tokenized in this worker
        data = train_data.load_train(job.storage, job.data, job.manifest, src_tok, tgt_tok)
    wrap = (lambda module: ray.train.torch.prepare_model(module, parallel_strategy="ddp")) if world > 1 else None
    return build_trainer(data, job.train, job.model, device, rank, world, wrap, layout)


INHERITED_METADATA = ("origin", "decoding")
"""What a package trained from `init_from` keeps of its metadata: an imported model's origin
(family, source checkpoint) and its own decoding settings."""


def _start_from_package(trainer: Trainer, storage: Storage, init_from: str) -> dict:
    """Fine-tuning / continued training: load the package's weights (a checkpoint of this run, if
    any, wins afterwards); returns what our packages' metadata keeps of the package's."""
    with staged_package(storage, init_from) as package:
        load_weights(trainer.module, package / "model.safetensors")
        metadata = json.loads((package / "metadata.json").read_text())
    return {"init_from": init_from, **{key: metadata[key] for key in INHERITED_METADATA if key in metadata}}


def _maybe_resume(trainer: Trainer, job_output: str) -> bool:
    """Continue from Ray Train's latest checkpoint: after a worker failure (same run), or when a
    killed run is started again with the same output (Ray restores the run's checkpoint list).
    Returns whether there was one."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return False
    stored_at = join(job_output, RUN_NAME, Path(checkpoint.path).name)
    with checkpoint.as_directory() as directory:
        try:
            trainer.resume_from(Path(directory))
        except CheckpointError as err:  # name the stored file, not the worker's temporary copy
            local = Path(err.uri)
            where = join(stored_at, str(local.relative_to(directory))) if local.is_relative_to(directory) else stored_at
            raise CheckpointError(where, err.reason) from None
    return True


class RankCallbacks:
    """Milestone I/O: every rank reports to Ray Train; rank 0 alone writes files."""

    def __init__(self, job: TrainJob, tokenizer_dir: Path, workdir: Path, rank: int, inherited: dict) -> None:
        self.job, self.tokenizer_dir, self.workdir, self.rank = job, tokenizer_dir, workdir, rank
        self.inherited = inherited
        """Metadata kept from the `init_from` package (see `INHERITED_METADATA`)."""

    def as_callbacks(self) -> Callbacks:
        return Callbacks(on_log=self.on_log, on_best=self.on_best, on_checkpoint=self.on_checkpoint)

    def on_log(self, trainer: Trainer, record: dict) -> None:
        if self.rank == 0 and self.job.progress is not None:
            budget_s = trainer.config.max_minutes * 60
            time_left = max(budget_s - trainer.state.wall_seconds, 0.0) if budget_s else None
            self.job.progress.put({**record, "max_steps": trainer.config.max_steps, "time_left_s": time_left})

    def on_best(self, trainer: Trainer) -> None:
        if self.rank == 0:
            self._publish_package(trainer, "best")

    def on_checkpoint(self, trainer: Trainer, final: bool) -> None:
        metrics = {"step": trainer.state.step, "final": final}
        if self.rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        directory = self.workdir / f"checkpoint-{trainer.state.step:07d}"
        trainer.save(directory, self.job.run_config, self.tokenizer_dir)
        self.job.storage.upload_tree(directory / "metrics", join(self.job.output, "metrics"))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(directory)),
                         checkpoint_dir_name=directory.name)
        shutil.rmtree(directory, ignore_errors=True)

    def publish_final(self, trainer: Trainer) -> None:
        """OUTPUT/model: the best validated weights if validation ran, else the last ones."""
        storage, output = self.job.storage, self.job.output
        best = join(output, "best")
        if trainer.state.best_step is None or not storage.exists(join(best, "metadata.json")):
            self._publish_package(trainer, "model")
            return
        local = storage.download_tree(best, self.workdir / "final")
        storage.upload_tree(local, join(output, "model"))

    def _publish_package(self, trainer: Trainer, name: str) -> None:
        local = self.workdir / name
        shutil.rmtree(local, ignore_errors=True)
        save_package(local, trainer.module, self.job.model, self.tokenizer_dir, self._metadata(trainer))
        self.job.storage.upload_tree(local, join(self.job.output, name))

    def _metadata(self, trainer: Trainer) -> dict:
        state = trainer.state
        return {**self.inherited, "dataset_id": self.job.manifest.get("dataset_id"), "data": self.job.data, "step": state.step,
                "epoch": state.epoch, "tokens_seen": state.tokens_seen, "training_seconds": round(state.wall_seconds, 3),
                "best_step": state.best_step, "validation": state.best_scores, "workers": state.world_size,
                "preset": trainer.config.preset}
