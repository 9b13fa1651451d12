"""`s2s export` and `s2s average`: tools on model packages, local or s3://.

Both work on local copies (an s3:// package or checkpoint is downloaded first) and upload the
result when the output is s3://, a package's metadata.json last.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.outputs import check_apart, check_not_a_file
from pipelines.packages import LIMIT_HINT, check_model_config, staged_package
from pipelines.settings import Settings, max_model_bytes
from pipelines.storage import NotFound, Storage, absolute, basename, is_s3, join
from s2s_core.errors import CheckpointError, ConfigError
from s2s_core.export.ct2 import EXPORT_DIR, QUANTIZATIONS

if TYPE_CHECKING:  # averaging (and the models it builds) is imported where a command uses it
    from s2s_core.export.averaging import WeightsSource

CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)$")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="convert a model package for a faster inference engine (CTranslate2)",
                       description="Writes a CTranslate2 model directory, by default inside the package "
                                   f"(PKG/{EXPORT_DIR}), where translate, summarize, evaluate and bulk jobs use it "
                                   "(engine=auto). Needs the ct2 extra: pip install 's2s-pipeline[ct2]'.")
    p.add_argument("--model", required=True, metavar="PKG", help="model package (local or s3://)")
    p.add_argument("--format", choices=["ctranslate2"], default="ctranslate2")
    p.add_argument("--quantization", choices=QUANTIZATIONS, default="float32",
                   help="weights as stored (CTranslate2 can still run them as another compute_type); default float32")
    p.add_argument("--output", metavar="DIR", help=f"default: PKG/{EXPORT_DIR}")
    p.set_defaults(run=_run_export)
    p = sub.add_parser("average", help="average the weights of several checkpoints into a new model package",
                       description="Sources: --checkpoints (checkpoint directories or model packages), or the last "
                                   "N checkpoints of a training run (--run OUTPUT --last N). All must be of the same "
                                   "model and tokenizer.")
    sources = p.add_mutually_exclusive_group(required=True)
    sources.add_argument("--checkpoints", nargs="+", metavar="URI", help="checkpoints or packages to average")
    sources.add_argument("--run", dest="training_run", metavar="URI", help="a training run's --output (its checkpoints/ are used)")
    p.add_argument("--last", type=int, default=0, metavar="N", help="with --run: how many of its last checkpoints")
    p.add_argument("--output", required=True, metavar="PKG", help="where the averaged package goes")
    p.set_defaults(run=_run_average)


def _run_export(args: argparse.Namespace, settings: Settings) -> int:
    from s2s_core.export.ct2 import export_ctranslate2, import_ctranslate2
    from s2s_core.package import load_package

    import_ctranslate2()  # the missing extra is the likeliest problem: say so before any download
    storage = Storage(settings.s3)
    model = absolute(args.model)
    max_bytes = max_model_bytes(settings)
    check_model_config(storage, model, max_bytes)
    output = absolute(args.output) if args.output else join(model, EXPORT_DIR)
    # Inside the package is where exports belong (the default); replacing the package is not.
    if (model.rstrip("/") + "/").startswith(output.rstrip("/") + "/"):  # the export replaces its directory
        raise ConfigError([f"`--output` {output} would replace the package itself: give a new directory "
                           f"(default: {join(model, EXPORT_DIR)})"])
    check_not_a_file(storage, output, "the result")
    with staged_package(storage, model) as local:
        package = load_package(local, max_bytes=max_bytes)
    with tempfile.TemporaryDirectory(prefix="s2s-export-") as tmp:
        target = Path(tmp) / "export" if is_s3(output) else Path(output)
        export_ctranslate2(package, target, args.quantization)
        megabytes = (target / "model.bin").stat().st_size / 1e6
        if is_s3(output):
            storage.upload_tree(target, output)
    print(f"{output}: CTranslate2 model ({args.quantization}, {megabytes:,.1f} MB) of {model}")
    return 0


def _run_average(args: argparse.Namespace, settings: Settings) -> int:
    from s2s_core.export.averaging import average_checkpoints

    storage = Storage(settings.s3)
    if args.training_run is not None:
        names = last_checkpoints(storage, absolute(args.training_run), args.last)
    elif args.last:
        raise ConfigError(["`--last` goes with `--run`"])
    else:
        names = [absolute(uri) for uri in args.checkpoints]
    output = absolute(args.output)
    check_apart(names, output)  # the package would be written over a checkpoint it reads
    check_not_a_file(storage, output, "the result")
    max_bytes = max_model_bytes(settings)
    with contextlib.ExitStack() as staged, tempfile.TemporaryDirectory(prefix="s2s-average-") as tmp:
        sources = [_source(staged.enter_context(_staged_copy(storage, name)), name, max_bytes) for name in names]
        target = Path(tmp) / "package" if is_s3(output) else Path(output)
        metadata = average_checkpoints(sources, target)
        if is_s3(output):
            storage.upload_tree(target, output)
    steps = ", ".join(str(step) for step in metadata["averaged_steps"])
    print(f"{output}: model package, the average of {len(sources)} checkpoints (steps {steps})")
    return 0


def last_checkpoints(storage: Storage, run: str, count: int) -> list[str]:
    """The URIs of the last `count` complete checkpoints of a training run, oldest first.

    Raises:
        ConfigError: `count` below 2, or more than the run kept.
        CheckpointError: the run has no checkpoints.
    """
    if count < 2:
        raise ConfigError([f"`--last` must be >= 2 with `--run` (checkpoints to average), but is {count}"])
    root = join(run, "checkpoints")
    try:
        entries = storage.list(root)
    except NotFound:
        raise CheckpointError(run, "has no checkpoints/ (is it a training run's --output?)") from None
    steps = {}
    for entry in entries:  # a checkpoint counts once its files.json (written last) is there
        directory = entry.uri.rsplit("/", 1)[0]
        found = CHECKPOINT_NAME.match(basename(directory))
        if basename(entry.uri) == "files.json" and found:
            steps[int(found.group(1))] = directory
    if len(steps) < count:
        raise ConfigError([f"{run} kept {len(steps)} checkpoints (steps {', '.join(map(str, sorted(steps))) or 'none'}), "
                           f"fewer than --last {count}: train with checkpoint.keep_last={count} or more"])
    return [steps[step] for step in sorted(steps)[-count:]]


def _source(local: Path, name: str, max_bytes: int | None) -> WeightsSource:
    """A checked averaging source: its model config valid and small enough to build.

    Raises:
        CheckpointError: naming the source's config.json and what is wrong with it.
    """
    from s2s_core.export.averaging import read_source
    from s2s_core.package import check_model_config as check_config  # of a local copy, not by URI

    try:
        source = read_source(local, name)
    except KeyError as missing:  # a checkpoint's config.json without its `model` section
        raise CheckpointError(join(name, "config.json"), f"has no {missing} section: not a run config") from None
    check_config(source.model_config, join(name, "config.json"), max_bytes, LIMIT_HINT)
    return source


def _staged_copy(storage: Storage, uri: str) -> contextlib.AbstractContextManager[Path]:
    """A checkpoint or package as a local directory while it is used (see `staged_package`)."""
    if not storage.exists(uri):
        raise CheckpointError(uri, "not found")
    return staged_package(storage, uri)
