"""Planning a training run: the `TrainRequest`, and everything checked before Ray starts.

`plan(storage, request)` resolves the config, reads the dataset's manifest and tokenizer,
checks `init_from` and the output, and returns the run config the output records. No Ray,
no Prefect: the CLI calls it to fail in about a second, the flow calls it again to run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pipelines import outputs, settings
from pipelines.datasets import read_manifest, staged_tokenizer
from pipelines.outputs import OutputKind
from pipelines.resources import resource_problems
from pipelines.storage import Storage, absolute
from pipelines.token_ids import StorageShards, check_token_ids, dataset_tokenizer_digest
from pipelines.train.init_from import check_init_from, package_model
from s2s_core.config import layers, to_dict
from s2s_core.errors import ConfigError, InputError
from s2s_core.models.config import ModelConfig
from s2s_core.models.size import DEFAULT_MAX_MODEL_GB, GB, size_problem
from s2s_core.tokenizer import Tokenizer
from s2s_core.training import config as train_config
from s2s_core.training.batching import NO_USABLE_PAIRS, TokenizedPairs, usable_rows
from s2s_core.training.config import BatchConfig, TrainConfig

RUN_NAME = "checkpoints"
"""Ray Train run name: its checkpoints and state live under OUTPUT/checkpoints."""


@dataclass(frozen=True, kw_only=True)
class TrainRequest:
    """What `s2s train` (and the `train_model` flow) is asked to do."""

    data: str
    """A prepared dataset (local or s3://)."""
    output: str
    """Where the run goes: config.json, checkpoints/, best/, metrics/, model/."""
    config_file: str | None = None
    """YAML overlay of the training config."""
    overrides: list[str] = field(default_factory=list)
    """`key=value` config overrides."""
    workers: int = 1
    """Ray Train workers (DDP)."""
    gpus_per_worker: float = 0
    """GPUs per worker; 0 trains on CPU."""
    cpus_per_worker: float = 1
    """CPUs per worker (and torch threads)."""
    max_failures: int = 3
    """Worker crashes survived by restarting from the last checkpoint."""
    overwrite: bool = False
    """Discard a run with a different config at `output`."""
    ray_address: str | None = None
    """A Ray cluster to run on; None: the settings' (else a local Ray)."""

    def problems(self) -> list[str]:
        out = resource_problems(self.workers, self.cpus_per_worker, self.gpus_per_worker)
        if self.max_failures < 0:
            out.append(f"`--max-failures` must be >= 0, but is {self.max_failures}")
        return out


@dataclass(frozen=True)
class TrainPlan:
    """A checked request: resolved configs, the dataset's manifest and the run config."""

    data: str
    output: str
    train: TrainConfig
    model: ModelConfig
    manifest: dict
    run_config: dict


def plan(storage: Storage, request: TrainRequest) -> TrainPlan:
    """Check the request, config, dataset, vocabulary, `init_from` and output.

    Raises:
        ConfigError, InputError, CheckpointError, OutputError, StorageError: naming what is wrong.
    """
    if request.problems():
        raise ConfigError(request.problems())
    data, output = absolute(request.data), absolute(request.output)
    train, model = resolve_config(request.config_file, request.overrides)
    outputs.check_apart([data], output)
    manifest = read_manifest(storage, data)
    max_bytes = settings.max_model_bytes(settings.load_settings())
    if train.init_from:  # fine-tuning: the package's model, on a dataset of the package's tokenizer
        init_from = absolute(train.init_from)  # Ray workers run in another directory
        check_init_from(storage, init_from, manifest)
        model = package_model(storage, init_from, model_overrides(request), max_bytes)
        train = replace(train, init_from=init_from, model=model)
    model, batching = fit_vocabulary(model, storage, data, manifest, train.batching, batching_keys(request))
    train = replace(train, batching=batching)
    check_token_ids(data, manifest, train.batching.loader)
    check_usable_pairs(storage, data, manifest, train.batching)
    check_model_size(model, max_bytes)
    run_config = run_config_of(train, model, data, manifest)
    check_output(storage, output, run_config, request.overwrite)
    return TrainPlan(data, output, train, model, manifest, run_config)


RESUMABLE_CHANGES = {"max_steps", "max_epochs", "max_minutes"}  # a rerun may extend training without --overwrite


def resolve_config(config_file: str | None, overrides: list[str]) -> tuple[TrainConfig, ModelConfig]:
    """Defaults <- preset <- YAML file <- key=value overrides: (TrainConfig, ModelConfig), checked together."""
    return train_config.resolve(layers(config_file, overrides))


def model_overrides(request: TrainRequest) -> dict[str, Any]:
    """The request's `model.*` overrides (from its config file and `key=value` overrides)."""
    overrides = layers(request.config_file, request.overrides).get("model") or {}
    return overrides if isinstance(overrides, dict) else {}


def batching_keys(request: TrainRequest) -> set[str]:
    """The `batching.*` keys the request sets itself (config file or `key=value`)."""
    given = layers(request.config_file, request.overrides).get("batching") or {}
    return set(given) if isinstance(given, dict) else set()


def fit_vocabulary(model: ModelConfig, storage: Storage, data: str, manifest: dict,
                   batching: BatchConfig | None = None, given: set[str] = frozenset()) -> Any:
    """Fill the model's vocabulary sizes from the dataset tokenizer, or refuse a mismatch.

    With `batching`, returns (model, batching) with the length limits fitted to the model's
    position table: a default limit whose rows (text plus the tokenizer's template) would run
    past it is lowered to fit; one the request set (`given`) is refused, naming the value that fits.
    """
    if not (manifest.get("tokenizer") or {}).get("files"):
        raise InputError(data, "the dataset has no tokenizer (prepare it with tokenizer.enabled=true)")
    with staged_tokenizer(storage, data, manifest) as local:
        source, target = Tokenizer.from_dir(local, "source"), Tokenizer.from_dir(local, "target")
    sizes = {"src_vocab_size": source.vocab_size, "tgt_vocab_size": target.vocab_size}
    wrong = [f"`model.{k}` is {getattr(model, k)} but the dataset tokenizer has {v} pieces"
             for k, v in sizes.items() if getattr(model, k) not in (0, v)]
    if batching is not None:
        batching, too_long = _fit_lengths(model, batching, {"source": source, "target": target}, given)
        wrong += too_long
    if wrong:
        raise ConfigError(wrong)
    model = replace(model, **sizes)
    return model if batching is None else (model, batching)


def _fit_lengths(model: ModelConfig, batching: BatchConfig, tokenizers: dict[str, Tokenizer],
                 given: set[str]) -> tuple[BatchConfig, list[str]]:
    """`batching` with default length limits lowered to the model's `max_positions` (Transformers),
    and a problem for each limit the request set above it."""
    limit = getattr(model, "max_positions", None)
    fitted, problems = {}, []
    for side, tokenizer in tokenizers.items():
        key, template = f"max_{side}_len", len(tokenizer.prefix) + len(tokenizer.suffix)
        longest = getattr(batching, key)
        if limit is None or longest + template <= limit:
            continue
        if key in given:
            problems.append(f"`batching.{key}` is {longest} but the model's rows hold at most {limit} tokens, "
                            f"{template} of them the tokenizer's own: set it to {limit - template} or less")
        else:
            fitted[key] = limit - template
    return replace(batching, **fitted), problems


def check_usable_pairs(storage: Storage, data: str, manifest: dict, batching: BatchConfig) -> None:
    """Refuse length limits that leave no train pair: the workers' batch planning would find it
    only after Ray Train started (half a minute on 2 CPUs). Read from the token-id shards' length
    columns, stopping at the first shard that holds a usable pair (the first one, normally).
    A dataset without id shards of its own tokenizer (`loader=memory` on an older dataset) is
    left to the workers, which tokenize it.

    Raises:
        ConfigError: no train pair is non-empty on both sides and within the limits.
    """
    section = manifest.get("token_ids")
    if not section or section.get("tokenizer") != dataset_tokenizer_digest(manifest):
        return
    shards = StorageShards(storage, data, manifest, "train")
    for shard in range(shards.shard_count()):
        src_len, tgt_len = shards.lengths(shard)
        lengths_only = TokenizedPairs(np.zeros(0, np.int32), np.concatenate([[0], np.cumsum(src_len)]),
                                      np.zeros(0, np.int32), np.concatenate([[0], np.cumsum(tgt_len)]))
        if len(usable_rows(lengths_only, batching.max_source_len, batching.max_target_len)):
            return
    raise ConfigError([NO_USABLE_PAIRS])


def check_model_size(model: ModelConfig, max_bytes: int | None) -> None:
    """Refuse a model whose weights, gradients and optimiser state would exceed `max_bytes`
    (None: s2s_core's default): it would fail on the workers, after Ray started, with no reason.

    Raises:
        ConfigError: with the estimate and the limit.
    """
    limit = int(DEFAULT_MAX_MODEL_GB * GB) if max_bytes is None else max_bytes
    too_large = size_problem(model, limit, training=True)
    if too_large:
        raise ConfigError([f"model: {too_large} (S2S_MAX_MODEL_GB sets the limit)"])


def run_config_of(train: TrainConfig, model: Any, data: str, manifest: dict) -> dict:
    """What a run records in its `config.json`: the model config once, under "model"."""
    train_fields = {key: value for key, value in to_dict(train).items() if key != "model"}
    return {"train": train_fields, "model": to_dict(model), "data": data, "dataset_id": manifest.get("dataset_id")}


def _config_changes(old: dict, new: dict) -> list[str]:
    changed = _differences(old, new)
    return [f"config ({', '.join(changed[:5])})"] if changed else []


TRAINING_RUN = OutputKind(what="run", record="config.json", owned=(RUN_NAME, "best", "metrics", "model", "config.json"),
                          differences=_config_changes)


def check_output(storage: Storage, output: str, run_config: dict, overwrite: bool) -> None:
    """Refuse to resume onto a run with a different config (or into foreign files), unless `overwrite`.

    Raises:
        OutputError: naming what differs.
    """
    outputs.check_output(storage, output, TRAINING_RUN, run_config, overwrite)


def claim_output(storage: Storage, output: str, run_config: dict, overwrite: bool) -> None:
    """Check `output`, discard a different run if `overwrite`, record our config."""
    outputs.claim_output(storage, output, TRAINING_RUN, run_config, overwrite)


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            if where == "train." and key in RESUMABLE_CHANGES:
                continue
            out += _differences(old.get(key), new.get(key), f"{where}{key}.")
        return out
    return [] if old == new else [f"{where.rstrip('.')}: {old!r} -> {new!r}"]
