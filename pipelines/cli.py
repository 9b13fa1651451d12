"""`s2s`: the command line. Errors become one line on stderr and an exit code, here only.

Stage commands run as Prefect flows (run history); their inputs and config are checked first,
so mistakes fail in about a second, before Ray or Prefect start.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from dataclasses import asdict
from typing import Sequence

from pipelines import settings as settings_module
from s2s_core.errors import (
    CheckpointError,
    ClusterFailure,
    ConfigError,
    InputError,
    OrchestrationFailure,
    OutputError,
    S2SError,
    StorageFailure,
)

EXIT_CODES: tuple[tuple[type[S2SError], int], ...] = (
    (ConfigError, 2), (InputError, 3), (CheckpointError, 3), (OutputError, 4), (StorageFailure, 5),
    (ClusterFailure, 6), (OrchestrationFailure, 7),
)
"""The one table of exit codes: the first kind an error is an instance of; 1 for any other
`S2SError`. A damaged package or checkpoint is an unusable input, hence 3 like `InputError`."""
EXIT_OTHER = 1
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
TASKS = ("translate", "summarize")
"""`--task` values: Translator splits long inputs into sentences, Summarizer truncates them."""

class _ForceAlias(argparse.Action):
    """`--force`, the old name of `--overwrite`: still works, and says so."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print("note: --force is now called --overwrite (same meaning)", file=sys.stderr)
        namespace.overwrite = True


def _overwrite_argument(p: argparse.ArgumentParser, what: str) -> None:
    """The one flag that lets a stage replace what is at its output."""
    p.add_argument("--overwrite", action="store_true", help=what)
    p.add_argument("--force", action=_ForceAlias, nargs=0, help="old name of --overwrite")


def _prepare_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="clean, deduplicate, split and shard corpora; train SentencePiece",
                       description="Corpora (TSV, JSONL, Parquet, aligned text; local or s3://, plain or .gz) "
                                   "-> OUTPUT/{train,valid,test}/part-NNNNN.parquet, rejects/, tokenizer/, "
                                   "manifest.json")
    p.add_argument("--input", action="append", default=[], metavar="URI",
                   help="file, directory/prefix, glob, or aligned pair prefix (corpus -> corpus.en + corpus.it); repeatable")
    p.add_argument("--valid", action="append", default=[], metavar="URI", help="held-out validation input instead of a hash split")
    p.add_argument("--test", action="append", default=[], metavar="URI", help="held-out test input instead of a hash split")
    p.add_argument("--output", required=True, metavar="URI", help="dataset location (local directory or s3://bucket/prefix)")
    p.add_argument("--config", metavar="FILE", help="YAML overlay of the prepare config")
    _overwrite_argument(p, "replace a different dataset (or foreign files) at --output")
    p.add_argument("--tokenize-only", action="store_true",
                   help="add token-id shards to the dataset at --output (prepared before they existed); no --input")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. tokenizer.vocab_size=16000")
    p.set_defaults(run=_run_prepare)


