"""`init_from=PKG`: fine-tuning an imported model, or continuing to train one of ours.

The run's model is the package's (its config.json: an imported model's position kind, logits
bias, embedding norm, decoder start token... all kept), so the fine-tuned package is of the same
kind and every later stage runs it. The dataset must have been prepared with the package's
tokenizer (`s2s prepare ... tokenizer.from=PKG`), else the weights would be read with other
token ids. Both are checked here, before Ray starts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pipelines.packages import check_model_config, package_metadata
from pipelines.storage import NotFound, Storage, join
from s2s_core.errors import ConfigError, InputError
from s2s_core.models.config import ModelConfig

FINE_TUNING_OPTIONS = ("dropout", "attention_dropout")
"""Model fields a run may change in the package's config: regularisation, not the architecture."""
SETTINGS = "tokenizer/settings.json"


def package_model(storage: Storage, init_from: str, overrides: dict[str, Any], max_bytes: int | None) -> ModelConfig:
    """The model config of the package `init_from`, with `overrides` (the run's `model.*`, only
    `FINE_TUNING_OPTIONS`) applied; the run's `preset` does not apply.

    Raises:
        CheckpointError: not a package, or its config.json is missing, invalid or too large.
        ConfigError: an override of an architecture field (or of a field the model does not have).
    """
    config = check_model_config(storage, init_from, max_bytes)
    fields = {f.name for f in dataclasses.fields(config)}
    refused = [f"`model.{key}` cannot be set with `init_from` (the model is the package's; only "
               f"{', '.join(f'model.{name}' for name in FINE_TUNING_OPTIONS if name in fields)} may change)"
               for key in sorted(overrides) if key not in FINE_TUNING_OPTIONS or key not in fields]
    if refused:
        raise ConfigError(refused)
    changed = dataclasses.replace(config, **overrides)
    problems = changed.problems()
    if problems:
        raise ConfigError([p.replace("`", "`model.", 1) for p in problems])
    return changed


def check_init_from(storage: Storage, init_from: str, manifest: dict) -> None:
    """The dataset's tokenizer must be the package's: the same files, byte for byte (an imported
    tokenizer's settings.json too: it orders the ids and holds the rows' templates).

    Raises:
        CheckpointError: not a package; ConfigError: the tokenizers differ (naming the fix).
    """
    package_files = {path: entry.get("sha256") for path, entry in package_metadata(storage, init_from).get("files", {}).items()
                     if path.startswith("tokenizer/")}
    dataset_files = {f["path"]: f["sha256"] for f in (manifest.get("tokenizer") or {}).get("files", [])}
    differ = different_tokenizer_files(dataset_files, package_files, _imported(storage, init_from))
    if differ:
        raise ConfigError([f"`init_from` {init_from} has another tokenizer than the dataset ({differ[0]}): "
                           f"prepare the dataset with tokenizer.from={init_from}"])


def different_tokenizer_files(dataset: dict[str, str], package: dict[str, str], imported: bool) -> list[str]:
    """Tokenizer files ({path: sha256}) that differ between dataset and package, or that one of
    them lacks. Our own settings.json is left out (it records how the tokenizer was trained,
    which changes no id); an imported one is not."""
    paths = sorted(set(dataset) | set(package))
    return [path for path in paths if (imported or path != SETTINGS) and dataset.get(path) != package.get(path)]


def _imported(storage: Storage, init_from: str) -> bool:
    """Whether the package's tokenizer is an imported one (settings.json names a `format`)."""
    try:
        settings = storage.read_json(join(init_from, SETTINGS))
    except (NotFound, InputError):
        return False  # no readable settings: the file comparison names what differs
    return isinstance(settings, dict) and settings.get("format", "sentencepiece") != "sentencepiece"
