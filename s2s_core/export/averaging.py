"""Checkpoint averaging: the element-wise mean of the weights of several checkpoints (or model
packages) of one model, written as a new model package.

Averaging the last few checkpoints of a run smooths out the noise of the final updates and
usually scores a little better than any one of them (Vaswani et al. averaged the last 5-20).
Every source must have the same model config and tokenizer; sums are taken in float64.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch

from s2s_core.errors import CheckpointError, ConfigError
from s2s_core.files import read_json_file, sha256_of, short_reason
from s2s_core.models import build_model, config_from_dict
from s2s_core.package import METADATA, save_package, verify_package_files
from s2s_core.training.checkpoint import FILE_INDEX, STATE_FILE, verify_file_index

WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class WeightsSource:
    """One checkpoint or package, checked and described."""

    directory: Path
    name: str
    """How the user named it (a URI), for metadata and errors."""
    model_config: dict
    step: int | None
    dataset_id: str | None
    tokenizer_sha256: str


def read_source(directory: Path, name: str) -> WeightsSource:
    """Check a training checkpoint (files.json) or a model package (metadata.json) and describe it.

    Raises:
        CheckpointError: neither, or a missing, truncated or altered file.
    """
    if (directory / FILE_INDEX).is_file():
        verify_file_index(directory)
        run_config = read_json_file(directory / "config.json")
        state = read_json_file(directory / STATE_FILE)
        model, step, dataset = run_config["model"], state.get("step"), run_config.get("dataset_id")
    elif (directory / METADATA).is_file():
        metadata = read_json_file(directory / METADATA)
        verify_package_files(directory, metadata.get("files", {}))
        model = read_json_file(directory / "config.json")
        step, dataset = metadata.get("step"), metadata.get("dataset_id")
    else:
        raise CheckpointError(name, "is neither a training checkpoint (files.json) nor a model package (metadata.json)")
    tokenizer = "".join(sha256_of(p) for p in sorted((directory / "tokenizer").glob("*.model")))
    return WeightsSource(directory, name, model, step, dataset, tokenizer)


def average_weights(sources: list[WeightsSource]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the sources' weights, each tensor in its own dtype.

    Raises:
        CheckpointError: a source whose tensor names or shapes differ from the first one's.
    """
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for source in sources:
        weights = _read_weights(source)
        if total and (weights.keys() != total.keys()
                      or any(weights[k].shape != total[k].shape for k in weights)):
            raise CheckpointError(source.name, f"its weights have other names or shapes than {sources[0].name}'s")
        for key, tensor in weights.items():
            dtypes.setdefault(key, tensor.dtype)
            total[key] = total[key] + tensor.double() if key in total else tensor.double()
    return {key: (tensor / len(sources)).to(dtypes[key]) for key, tensor in total.items()}


def _read_weights(source: WeightsSource) -> dict[str, torch.Tensor]:
    path = source.directory / WEIGHTS
    try:
        return safetensors.torch.load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for bad headers/sizes
        raise CheckpointError(f"{source.name}/{WEIGHTS}", f"cannot be read as safetensors weights "
                                                          f"({short_reason(err)})") from None


def average_checkpoints(sources: list[WeightsSource], output: Path) -> dict:
    """Average `sources` into a new model package at the local `output`; returns its metadata.

    Raises:
        ConfigError: fewer than two sources, or sources of different models or tokenizers.
    """
    if len(sources) < 2:
        raise ConfigError([f"averaging needs at least 2 checkpoints, but got {len(sources)}"])
    first = sources[0]
    for source in sources[1:]:
        if source.model_config != first.model_config:
            raise ConfigError([f"{source.name} has another model config than {first.name}: only checkpoints of "
                               "one model can be averaged"])
        if source.tokenizer_sha256 != first.tokenizer_sha256:
            raise ConfigError([f"{source.name} has another tokenizer than {first.name}"])
    config = config_from_dict(first.model_config)
    model = build_model(config)
    model.load_state_dict(average_weights(sources), strict=True)
    steps = [s.step for s in sources]
    metadata = {"averaged_from": [s.name for s in sources], "averaged_steps": steps,
                "step": max((s for s in steps if s is not None), default=None),
                "dataset_id": first.dataset_id, "preset": None, "note": f"average of {len(sources)} checkpoints"}
    save_package(output, model, config, first.directory / "tokenizer", metadata)
    return json.loads((output / METADATA).read_text())
