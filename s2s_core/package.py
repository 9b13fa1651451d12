"""Model packages: the one unit later stages load (evaluate, translate, export).

A package is a directory:
    config.json        the model config (family and every field)
    model.safetensors  the weights
    tokenizer/         SentencePiece model(s) + settings.json
    metadata.json      dataset fingerprint, steps, tokens seen, best validation scores,
                       training wall time, and (written last) the size and SHA-256 of every
                       other file, so a half-copied package is refused by name
Loading runs no pickled code.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from s2s_core.config import to_dict
from s2s_core.errors import CheckpointError, ConfigError
from s2s_core.files import index_files, load_weights, read_json_file, verify_files
from s2s_core.tokenizer import Tokenizer

METADATA = "metadata.json"
NOT_A_PACKAGE = "missing: not a model package (or an incomplete copy)"


@dataclass
class ModelPackage:
    """A loaded package: the model (eval mode, CPU), its tokenizers and metadata."""

    model: torch.nn.Module
    config: Any
    source_tokenizer: Tokenizer
    target_tokenizer: Tokenizer
    metadata: dict
    directory: Path | None = None
    """Where it was loaded from (exports made by `s2s export` live inside it)."""


def save_package(directory: Path, model: torch.nn.Module, model_config: Any, tokenizer_dir: Path,
                 metadata: dict) -> None:
    """Write a package into the local `directory` (created; existing files replaced)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(to_dict(model_config), indent=2, sort_keys=True) + "\n")
    safetensors.torch.save_model(model, str(directory / "model.safetensors"))
    shutil.copytree(tokenizer_dir, directory / "tokenizer", dirs_exist_ok=True)
    files = index_files(directory, exclude=METADATA)
    (directory / METADATA).write_text(json.dumps({**metadata, "files": files}, indent=2, sort_keys=True) + "\n")


def load_package(directory: Path, device: str | torch.device = "cpu") -> ModelPackage:
    """Load and check a package written by `save_package`.

    Raises:
        CheckpointError: a missing, truncated or altered file, or a tokenizer whose vocabulary
            does not match the model config.
    """
    from s2s_core.models import build_model, config_from_dict

    metadata = read_json_file(directory / METADATA, NOT_A_PACKAGE)
    verify_package_files(directory, metadata.get("files", {}))
    try:
        config = config_from_dict(read_json_file(directory / "config.json", NOT_A_PACKAGE))
    except ConfigError as err:
        raise CheckpointError(str(directory / "config.json"), f"invalid model config ({'; '.join(err.problems)})") from None
    source = Tokenizer.from_dir(directory / "tokenizer", "source")
    target = Tokenizer.from_dir(directory / "tokenizer", "target")
    check_vocabulary(config, source.vocab_size, target.vocab_size, str(directory / "tokenizer"))
    model = build_model(config)
    load_weights(model, directory / "model.safetensors")
    return ModelPackage(model.to(device).eval(), config, source, target, metadata, directory)


def check_vocabulary(config: Any, source_size: int, target_size: int, where: str) -> None:
    """Raise CheckpointError if the model's vocabulary sizes differ from the tokenizer's."""
    if (config.src_vocab_size, config.tgt_vocab_size) != (source_size, target_size):
        raise CheckpointError(where, f"tokenizer vocabulary ({source_size} source, {target_size} target) does not "
                                     f"match the model config ({config.src_vocab_size}, {config.tgt_vocab_size})")


def verify_package_files(directory: Path, files: dict[str, dict]) -> None:
    """Raise CheckpointError naming the first listed file that is missing, truncated or altered."""
    verify_files(directory, files, "model package", METADATA)
