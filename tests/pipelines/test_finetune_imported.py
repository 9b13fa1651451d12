"""Fine-tuning an imported model end to end on real Ray Train and Prefect: `s2s import` a tiny
Marian built locally, `s2s prepare` the committed slice with its tokenizer (`tokenizer.from=PKG`),
`s2s train init_from=PKG`; the dev loss falls, the result is still an imported-style package
that translates, and a dataset of another tokenizer is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from pipelines import cli
from pipelines.datasets import read_manifest
from pipelines.storage import Storage
from pipelines.train.data import load_valid
from s2s_core.package import load_package
from s2s_core.training.config import ValidationConfig
from s2s_core.training.setup import row_layout
from s2s_core.training.validation import validate
from tests.conftest import SAMPLE
from tests.pipelines.test_generate import FAST

pytest.importorskip("transformers")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("pipeline")]

DEV_PAIRS = 300
FINE_TUNE = ["seed=5", "log_every=1", "max_steps=30", "optim.lr=3e-3", "optim.label_smoothing=0",
             "schedule.warmup_steps=5", "batching.max_tokens=1500", "batching.max_source_len=200",
             "batching.max_target_len=200", "validation.every_steps=15",
             "validation.metric=loss", f"validation.loss_sentences={DEV_PAIRS}", "validation.decode_sentences=8",
             "checkpoint.every_steps=30"]
"""A few dozen steps of the tiny imported Marian (d_model 32, 256 positions) on CPU; no label
smoothing, so the recorded validation loss is the dev NLL computed below."""


@pytest.fixture(scope="module")
def imported(marian_checkpoint, tmp_path_factory) -> Path:
    package = tmp_path_factory.mktemp("imported") / "opus-mt-en-it"
    assert cli.main(["import", "--from", str(marian_checkpoint), "--output", str(package)]) == 0
    return package


@pytest.fixture(scope="module")
def imported_dataset(imported, tmp_path_factory) -> Path:
    """The committed slice, prepared with the imported model's tokenizer."""
    output = tmp_path_factory.mktemp("imported-data") / "dataset"
    code = cli.main(["prepare", "--input", str(SAMPLE / "train.tsv"), "--valid", str(SAMPLE / "dev.tsv"),
                     "--output", str(output), f"tokenizer.from={imported}", "split.test_rows=0"])
    assert code == 0
    return output


def dev_nll(package_dir: Path, data: Path) -> float:
    """Mean NLL per target token of a package on the dataset's first `DEV_PAIRS` valid pairs,
    on the rows training uses (the tokenizer's templates, the model's decoder start)."""
    package = load_package(package_dir)
    source, target = package.source_tokenizer, package.target_tokenizer
    storage = Storage()
    valid = load_valid(storage, str(data), read_manifest(storage, str(data)), source, target, DEV_PAIRS,
                       row_layout(source, target, package.config))
    assert valid is not None
    config = ValidationConfig(decode_sentences=0, loss_sentences=DEV_PAIRS)
    return validate(package.model, valid, config, target, 0.0, 4096, torch.device("cpu"))["valid_nll"]


def test_the_dataset_holds_the_packages_tokenizer_and_its_texts_ids(imported, imported_dataset):
    manifest = json.loads((imported_dataset / "manifest.json").read_text())
    assert manifest["tokenizer"]["reused_from"] == str(imported / "tokenizer")
    package_files = json.loads((imported / "metadata.json").read_text())["files"]
    assert {f["path"]: f["sha256"] for f in manifest["tokenizer"]["files"]} == \
        {path: entry["sha256"] for path, entry in package_files.items() if path.startswith("tokenizer/")}
    # Sources are encoded with source.spm and targets with target.spm; the shards hold the texts'
    # ids only (training adds the rows' </s>).
    package = load_package(imported)
    text = pq.read_table(imported_dataset / manifest["shards"]["train"][0]["path"]).slice(0, 5)
    ids = pq.read_table(imported_dataset / manifest["token_ids"]["shards"]["train"][0]["path"]).slice(0, 5)
    assert ids["src"].to_pylist() == package.source_tokenizer.encode_batch(text["source"].to_pylist())
    assert ids["tgt"].to_pylist() == package.target_tokenizer.encode_batch(text["target"].to_pylist())