def _run_prepare(args: argparse.Namespace, settings: settings_module.Settings) -> int:
    from pipelines.prepare.flow import prepare_corpus, tokenize_dataset
    from pipelines.prepare.plan import PrepareRequest, plan
    from pipelines.prepare.report import counts_table
    from pipelines.storage import Storage

    if args.tokenize_only:
        if args.input or args.valid or args.test or args.overrides or args.config:
            raise ConfigError(["`--tokenize-only` takes only --output (the dataset): it uses the dataset's tokenizer"])
        manifest = tokenize_dataset(data=args.output, ray_address=settings.ray_address)
        shards = sum(len(entries) for entries in manifest["token_ids"]["shards"].values())
        print(f"{args.output}: {shards} token-id shards added (tokenizer {manifest['token_ids']['tokenizer']})")
        return 0

    request = PrepareRequest(inputs=args.input, output=args.output, valid_inputs=args.valid, test_inputs=args.test,
                             config_file=args.config, overrides=args.overrides, overwrite=args.overwrite,
                             ray_address=settings.ray_address)
    plan(Storage(settings.s3), request)  # fail fast, before Ray and Prefect start
    manifest = prepare_corpus(**asdict(request))
    print(counts_table(manifest, args.output))
    return 0


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a Transformer or LSTM-attention model on a prepared dataset with Ray Train",
                       description="DATA (from `s2s prepare`) -> OUTPUT/model (model package), OUTPUT/checkpoints, "
                                   "OUTPUT/best, OUTPUT/metrics. Running it again with the same OUTPUT resumes.")
    p.add_argument("--data", required=True, metavar="URI", help="prepared dataset (local directory or s3://)")
    p.add_argument("--output", required=True, metavar="URI", help="run location (local directory or s3://bucket/prefix)")
    p.add_argument("--config", metavar="FILE", help="YAML overlay of the training config")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (DDP); default 1")
    p.add_argument("--gpus-per-worker", type=float, default=0, metavar="G", help="GPUs per worker; 0 trains on CPU")
    p.add_argument("--cpus-per-worker", type=float, default=1, metavar="C", help="CPUs per worker (and torch threads)")
    p.add_argument("--max-failures", type=int, default=3, help="worker crashes survived by restarting from the last checkpoint")
    _overwrite_argument(p, "discard a run with a different config at --output")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. preset=transformer-base max_steps=20000 model.dropout=0.2")
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace, settings: settings_module.Settings) -> int:
    from pipelines.storage import Storage, join
    from pipelines.train.flow import train_model
    from pipelines.train.plan import TrainRequest, plan

    request = TrainRequest(data=args.data, output=args.output, config_file=args.config, overrides=args.overrides,
                           workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                           cpus_per_worker=args.cpus_per_worker, max_failures=args.max_failures,
                           overwrite=args.overwrite, ray_address=settings.ray_address)
    plan(Storage(settings.s3), request)  # fail fast, before Ray and Prefect start
    metadata = train_model(**asdict(request))
    scores = ", ".join(f"{k} {v:.2f}" for k, v in sorted((metadata.get("validation") or {}).items())
                       if isinstance(v, float))
    print(f"model package: {join(args.output, 'model')} (step {metadata['step']}" + (f"; {scores})" if scores else ")"))
    return 0


def _generate_parser(sub: argparse._SubParsersAction, name: str, what: str) -> None:
    p = sub.add_parser(name, help=f"{what} text with a model package: --text/stdin, or a whole dataset in bulk",
                       description=f"With --input/--output: {what} every row of a dataset (Parquet, JSONL or TSV; "
                                   "local or s3://) on a pool of Ray actors, exactly once per row; running the same "
                                   "command again after a failure finishes the job. Without --input: --text "
                                   "arguments, else stdin lines, one output line each.")
    p.add_argument("--model", required=True, metavar="URI", help="model package (e.g. TRAIN_OUTPUT/model)")
    p.add_argument("--text", action="append", metavar="TEXT", help="input text (repeatable); default: stdin lines")
    p.add_argument("--input", metavar="URI", help="dataset: file, directory/prefix or glob")
    p.add_argument("--output", metavar="URI", help="output location for --input")
    p.add_argument("--column", default="source", help="text column/field (TSV: field number); default source (TSV: 0)")
    p.add_argument("--id-column", metavar="COLUMN", help="row id column; default file:row")
    p.add_argument("--source-lang", metavar="CODE", help="source language of a multilingual model (NLLB eng_Latn, "
                                                         "mBART en_XX, M2M-100 en); default: the package's")
    p.add_argument("--target-lang", metavar="CODE", help="target language (NLLB ita_Latn, mBART it_IT, M2M-100 it); "
                                                         "default: the package's")
    p.add_argument("--target-lang-column", metavar="COLUMN",
                   help="with --input: column of each row's target language code (TSV: field number)")
    p.add_argument("--workers", type=int, default=1, help="Ray actors, each with the model loaded once; default 1")
    p.add_argument("--cpus-per-worker", type=float, default=1, metavar="C", help="CPUs per actor (and torch threads)")
    p.add_argument("--gpus-per-worker", type=float, default=0, metavar="G", help="GPUs per actor; 0 runs on CPU")
    p.add_argument("--unit-mb", type=float, default=32, help="input MB per work unit (and output file)")
    p.add_argument("--config", metavar="FILE", help="YAML file of decoding options")
    _overwrite_argument(p, "replace a different job (or foreign files) at --output")
    p.add_argument("--show", type=int, default=0, metavar="N", help="print N example rows (source and output) at the end")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="decoding options, e.g. beam_size=5 length_penalty=0.6")
    p.set_defaults(run=_run_generate, task=name)


