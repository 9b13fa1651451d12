"""Reading a Hugging Face checkpoint directory (the `save_pretrained` layout): its JSON configs,
its weights (one safetensors file, safetensors shards with an index, or, only when allowed,
a pickled `pytorch_model.bin`) and a fingerprint of every file.

Local directories only; nothing here runs code from the checkpoint unless `allow_pickle` says so,
and then through `torch.load(weights_only=True)`, which refuses anything but tensors.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from s2s_core.errors import CheckpointError

SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
PICKLE, PICKLE_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"


@dataclass
class Checkpoint:
    """What an importer needs from a checkpoint directory."""

    directory: Path
    config: dict[str, Any]
    """config.json."""
    generation: dict[str, Any]
    """Decoding settings: config.json's, overlaid with generation_config.json's."""
    weights: dict[str, torch.Tensor]
    """Tensor name -> tensor, with the `model.` prefix of *ForConditionalGeneration removed."""
    files: dict[str, dict[str, Any]]
    """Relative path -> {"size", "sha256"} of every file in the directory."""

    def has(self, name: str) -> bool:
        return (self.directory / name).is_file()


GENERATION_KEYS = ("decoder_start_token_id", "forced_bos_token_id", "forced_eos_token_id", "num_beams",
                   "max_length", "length_penalty", "early_stopping", "no_repeat_ngram_size", "bad_words_ids")


def read_checkpoint(directory: Path, allow_pickle: bool = False) -> Checkpoint:
    """Read config, decoding settings, weights and file fingerprints of `directory`.

    Raises:
        CheckpointError: no such directory, no or unreadable config.json, no weights, only pickled
            weights without `allow_pickle`, a missing shard.
    """
    if not directory.is_dir():
        raise CheckpointError(str(directory), "not a directory (expected a Hugging Face save_pretrained checkpoint)")
    config = read_json(directory / "config.json")
    generation = {key: config[key] for key in GENERATION_KEYS if key in config}
    if (directory / "generation_config.json").is_file():
        generation.update(read_json(directory / "generation_config.json"))
    weights = {_strip_prefix(name): tensor for name, tensor in load_weights(directory, allow_pickle).items()}
    return Checkpoint(directory, config, generation, weights, fingerprint(directory))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`.

    Raises:
        CheckpointError: missing, not JSON, or not an object.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(str(path), "missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(str(path), f"not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(str(path), f"must hold a JSON object, not {type(data).__name__}")
    return data


def load_weights(directory: Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint, by name as stored.

    Raises:
        CheckpointError: see `read_checkpoint`.
    """
    if (directory / SAFETENSORS).is_file():
        return _load_safetensors(directory / SAFETENSORS)
    if (directory / SAFETENSORS_INDEX).is_file():
        return _load_shards(directory, SAFETENSORS_INDEX, _load_safetensors)
    if (directory / PICKLE).is_file() or (directory / PICKLE_INDEX).is_file():
        if not allow_pickle:
            raise CheckpointError(str(directory), f"has only pickled weights ({PICKLE}), refused by default: convert "
                                                  f"them to safetensors, or allow pickle (loaded with "
                                                  f"torch.load(weights_only=True))")
        if (directory / PICKLE).is_file():
            return _load_pickle(directory / PICKLE)
        return _load_shards(directory, PICKLE_INDEX, _load_pickle)
    raise CheckpointError(str(directory), f"has no weights ({SAFETENSORS}, {SAFETENSORS_INDEX} or {PICKLE})")


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    import safetensors.torch

    try:
        return safetensors.torch.load_file(str(path))
    except Exception as err:  # safetensors raises its own SafetensorError and OSError for damaged files
        raise CheckpointError(str(path), f"unreadable safetensors file ({err})") from None


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only refusals are UnpicklingError; damaged files raise others
        raise CheckpointError(str(path), f"cannot be loaded with torch.load(weights_only=True) ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(str(path), "does not hold a state dict")
    return data


def _load_shards(directory: Path, index_name: str, load) -> dict[str, torch.Tensor]:
    """The union of the shards an index names (its `weight_map`: tensor name -> shard file)."""
    index = read_json(directory / index_name)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(str(directory / index_name), "has no `weight_map`")
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        if not (directory / shard).is_file():
            raise CheckpointError(str(directory / shard), f"missing (a shard named by {index_name})")
        out.update(load(directory / shard))
    missing = sorted(set(weight_map) - set(out))
    if missing:
        raise CheckpointError(str(directory / index_name), f"names tensors no shard holds: {', '.join(missing[:3])}")
    return out


def _strip_prefix(name: str) -> str:
    """`model.encoder...` (a *ForConditionalGeneration) -> `encoder...` (the bare model's names)."""
    return name[len("model."):] if name.startswith("model.") else name


def fingerprint(directory: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {"size", "sha256"}} of every file under `directory` (hidden ones aside), in path order."""
    out = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if any(part.startswith(".") for part in path.relative_to(directory).parts):
            continue  # download caches and VCS data (.cache/, .git/) are not the checkpoint
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        out[path.relative_to(directory).as_posix()] = {"size": path.stat().st_size, "sha256": digest.hexdigest()}
    return out
