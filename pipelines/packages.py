"""Model packages on storage: what every stage that reads a package shares.

A package (see `s2s_core.package`) is a directory, local or under an s3:// prefix. Stages name
it by URI; this module gives its id, stages a local copy for as long as it is needed (an s3://
package is downloaded to a temporary directory that is removed afterwards), and builds the
text layer (`Translator` or `Summarizer`) that generation stages run.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from pipelines import settings
from pipelines.storage import NotFound, Storage, is_s3, join
from s2s_core.errors import CheckpointError, InputError

if TYPE_CHECKING:  # torch comes with them: the CLI's fail-fast checks do without
    from s2s_core.generation import GenerationConfig, TextGenerator

METADATA = "metadata.json"
STAGING_PREFIX = "s2s-package-"
"""Name prefix of the temporary directories that hold downloaded packages (a test counts them)."""


def package_id(storage: Storage, model: str) -> str:
    """A model package's id: the hash of its metadata, which lists every file's SHA-256.

    Raises:
        CheckpointError: if `model` is not a model package.
    """
    return hashlib.sha256(_metadata_bytes(storage, model)).hexdigest()[:16]


def package_metadata(storage: Storage, model: str) -> dict:
    """The package's metadata.json (training facts and the file index).

    Raises:
        CheckpointError: if `model` is not a model package.
    """
    try:
        return storage.read_json(join(model, METADATA))
    except NotFound:
        raise _not_a_package(model) from None


def _metadata_bytes(storage: Storage, model: str) -> bytes:
    try:
        return storage.read_bytes(join(model, METADATA))
    except NotFound:
        raise _not_a_package(model) from None


def _not_a_package(model: str) -> CheckpointError:
    return CheckpointError(model, f"is not a model package (no {METADATA})")


@contextlib.contextmanager
def staged_package(storage: Storage, model: str) -> Iterator[Path]:
    """The package as a local directory for the duration of the block: a local package itself,
    or a downloaded copy of an s3:// package that is deleted when the block ends."""
    if not is_s3(model):
        yield Path(model)
        return
    directory = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX))
    try:
        yield storage.download_tree(model, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def check_model_config(storage: Storage, model: str, max_bytes: int | None) -> Any:
    """The model config of the package `model` (its config.json), read without downloading the
    package. Refuses a config.json that is not a valid model config, or describes a model whose
    weights would exceed `max_bytes` (None: s2s_core's default), before it is downloaded or built.

    Raises:
        CheckpointError: not a package, or naming config.json and what is wrong with it.
    """
    from s2s_core.package import check_model_config as check

    package_id(storage, model)  # one clear line for a URI that is not a package
    uri = join(model, "config.json")
    try:
        data = storage.read_json(uri)
    except NotFound:
        raise CheckpointError(uri, "missing from the model package") from None
    except InputError as err:  # not JSON: a damaged package, whose exit code and words are a checkpoint's
        raise CheckpointError(err.uri, err.reason) from None
    return check(data, uri, max_bytes, LIMIT_HINT)


LIMIT_HINT = " (S2S_MAX_MODEL_GB sets the limit)"
"""Ends a refusal of a package too large to load: the setting that moves the limit."""


def open_text_layer(storage: Storage, model: str, task: str, config: GenerationConfig, device: str = "cpu",
                    threads: int | None = None, max_model_bytes: int | None = None) -> TextGenerator:
    """Load the package `model` and return the task's text layer on `device`; a model larger
    than `max_model_bytes` (None: this process's settings, S2S_MAX_MODEL_GB) is refused first.

    Everything the text layer needs (weights, tokenizers, a CTranslate2 export) is in memory
    once it is built, so the staged copy is gone when this returns.

    Raises:
        CheckpointError: not a package, or a damaged one (naming the file).
        ConfigError: S2S_MAX_MODEL_GB is not a number.
    """
    from s2s_core.generation import TEXT_LAYERS
    from s2s_core.package import load_package

    if max_model_bytes is None:
        max_model_bytes = settings.max_model_bytes(settings.load_settings())
    check_model_config(storage, model, max_model_bytes)
    with staged_package(storage, model) as local:
        return TEXT_LAYERS[task](load_package(local, device, max_model_bytes), config, threads=threads)