def _language_overrides(args: argparse.Namespace) -> list[str]:
    """--source-lang/--target-lang as decoding options (JSON-quoted: `no` stays a code, not false)."""
    import json

    return [f"{name}={json.dumps(code)}" for name, code in (("source_lang", args.source_lang),
                                                            ("target_lang", args.target_lang)) if code is not None]


def _run_generate(args: argparse.Namespace, settings: settings_module.Settings) -> int:
    args.overrides = [*args.overrides, *_language_overrides(args)]
    if args.input is None:
        from pipelines.generate.interactive import generate_lines
        from s2s_core.generation.config import resolve_generation

        if args.target_lang_column is not None:
            raise ConfigError(["`--target-lang-column` needs --input (a dataset with that column): use --target-lang"])
        config = resolve_generation(args.config, args.overrides, args.task)
        return generate_lines(settings, args.task, args.model, config, args.text)
    if args.output is None:
        raise ConfigError(["`--output` is required with `--input`"])
    return _run_bulk(args, settings)


def _run_bulk(args: argparse.Namespace, settings: settings_module.Settings) -> int:
    from pipelines.generate.flow import bulk_generate, examples
    from pipelines.generate.plan import BulkRequest, plan
    from pipelines.storage import Storage

    request = BulkRequest(task=args.task, model=args.model, input=args.input, output=args.output,
                          column=args.column, id_column=args.id_column, target_lang_column=args.target_lang_column,
                          workers=args.workers,
                          cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
                          config_file=args.config, overrides=args.overrides, overwrite=args.overwrite,
                          unit_mb=args.unit_mb, ray_address=settings.ray_address)
    storage = Storage(settings.s3)
    planned = plan(storage, request)  # fail fast, before Ray and Prefect start
    summary = bulk_generate(**asdict(request))
    flags = ", ".join(f"{summary[f]} {f}" for f in ("split", "truncated", "empty") if summary[f])
    print(f"{args.output}: {summary['rows_out']:,} rows ({summary['error']} errors" + (f", {flags})" if flags else ")")
          + f", {summary['throughput']['rows_per_s']:,.1f} rows/s")
    for example in examples(storage, planned.spec.output, planned.units, args.show) if args.show > 0 else []:
        print(f"\n  [{example['id']}] {example['source']}\n  -> {example['output']}")
    return 0


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a model package on a test set (BLEU/chrF or ROUGE, with signatures)",
                       description="TEST: a prepared dataset (its test split), a TSV (source, reference[, origin]) "
                                   "or a Parquet file (source, target[, origin]). Writes OUTPUT/report.json, "
                                   "report.md and outputs.txt.")
    p.add_argument("--model", required=True, metavar="URI", help="model package")
    p.add_argument("--test", required=True, metavar="URI", help="test set")
    p.add_argument("--output", required=True, metavar="URI", help="where report.json, report.md, outputs.txt go")
    p.add_argument("--task", choices=TASKS, default="translate")
    p.add_argument("--metrics", type=lambda text: [m.strip() for m in text.split(",") if m.strip()],
                   metavar="LIST", help="bleu,chrf,rouge (default: bleu,chrf to translate, rouge to summarize)")
    p.add_argument("--baseline", metavar="URI", help="a second package: is --model significantly better or worse?")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N", help="resamples for 95%% confidence intervals")
    p.add_argument("--resamples", type=int, default=1000, metavar="N", help="paired bootstrap resamples (--baseline)")
    p.add_argument("--config", metavar="FILE", help="YAML file of decoding options")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="decoding options, e.g. beam_size=5 or preset=summarize-short")
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace, settings: settings_module.Settings) -> int:
    from pipelines.evaluate.flow import evaluate_model, score_lines
    from pipelines.evaluate.plan import EvalRequest, plan
    from pipelines.storage import Storage

    request = EvalRequest(model=args.model, test=args.test, output=args.output, task=args.task, metrics=args.metrics,
                          baseline=args.baseline, config_file=args.config, overrides=args.overrides,
                          bootstrap=args.bootstrap, resamples=args.resamples)
    plan(Storage(settings.s3), request)  # fail fast, before Prefect starts and any model generates
    report = evaluate_model(**asdict(request))
    print("\n".join(score_lines(report)))
    for name, row in report.get("comparison", {}).get("scores", {}).items():
        print(f"{name}: {row['candidate']} vs baseline {row['baseline']} ({row['delta']:+.2f}, p = {row['p_value']})")
    print(f"report: {args.output}/report.json, report.md")
    return 0


