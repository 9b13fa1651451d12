"""`s2s import` on Hugging Face checkpoints built locally (random weights, a real tokenizer): an
imported Marian translates and runs in a bulk job on S3 exactly once, an imported BART summarizes
(quick, bulk) and is evaluated, and bad checkpoints are refused in one line with nothing left at
--output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipelines import cli
from pipelines.storage import Storage
from tests.conftest import SAMPLE
from tests.pipelines.test_generate import FAST, output_rows, success

pytest.importorskip("transformers")


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_an_imported_package_translates_text(marian_checkpoint, tmp_path, capsys):
    package = tmp_path / "pkg"
    assert cli.main(["import", "--from", str(marian_checkpoint), "--output", str(package)]) == 0
    assert "marian checkpoint" in capsys.readouterr().out
    origin = json.loads((package / "metadata.json").read_text())["origin"]
    assert origin["family"] == "marian" and origin["source"] == str(marian_checkpoint)
    assert cli.main(["translate", "--model", str(package), "--text", "Open the file.", "--text", "Close it.",
                     *FAST]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


@pytest.mark.parametrize("damage, code, named", [
    (lambda d: (d / "config.json").write_text(json.dumps({**json.loads((d / "config.json").read_text()),
                                                          "model_type": "t5"})), 3, "t5"),
    (lambda d: (d / "model.safetensors").unlink(), 3, "model.safetensors"),
    (lambda d: (d / "vocab.json").unlink(), 3, "vocab.json"),
])
def test_a_bad_checkpoint_is_one_line_and_leaves_nothing(marian_checkpoint, tmp_path, capsys, damage, code, named):
    broken = tmp_path / "broken"
    shutil.copytree(marian_checkpoint, broken)
    damage(broken)
    assert cli.main(["import", "--from", str(broken), "--output", str(tmp_path / "pkg")]) == code
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("error:") and named in lines[0]
    assert not (tmp_path / "pkg").exists()


def test_pickled_weights_need_allow_pickle(marian_checkpoint, tmp_path, capsys):
    import safetensors.torch
    import torch

    pickled = tmp_path / "pickled"
    shutil.copytree(marian_checkpoint, pickled)
    torch.save(safetensors.torch.load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    assert cli.main(["import", "--from", str(pickled), "--output", str(tmp_path / "pkg")]) == 3
    assert "pytorch_model.bin" in error_lines(capsys)[0] and not (tmp_path / "pkg").exists()
    assert cli.main(["import", "--from", str(pickled), "--output", str(tmp_path / "pkg"), "--allow-pickle"]) == 0
    assert "weights_only=True" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.usefixtures("pipeline")
def test_import_from_s3_and_bulk_translate_on_s3_exactly_once(marian_checkpoint, s3_env):
    storage = Storage(s3_env.settings())
    bucket = s3_env.create_bucket("imported")
    storage.upload_tree(marian_checkpoint, f"s3://{bucket}/hf")
    lines = [f"row{i}\tSentence number {i} to translate." for i in range(30)]
    storage.write_bytes(f"s3://{bucket}/in.tsv", ("\n".join(lines) + "\n").encode())
    assert cli.main(["import", "--from", f"s3://{bucket}/hf", "--output", f"s3://{bucket}/pkg"]) == 0
    assert cli.main(["translate", "--model", f"s3://{bucket}/pkg", "--input", f"s3://{bucket}/in.tsv",
                     "--output", f"s3://{bucket}/out", "--column", "1", "--id-column", "0", *FAST]) == 0
    rows = output_rows(f"s3://{bucket}/out", storage)
    assert sorted(r["id"] for r in rows) == sorted(f"row{i}" for i in range(30))
    assert success(f"s3://{bucket}/out", storage)["ok"] == 30


@pytest.fixture(scope="module")
def bart_package(tmp_path_factory) -> Path:
    """A tiny BART checkpoint (random weights, a byte-level BPE trained on the slice), imported."""
    from tests.s2s_core.importers.conftest import build_bart, read_pairs

    root = tmp_path_factory.mktemp("bart")
    checkpoint = build_bart(root, read_pairs("train.tsv")).checkpoint
    assert cli.main(["import", "--from", str(checkpoint), "--output", str(root / "pkg")]) == 0
    return root / "pkg"


@pytest.mark.slow
@pytest.mark.usefixtures("pipeline")
def test_an_imported_bart_summarizes_quickly_in_bulk_and_is_evaluated(bart_package, tmp_path, capsys):
    """The summarization side of the import: `s2s summarize` (quick and bulk) and `s2s evaluate
    --task summarize` on real documents, with the summarize preset's options."""
    documents = tmp_path / "documents.tsv"
    lines = (SAMPLE.parent / "summarization-en" / "test.tsv").read_text(encoding="utf-8").splitlines()[:12]
    documents.write_text("\n".join(f"doc{i}\t{line}" for i, line in enumerate(lines)) + "\n", encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["summarize", "--model", str(bart_package), "--text", lines[0].split("\t")[0], *FAST]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1

    out = tmp_path / "summaries"
    assert cli.main(["summarize", "--model", str(bart_package), "--input", str(documents), "--output", str(out),
                     "--id-column", "0", "--column", "1", *FAST]) == 0
    assert sorted(row["id"] for row in output_rows(str(out))) == sorted(f"doc{i}" for i in range(12))
    assert success(str(out))["ok"] == 12

    (tmp_path / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    report_dir = tmp_path / "report"
    assert cli.main(["evaluate", "--task", "summarize", "--model", str(bart_package), "--test",
                     str(tmp_path / "test.tsv"), "--output", str(report_dir), *FAST]) == 0
    report = json.loads((report_dir / "report.json").read_text())
    assert report["metrics"] == ["rouge"] and {"rouge1", "rouge2", "rougeL"} <= set(report["scores"])
    assert len((report_dir / "outputs.txt").read_text(encoding="utf-8").splitlines()) == 12
