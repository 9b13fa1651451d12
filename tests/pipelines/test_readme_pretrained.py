"""The README's "Use a pretrained model" section, command by command as a user types them: import
a Marian checkpoint from a folder and an NLLB one from S3, translate quickly and in bulk (S3 to S3,
one language and one per row), fine-tune the Marian import on the committed slice, export it for
CTranslate2 and translate with the export.

The commands are read from the README itself, so the section cannot drift from what works. They
run in-process (`cli.main`) on the session's Ray, Prefect and S3 server, once for this module, in a
folder that holds the section's inputs: tiny checkpoints of each layout built from random weights
with real tokenizers (nothing downloaded) and a Parquet file of real sentences with a language
column. The fine-tuning checks (dev loss, what the result keeps, the one-line refusals) use what
the walk-through made: one import, one prepared dataset, one fine-tune for the whole suite.
"""

from __future__ import annotations

import io
import json
import shlex
import shutil
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
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
from tests.conftest import REPO, SAMPLE
from tests.test_readme_tour import tour_commands

pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

SECTION = "Use a pretrained model"
BUCKETS = ("checkpoints", "models", "corpora", "out")
LANGUAGES = ["ita_Latn", "deu_Latn", "fra_Latn"]
ROWS = 24
DEV_PAIRS = 2000
"""At least the committed dev split (500 pairs): the README's fine-tune validates on all of it
(`validation.loss_sentences` left at its default, 2,000)."""


def section_commands() -> list[str]:
    commands = [command for command, background in tour_commands((REPO / "README.md").read_text(), SECTION)]
    assert commands and all(command.startswith("s2s ") for command in commands)
    return commands


def test_the_section_shows_every_step():
    commands = section_commands()
    for step in ("s2s import", "s2s translate", "s2s prepare", "s2s train", "s2s export"):
        assert any(command.startswith(step) for command in commands), step
    assert any("--target-lang-column" in command for command in commands)
    assert any("tokenizer.from=" in command for command in commands)
    assert any("init_from=" in command for command in commands)


@dataclass
class Walkthrough:
    root: Path
    printed: dict[str, str]
    """Each command's standard output."""

    @property
    def imported(self) -> Path:
        return self.root / "models" / "opus-mt-en-it"

    @property
    def dataset(self) -> Path:
        return self.root / "datasets" / "opus-mt-en-it"

    @property
    def tuned(self) -> Path:
        return self.root / "runs" / "opus-mt-en-it-tuned"


def upload(client, folder: Path, bucket: str, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder)}")


def write_inputs(root: Path, s3_server, marian_checkpoint: Path, spm_model: Path) -> None:
    """What the section's commands read: the checkpoints, a corpus on S3, the buckets they name."""
    from tests.s2s_core.importers.conftest import build_nllb

    (root / "data").symlink_to(REPO / "data")
    shutil.copytree(marian_checkpoint, root / "checkpoints" / "opus-mt-en-it")
    client = s3_server.client()
    existing = {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}
    for bucket in BUCKETS:
        if bucket not in existing:
            s3_server.create_bucket(bucket)
    (root / "build").mkdir()
    upload(client, build_nllb(root / "build", spm_model).checkpoint, "checkpoints", "nllb-200")
    lines = (SAMPLE / "test.tsv").read_text(encoding="utf-8").splitlines()[:ROWS]
    table = pa.table({"id": [f"doc-{i}" for i in range(ROWS)], "source": [line.split("\t")[0] for line in lines],
                      "lang": [LANGUAGES[i % len(LANGUAGES)] for i in range(ROWS)]})
    pq.write_table(table, root / "docs.parquet", row_group_size=8)
    client.upload_file(str(root / "docs.parquet"), "corpora", "docs/part-00000.parquet")


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory, s3_server, ray_local, prefect_api, marian_checkpoint, spm_model):
    """Every command of the section, in order, in a fresh folder, with the S3 server's settings in
    the environment (as a user's shell would have them)."""
    root = tmp_path_factory.mktemp("readme-pretrained")
    printed: dict[str, str] = {}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in s3_server.env().items():
            patch.setenv(key, value)
        write_inputs(root, s3_server, marian_checkpoint, spm_model)
        patch.chdir(root)
        for command in section_commands():
            out, err = io.StringIO(), io.StringIO()
            with redirect_stdout(out), redirect_stderr(err):
                code = cli.main(shlex.split(command)[1:])
            assert code == 0, f"{command}\n{out.getvalue()[-2000:]}\n{err.getvalue()[-2000:]}"
            printed[command] = out.getvalue()
        yield Walkthrough(root, printed)


def output_rows(client, prefix: str) -> list[dict]:
    listed = client.list_objects_v2(Bucket="out", Prefix=prefix)["Contents"]
    rows: list[dict] = []
    for item in listed:
        if item["Key"].endswith(".parquet"):
            body = client.get_object(Bucket="out", Key=item["Key"])["Body"].read()
            rows += pq.read_table(pa.BufferReader(body)).to_pylist()
    return rows


