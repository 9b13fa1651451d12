"""Checkpoint directories: everything a run needs to continue exactly where it stopped.

Layout of one checkpoint (a local directory; the Ray adapter moves it to storage):
    model.safetensors   weights (safetensors: loading runs no code)
    optimizer.pt        optimiser + scheduler state, plain tensors and numbers; read back
                        with `torch.load(weights_only=True)`, never unrestricted unpickling
    rng.safetensors     torch RNG states of the writing worker
    trainer_state.json  step, global micro-batch position, epoch, tokens seen, best score...
    config.json         the resolved run config (training + model)
    tokenizer/          the SentencePiece model(s) the run trains with
    files.json          written last: size and SHA-256 of every file above, so a truncated
                        or half-copied checkpoint is named as such instead of failing in torch
"""

from __future__ import annotations

import json
import pickle
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from s2s_core.errors import CheckpointError
from s2s_core.files import FileIndex, index_files, load_weights, read_json_file, short_reason, verify_files

FILE_INDEX = "files.json"
STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState:
    """Counters that make a run resumable; JSON-serialisable."""

    step: int = 0
    """Optimiser steps done."""
    position: int = 0
    """Global micro-batches consumed (see `BatchStream`)."""
    epoch: int = 0
    """Epoch of the next micro-batch."""
    tokens_seen: int = 0
    """Non-padding source + target tokens trained on."""
    wall_seconds: float = 0.0
    """Training time so far, across restarts."""
    best_score: float | None = None
    """Best validation score so far (metric in `best_metric`)."""
    best_step: int | None = None
    best_scores: dict[str, float] = field(default_factory=dict)
    """All validation scores at the best step."""
    bad_validations: int = 0
    """Validations since the last improvement (early stopping)."""
    world_size: int = 1


def write_file_index(directory: Path, name: str = FILE_INDEX) -> FileIndex:
    """Record size and checksum of every file under `directory` in `name` (written last)."""
    index = index_files(directory, exclude=name)
    (directory / name).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return index


def verify_file_index(directory: Path, name: str = FILE_INDEX) -> None:
    """Raise CheckpointError naming the first missing, truncated or altered file."""
    if not (directory / name).is_file():
        raise CheckpointError(str(directory), f"incomplete checkpoint: {name} is missing (was it written to the end?)")
    verify_files(directory, read_json_file(directory / name), "checkpoint", name)


def save_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, state: TrainerState, run_config: dict, tokenizer_dir: Path) -> None:
    """Write a complete checkpoint into the (new or empty) local `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_model(model, str(directory / "model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, directory / "optimizer.pt")
    safetensors.torch.save_file(_rng_states(), str(directory / "rng.safetensors"))
    (directory / STATE_FILE).write_text(json.dumps(asdict(state), indent=2, sort_keys=True) + "\n")
    (directory / "config.json").write_text(json.dumps(run_config, indent=2, sort_keys=True) + "\n")
    shutil.copytree(tokenizer_dir, directory / "tokenizer", dirs_exist_ok=True)
    write_file_index(directory)


def read_run_config(directory: Path) -> dict:
    """The resolved run config a checkpoint was written with.

    Raises:
        CheckpointError: a damaged checkpoint, or a config.json that is not a JSON object.
    """
    verify_file_index(directory)
    return read_json_file(directory / "config.json")


def load_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> TrainerState:
    """Restore model, optimiser, scheduler and RNG from `directory`; returns the trainer state.

    The file index only proves the files are the ones listed: a checkpoint written or altered
    by something else passes it, so each file is still checked for what it must hold.

    Raises:
        CheckpointError: naming the file that is missing, truncated, corrupted or mismatched.
    """
    verify_file_index(directory)
    load_weights(model, directory / "model.safetensors")
    _load_optimizer(directory / "optimizer.pt", optimizer, scheduler)
    _load_rng(directory / "rng.safetensors")
    return _trainer_state(directory / STATE_FILE)


# What a damaged torch file or a state dict that does not fit the optimiser raises in torch.
_TORCH_ERRORS = (RuntimeError, ValueError, KeyError, IndexError, TypeError, AttributeError, EOFError, OSError)


def _load_optimizer(path: Path, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    try:
        extra = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:  # what weights-only loading raises for anything but plain data
        raise CheckpointError(str(path), f"is not a plain state dict ({_refusal(err)}): weights-only loading "
                                         "refuses it, so it was not written by `s2s train`") from None
    except _TORCH_ERRORS as err:
        raise CheckpointError(str(path), f"cannot be read ({_described(err)})") from None
    if not (isinstance(extra, dict) and {"optimizer", "scheduler"} <= extra.keys()):
        raise CheckpointError(str(path), "does not hold the optimizer and scheduler states of a checkpoint")
    try:
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
    except _TORCH_ERRORS as err:
        raise CheckpointError(str(path), f"does not fit this run's optimizer ({_described(err)})") from None


def _described(err: BaseException) -> str:
    """'KeyError: 'param_groups'' rather than a bare ''param_groups''."""
    reason = short_reason(err)
    return reason if reason == type(err).__name__ else f"{type(err).__name__}: {reason}"


def _refusal(err: BaseException) -> str:
    """The line of torch's weights-only refusal that says what it found (its other lines are advice)."""
    advice = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    found = [line for line in lines if not line.startswith(advice)]
    return (found[0] if found else "unsupported content")[:160]


def _load_rng(path: Path) -> None:
    try:
        rng = safetensors.torch.load_file(str(path))
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    except Exception as err:  # safetensors raises its own error types for bad headers and sizes
        raise CheckpointError(str(path), f"cannot be restored as RNG states ({short_reason(err)})") from None


def _trainer_state(path: Path) -> TrainerState:
    data = read_json_file(path)
    try:
        return TrainerState(**data)
    except TypeError as err:  # an unknown or missing field
        raise CheckpointError(str(path), f"is not a trainer state ({short_reason(err)})") from None


def _rng_states() -> dict[str, torch.Tensor]:
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    return states