def test_fine_tuning_an_imported_marian_lowers_its_dev_loss_and_keeps_it_importable(
        imported, imported_dataset, tmp_path, capsys):
    before = dev_nll(imported, imported_dataset)
    run = tmp_path / "fine-tuned"
    assert cli.main(["train", "--data", str(imported_dataset), "--output", str(run), "--workers", "1",
                     f"init_from={imported}", *FINE_TUNE]) == 0
    after = dev_nll(run / "model", imported_dataset)
    with capsys.disabled():
        print(f"\ndev NLL of the imported Marian: {before:.3f} before fine-tuning, {after:.3f} after 30 steps")
    assert after < before - 1.0

    valid = [json.loads(line) for line in (run / "metrics" / "valid.jsonl").read_text().splitlines()]
    assert [v["step"] for v in valid] == [15, 30] and valid[-1]["valid_loss"] < valid[0]["valid_loss"]
    assert valid[-1]["valid_nll"] == pytest.approx(after, abs=1e-4)  # validation scored the rows measured here
    tuned, original = load_package(run / "model"), load_package(imported)
    assert tuned.config == original.config  # sinusoidal halves, logits bias, PAD as decoder start...
    assert (tuned.config.positions, tuned.config.output_bias, tuned.config.decoder_start_id) == \
        ("sinusoidal-halves", True, 0)
    metadata = tuned.metadata
    assert metadata["origin"] == original.metadata["origin"] and metadata["init_from"] == str(imported)
    assert metadata["decoding"] == original.metadata["decoding"]

    capsys.readouterr()
    assert cli.main(["translate", "--model", str(run / "model"), "--text", "Open the file.", *FAST]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_fine_tuning_on_a_dataset_of_another_tokenizer_is_one_line(imported, imported_dataset, tiny_package,
                                                                    tmp_path, capsys):
    """The package's weights would be read with other token ids: refused before Ray starts."""
    code = cli.main(["train", "--data", str(imported_dataset), "--output", str(tmp_path / "run"),
                     f"init_from={tiny_package}", "max_steps=2"])
    assert code == 2
    line = one_error_line(capsys)
    assert "has another tokenizer than the dataset" in line and f"tokenizer.from={tiny_package}" in line
    assert not (tmp_path / "run").exists()


def test_the_architecture_of_an_init_from_package_cannot_change(imported, imported_dataset, tmp_path, capsys):
    code = cli.main(["train", "--data", str(imported_dataset), "--output", str(tmp_path / "run"),
                     f"init_from={imported}", "model.d_model=64", "model.dropout=0.2"])
    assert code == 2
    line = one_error_line(capsys)
    assert "`model.d_model` cannot be set with `init_from`" in line and "model.dropout" in line
    assert "model.dropout=0.2" not in line  # dropout may change


def test_rows_longer_than_the_imported_models_positions_are_refused(imported, imported_dataset, tmp_path, capsys):
    """The tiny Marian has 256 positions; a row is the text's tokens and </s>. A limit left at its
    default (256 here for the target) is lowered to fit; one given too high is refused."""
    code = cli.main(["train", "--data", str(imported_dataset), "--output", str(tmp_path / "run"),
                     f"init_from={imported}", "batching.max_source_len=256"])
    assert code == 2
    line = one_error_line(capsys)
    assert "`batching.max_source_len` is 256 but the model's rows hold at most 256 tokens, 1 of them the " \
           "tokenizer's own: set it to 255 or less" in line
    assert "max_target_len" not in line


def test_tokenizer_from_a_path_without_a_tokenizer_is_one_line(tmp_path, capsys):
    code = cli.main(["prepare", "--input", str(SAMPLE / "dev.tsv"), "--output", str(tmp_path / "data"),
                     f"tokenizer.from={tmp_path}"])
    assert code == 3
    line = one_error_line(capsys)
    assert f"{tmp_path}: is neither a model package nor a tokenizer directory" in line
