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
from s2s_core.errors import CheckpointError, ConfigError, InputError
from s2s_core.files import index_files, load_weights, read_json_file, short_reason, verify_files
from s2s_core.tokenizer import SETTINGS_FILE, Tokenizer

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


def load_package(directory: Path, device: str | torch.device = "cpu", max_bytes: int | None = None) -> ModelPackage:
    """Load and check a package written by `save_package`; a model whose estimated weights
    exceed `max_bytes` (None: `DEFAULT_MAX_MODEL_GB`) is refused before anything is allocated.

    Raises:
        CheckpointError: a missing, truncated or altered file, a model config that is invalid or
            too large, or a tokenizer that is missing, unreadable or does not match the config.
    """
    from s2s_core.models import build_model

    metadata = read_json_file(directory / METADATA, NOT_A_PACKAGE)
    verify_package_files(directory, metadata.get("files", {}))
    config = read_model_config(directory, max_bytes)
    source, target = load_tokenizers(directory)
    check_vocabulary(config, source.vocab_size, target.vocab_size, str(directory / "tokenizer"))
    model = build_model(config)
    load_weights(model, directory / "model.safetensors")
    return ModelPackage(model.to(device).eval(), config, source, target, metadata, directory)


def read_model_config(directory: Path, max_bytes: int | None = None) -> Any:
    """The package's model config, checked, and refused when its estimated weights exceed
    `max_bytes` (None: `DEFAULT_MAX_MODEL_GB`): a damaged `d_model` must not allocate terabytes.

    Raises:
        CheckpointError: naming config.json: missing, not JSON, invalid or too large.
    """
    path = directory / "config.json"
    return check_model_config(read_json_file(path, NOT_A_PACKAGE), str(path), max_bytes)


def check_model_config(data: Any, where: str, max_bytes: int | None = None, hint: str = "") -> Any:
    """The model config of a package's config.json (`data`, read from `where`), refused when
    invalid or when its estimated weights exceed `max_bytes` (None: `DEFAULT_MAX_MODEL_GB`);
    `hint`, e.g. how the caller sets the limit, ends a size refusal.

    Raises:
        CheckpointError: naming `where`, with the problems or the size estimate.
    """
    from s2s_core.models import config_from_dict
    from s2s_core.models.size import DEFAULT_MAX_MODEL_GB, GB, size_problem

    try:
        config = config_from_dict(data)
    except ConfigError as err:
        raise CheckpointError(where, f"invalid model config ({'; '.join(err.problems)})") from None
    too_large = size_problem(config, int(DEFAULT_MAX_MODEL_GB * GB) if max_bytes is None else max_bytes)
    if too_large:
        raise CheckpointError(where, too_large + hint)
    return config


def load_tokenizers(directory: Path) -> tuple[Tokenizer, Tokenizer]:
    """The package's (source, target) tokenizers from its `tokenizer/` directory.

    Raises:
        CheckpointError: naming the tokenizer file that is missing or cannot be read.
    """
    where = directory / "tokenizer"
    # Metadata that does not list tokenizer/ passes the file check: name what is missing or not JSON.
    read_json_file(where / SETTINGS_FILE, "missing: the model package has no tokenizer (an incomplete copy?)")
    try:
        return Tokenizer.from_dir(where, "source"), Tokenizer.from_dir(where, "target")
    except InputError as err:  # a model file that settings.json names is missing
        raise CheckpointError(err.uri, f"{err.reason} (the model package's tokenizer)") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as err:
        # tokenizer.py does not name the file for these: settings.json without a side, or a
        # model file SentencePiece cannot parse (its message names the file).
        raise CheckpointError(str(where), f"cannot be read as a tokenizer ({type(err).__name__}: "
                                          f"{short_reason(err)})") from None


def check_vocabulary(config: Any, source_size: int, target_size: int, where: str) -> None:
    """Raise CheckpointError if the model's vocabulary sizes differ from the tokenizer's."""
    if (config.src_vocab_size, config.tgt_vocab_size) != (source_size, target_size):
        raise CheckpointError(where, f"tokenizer vocabulary ({source_size} source, {target_size} target) does not "
                                     f"match the model config ({config.src_vocab_size}, {config.tgt_vocab_size})")


def verify_package_files(directory: Path, files: dict[str, dict]) -> None:
    """Raise CheckpointError naming the first listed file that is missing, truncated or altered."""
    verify_files(directory, files, "model package", METADATA)