def test_the_pretrained_section_runs(walkthrough, s3_server):
    client = s3_server.client()
    single = output_rows(client, "docs-it/")
    assert sorted(row["id"] for row in single) == sorted(f"doc-{i}" for i in range(ROWS))  # every row once
    assert {row["target_lang"] for row in single} == {"ita_Latn"}
    fanned = output_rows(client, "docs-multi/")
    assert sorted(row["id"] for row in fanned) == sorted(f"doc-{i}" for i in range(ROWS))
    assert {row["id"]: row["target_lang"] for row in fanned} == {
        f"doc-{i}": LANGUAGES[i % len(LANGUAGES)] for i in range(ROWS)}

    metadata = json.loads((walkthrough.tuned / "model" / "metadata.json").read_text())
    assert metadata["origin"]["family"] == "marian"
    assert (walkthrough.tuned / "model" / "ctranslate2" / "model.bin").is_file()
    printed = walkthrough.printed
    quick = [printed[c] for c in printed if c.startswith("s2s translate") and "--text" in c]
    # One line per input (random weights may well translate to nothing: the line is still there).
    assert len(quick) >= 3 and all(text.count("\n") == 1 for text in quick)


def test_the_dataset_holds_the_packages_tokenizer_and_its_texts_ids(walkthrough):
    manifest = json.loads((walkthrough.dataset / "manifest.json").read_text())
    assert Path(manifest["tokenizer"]["reused_from"]).resolve() == (walkthrough.imported / "tokenizer").resolve()
    package_files = json.loads((walkthrough.imported / "metadata.json").read_text())["files"]
    assert {f["path"]: f["sha256"] for f in manifest["tokenizer"]["files"]} == \
        {path: entry["sha256"] for path, entry in package_files.items() if path.startswith("tokenizer/")}
    # Sources are encoded with source.spm and targets with target.spm; the shards hold the texts'
    # ids only (training adds the rows' </s>).
    package = load_package(walkthrough.imported)
    text = pq.read_table(walkthrough.dataset / manifest["shards"]["train"][0]["path"]).slice(0, 5)
    ids = pq.read_table(walkthrough.dataset / manifest["token_ids"]["shards"]["train"][0]["path"]).slice(0, 5)
    assert ids["src"].to_pylist() == package.source_tokenizer.encode_batch(text["source"].to_pylist())
    assert ids["tgt"].to_pylist() == package.target_tokenizer.encode_batch(text["target"].to_pylist())


def dev_nll(package_dir: Path, data: Path) -> float:
    """Mean NLL per target token of a package on the dataset's valid pairs, on the rows training
    uses (the tokenizer's templates, the model's decoder start)."""
    package = load_package(package_dir)
    source, target = package.source_tokenizer, package.target_tokenizer
    storage = Storage()
    valid = load_valid(storage, str(data), read_manifest(storage, str(data)), source, target, DEV_PAIRS,
                       row_layout(source, target, package.config))
    assert valid is not None
    config = ValidationConfig(decode_sentences=0, loss_sentences=DEV_PAIRS)
    return validate(package.model, valid, config, target, 0.0, 4096, torch.device("cpu"))["valid_nll"]


def test_fine_tuning_lowers_the_dev_loss_and_keeps_an_imported_package(walkthrough, capsys):
    before = dev_nll(walkthrough.imported, walkthrough.dataset)
    after = dev_nll(walkthrough.tuned / "model", walkthrough.dataset)
    with capsys.disabled():
        print(f"\ndev NLL of the imported Marian: {before:.3f} before fine-tuning, {after:.3f} after")
    assert after < before - 1.0

    lines = (walkthrough.tuned / "metrics" / "valid.jsonl").read_text().splitlines()
    valid = [json.loads(line) for line in lines]
    assert [v["step"] for v in valid] == [30, 60] and valid[-1]["valid_loss"] < valid[0]["valid_loss"]
    assert valid[-1]["valid_nll"] == pytest.approx(after, abs=1e-4)  # validation scored the rows measured here
    tuned, original = load_package(walkthrough.tuned / "model"), load_package(walkthrough.imported)
    assert tuned.config == original.config  # sinusoidal halves, logits bias, PAD as decoder start...
    assert (tuned.config.positions, tuned.config.output_bias, tuned.config.decoder_start_id) == \
        ("sinusoidal-halves", True, 0)
    metadata = tuned.metadata
    assert metadata["origin"] == original.metadata["origin"]
    assert Path(metadata["init_from"]).resolve() == walkthrough.imported.resolve()
    assert metadata["decoding"] == original.metadata["decoding"]


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_fine_tuning_on_a_dataset_of_another_tokenizer_is_one_line(walkthrough, tiny_package, tmp_path, capsys):
    """The package's weights would be read with other token ids: refused before Ray starts."""
    code = cli.main(["train", "--data", str(walkthrough.dataset), "--output", str(tmp_path / "run"),
                     f"init_from={tiny_package}", "max_steps=2"])
    assert code == 2
    line = one_error_line(capsys)
    assert "has another tokenizer than the dataset" in line and f"tokenizer.from={tiny_package}" in line
    assert not (tmp_path / "run").exists()


def test_the_architecture_of_an_init_from_package_cannot_change(walkthrough, tmp_path, capsys):
    code = cli.main(["train", "--data", str(walkthrough.dataset), "--output", str(tmp_path / "run"),
                     f"init_from={walkthrough.imported}", "model.d_model=64", "model.dropout=0.2"])
    assert code == 2
    line = one_error_line(capsys)
    assert "`model.d_model` cannot be set with `init_from`" in line and "model.dropout" in line
    assert "model.dropout=0.2" not in line  # dropout may change


def test_rows_longer_than_the_imported_models_positions_are_refused(walkthrough, tmp_path, capsys):
    """The tiny Marian has 256 positions; a row is the text's tokens and </s>. A limit left at its
    default (256 here for the target) is lowered to fit; one given too high is refused."""
    code = cli.main(["train", "--data", str(walkthrough.dataset), "--output", str(tmp_path / "run"),
                     f"init_from={walkthrough.imported}", "batching.max_source_len=256"])
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
