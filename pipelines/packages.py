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
from typing import TYPE_CHECKING, Iterator

from pipelines.storage import NotFound, Storage, is_s3, join
from s2s_core.errors import CheckpointError

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


def open_text_layer(storage: Storage, model: str, task: str, config: GenerationConfig, device: str = "cpu",
                    threads: int | None = None) -> TextGenerator:
    """Load the package `model` and return the task's text layer on `device`.

    Everything the text layer needs (weights, tokenizers, a CTranslate2 export) is in memory
    once it is built, so the staged copy is gone when this returns.

    Raises:
        CheckpointError: not a package, or a damaged one (naming the file).
    """
    from s2s_core.generation import TEXT_LAYERS
    from s2s_core.package import load_package

    package_id(storage, model)  # one clear line for a URI that is not a package
    with staged_package(storage, model) as local:
        return TEXT_LAYERS[task](load_package(local, device), config, threads=threads)
