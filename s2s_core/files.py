"""File integrity and weights: what model packages, checkpoints and averaging all need.

A file index maps each file's path (relative to its directory) to its size and SHA-256. A
checkpoint keeps it in `files.json`, a model package in the `files` field of `metadata.json`;
both are written last, so a reader that finds the index finds every file it lists, and a
truncated or half-copied file is named instead of failing deep inside torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import safetensors.torch
import torch

from s2s_core.errors import CheckpointError

FileIndex = dict[str, dict]
"""{relative path: {"bytes": size, "sha256": hex digest}}."""


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def index_files(directory: Path, exclude: str) -> FileIndex:
    """Size and checksum of every file under `directory` except the one named `exclude` (the index itself)."""
    return {str(p.relative_to(directory)): {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != exclude}


def verify_files(directory: Path, index: FileIndex, what: str, index_name: str) -> None:
    """Check every file `index` lists under `directory`.

    Raises:
        CheckpointError: naming the first file that is missing, truncated or altered; `what` is
            'checkpoint' or 'model package', `index_name` the file that holds the index.
    """
    if not isinstance(index, dict) or not all(_is_entry(entry) for entry in index.values()):
        raise CheckpointError(str(directory / index_name), f"is not a file index of a {what} "
                                                           "({path: {bytes, sha256}}): the index itself is damaged")
    for rel, expected in index.items():
        path = directory / rel
        if not path.is_file():
            raise CheckpointError(str(path), f"missing from the {what}")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise CheckpointError(str(path), f"truncated or altered: {size} bytes, expected {expected['bytes']} "
                                             f"(per {index_name})")
        if sha256_of(path) != expected["sha256"]:
            raise CheckpointError(str(path), f"corrupted: its SHA-256 does not match {index_name}")


def _is_entry(entry: object) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("bytes"), int)
            and isinstance(entry.get("sha256"), str))


def read_json_file(path: Path, if_missing: str = "missing") -> dict:
    """A JSON object from a local file.

    Raises:
        CheckpointError: the file is missing (reason `if_missing`) or is not a JSON object.
    """
    if not path.is_file():
        raise CheckpointError(str(path), if_missing)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(str(path), "is not valid JSON") from None
    if not isinstance(data, dict):
        raise CheckpointError(str(path), f"must hold a JSON object, not {type(data).__name__}")
    return data


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights into `model`, strictly (every name and shape must match).

    Raises:
        CheckpointError: the file is missing, unreadable as safetensors, or does not fit the model.
    """
    try:
        missing, unexpected = safetensors.torch.load_model(model, str(path), strict=False)
    except FileNotFoundError:
        raise CheckpointError(str(path), "weights file not found") from None
    except Exception as err:  # safetensors raises its own error types for bad headers/sizes
        raise CheckpointError(str(path), f"cannot be read as safetensors weights ({short_reason(err)})") from None
    if missing or unexpected:
        raise CheckpointError(str(path), f"weights do not fit the model config (missing {sorted(missing)[:3]}, "
                                         f"unexpected {sorted(unexpected)[:3]})")


def short_reason(err: BaseException) -> str:
    """The first line of an exception's message (its type name if empty), at most 200 characters."""
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]