def _demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on the committed sample: prepare, train, evaluate, bulk, report",
                       description="What `make demo` runs. Everything goes under OUTPUT/TASK[-quick]; a second run "
                                   "reuses every stage whose output is still valid. S2S_DEMO_S3=1 writes to a local "
                                   "SeaweedFS S3 server that the demo starts and stops.")
    p.add_argument("--task", choices=TASKS, default="translate")
    p.add_argument("--quick", action="store_true", help="a tiny model and a few steps: a smoke run in under 3 minutes")
    p.add_argument("--clean", action="store_true", help="discard this demo's earlier outputs first")
    p.add_argument("--output", default="demo-output", metavar="DIR", help="default: demo-output")
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace, settings: settings_module.Settings) -> int:
    from pathlib import Path

    from pipelines.demo import run_demo

    return run_demo(args.task, args.quick, args.clean, Path(args.output), settings.demo_s3)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2s", description="Sequence-to-sequence pipelines on Ray + Prefect.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--ray-address", metavar="ADDR", help="existing Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    sub = parser.add_subparsers(dest="command", required=True)
    _prepare_parser(sub)
    _train_parser(sub)
    _generate_parser(sub, "translate", "translate")
    _generate_parser(sub, "summarize", "summarize")
    _evaluate_parser(sub)
    _demo_parser(sub)
    from pipelines import import_tool, package_tools
    from pipelines.orchestrate import commands
    package_tools.add_parsers(sub)
    import_tool.add_parsers(sub)
    commands.add_parsers(sub)
    for command in sub.choices.values():  # the global options also work after the command
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        command.add_argument("--ray-address", default=argparse.SUPPRESS, metavar="ADDR",
                             help="existing Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code (also when used in-process by tests)."""
    args = build_parser().parse_args(argv)
    settings = settings_module.load_settings()
    debug = args.debug or settings.debug
    if args.ray_address:
        settings = settings_module.with_ray_address(settings, args.ray_address)
    settings_module.prepare_process(debug)
    try:
        return args.run(args, settings)
    except S2SError as err:
        return _fail(err, exit_code(err), debug)
    except KeyboardInterrupt:
        return _fail(None, EXIT_INTERRUPTED, debug, "interrupted")
    except Exception as err:  # noqa: BLE001 - the one place that turns surprises into a line
        return _fail(err, EXIT_INTERNAL, debug, f"internal error: {type(err).__name__}: {_first_line(err)} "
                                                "(run with --debug for the traceback)")


def exit_code(err: S2SError) -> int:
    """The exit code of `err`'s kind (`EXIT_CODES`)."""
    return next((code for kind, code in EXIT_CODES if isinstance(err, kind)), EXIT_OTHER)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def _fail(err: BaseException | None, code: int, debug: bool, message: str | None = None) -> int:
    if debug and err is not None:
        traceback.print_exception(err)
    print(f"error: {message or _first_line(err)}", file=sys.stderr)
    logging.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
