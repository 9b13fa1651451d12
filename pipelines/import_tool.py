"""`s2s import`: a Hugging Face checkpoint directory (local or s3://) -> one of our model packages.

The conversion itself is `s2s_core.importers` (no network, no `transformers`). Here: staging an
s3:// checkpoint locally, writing the package to a scratch directory first and moving (or
uploading, metadata.json last) it into place only when it is complete, so a failed import
leaves nothing half-written at `--output`.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from pipelines.outputs import check_apart
from pipelines.settings import Settings
from pipelines.storage import Storage, absolute, is_s3
from s2s_core.errors import OutputError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="convert a pretrained Hugging Face checkpoint (Marian/OPUS-MT, M2M-100/NLLB, "
                                      "BART/mBART) into a model package",
                       description="Reads a directory written by `save_pretrained` (config.json, model.safetensors "
                                   "or a sharded index, the tokenizer's files); no network. The package then works "
                                   "with translate, summarize, evaluate and train init_from=PKG.")
    p.add_argument("--from", dest="source", required=True, metavar="DIR", help="checkpoint directory (local or s3://)")
    p.add_argument("--output", required=True, metavar="PKG", help="where the package goes (local or s3://)")
    p.add_argument("--source-lang", metavar="CODE", help="source language code of a multilingual model "
                                                         "(NLLB eng_Latn, M2M-100 en, mBART en_XX)")
    p.add_argument("--target-lang", metavar="CODE", help="target language code (NLLB ita_Latn, M2M-100 it, "
                                                         "mBART it_IT; Marian multi-target: ita)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="accept weights only as pytorch_model.bin (loaded with torch.load(weights_only=True))")
    p.add_argument("--overwrite", action="store_true", help="replace a package already at --output")
    p.set_defaults(run=_run_import)


def _run_import(args: argparse.Namespace, settings: Settings) -> int:
    from s2s_core.importers import import_checkpoint

    storage = Storage(settings.s3)
    source, output = absolute(args.source), absolute(args.output)
    check_apart([source], output)
    if storage.exists(output) and not args.overwrite:
        raise OutputError(output, "is not empty: use another --output, or --overwrite to replace it")
    if args.allow_pickle:
        print("note: --allow-pickle: loading pytorch_model.bin with torch.load(weights_only=True)", flush=True)
    with _staged(storage, source) as local, tempfile.TemporaryDirectory(prefix="s2s-import-out-") as scratch:
        result = import_checkpoint(local, Path(scratch) / "package", source_language=args.source_lang,
                                   target_language=args.target_lang, allow_pickle=args.allow_pickle,
                                   source_uri=source)
        _publish(storage, result.directory, output)
    print(f"{output}: model package of the {result.family} checkpoint {source} "
          f"(d_model {result.config.d_model}, {result.config.encoder_layers}+{result.config.decoder_layers} layers, "
          f"vocabulary {result.config.tgt_vocab_size})")
    return 0


@contextlib.contextmanager
def _staged(storage: Storage, source: str) -> Iterator[Path]:
    """The checkpoint as a local directory while it is read (an s3:// one downloaded, then removed)."""
    if not is_s3(source):
        yield Path(source)
        return
    with tempfile.TemporaryDirectory(prefix="s2s-import-in-") as tmp:
        yield storage.download_tree(source, Path(tmp))


def _publish(storage: Storage, package: Path, output: str) -> None:
    """Put a complete package at `output`: uploaded with metadata.json last, or moved into place."""
    if is_s3(output):
        storage.delete(output, recursive=True)
        storage.upload_tree(package, output)
        return
    target = Path(output)
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(package), str(target))
