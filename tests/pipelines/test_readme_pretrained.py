"""The README's "Use a pretrained model" section, command by command as a user types them: import
a Marian checkpoint from a folder and an NLLB one from S3, translate quickly and in bulk (S3 to S3,
one language and one per row), fine-tune the Marian import on the committed slice, export it for
CTranslate2 and translate with the export.

The commands are read from the README itself, so the section cannot drift from what works. They
run in-process (`cli.main`) on the session's Ray, Prefect and S3 server, in a folder that holds
the section's inputs: tiny checkpoints of each layout built from random weights with real
tokenizers (nothing downloaded) and a Parquet file of real sentences with a language column.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import cli
from tests.conftest import REPO, SAMPLE
from tests.test_readme_tour import tour_commands

pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

SECTION = "Use a pretrained model"
BUCKETS = ("checkpoints", "models", "corpora", "out")
LANGUAGES = ["ita_Latn", "deu_Latn", "fra_Latn"]
ROWS = 24


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


def upload(client, folder: Path, bucket: str, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder)}")


@pytest.fixture
def workspace(tmp_path, monkeypatch, s3_env, pipeline, marian_checkpoint, spm_model) -> Path:
    """A folder with what the section's commands read, and the S3 buckets they name."""
    from tests.s2s_core.importers.conftest import build_nllb

    (tmp_path / "data").symlink_to(REPO / "data")
    shutil.copytree(marian_checkpoint, tmp_path / "checkpoints" / "opus-mt-en-it")
    client = s3_env.client()
    existing = {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}
    for bucket in BUCKETS:
        if bucket not in existing:
            s3_env.create_bucket(bucket)
    (tmp_path / "build").mkdir()
    upload(client, build_nllb(tmp_path / "build", spm_model).checkpoint, "checkpoints", "nllb-200")
    lines = (SAMPLE / "test.tsv").read_text(encoding="utf-8").splitlines()[:ROWS]
    table = pa.table({"id": [f"doc-{i}" for i in range(ROWS)], "source": [line.split("\t")[0] for line in lines],
                      "lang": [LANGUAGES[i % len(LANGUAGES)] for i in range(ROWS)]})
    pq.write_table(table, tmp_path / "docs.parquet", row_group_size=8)
    client.upload_file(str(tmp_path / "docs.parquet"), "corpora", "docs/part-00000.parquet")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def output_rows(client, prefix: str) -> list[dict]:
    listed = client.list_objects_v2(Bucket="out", Prefix=prefix)["Contents"]
    rows: list[dict] = []
    for item in listed:
        if item["Key"].endswith(".parquet"):
            body = client.get_object(Bucket="out", Key=item["Key"])["Body"].read()
            rows += pq.read_table(pa.BufferReader(body)).to_pylist()
    return rows


def test_the_pretrained_section_runs(workspace, s3_env, capsys):
    printed: dict[str, str] = {}
    for command in section_commands():
        capsys.readouterr()
        code = cli.main(shlex.split(command)[1:])
        out = capsys.readouterr()
        assert code == 0, f"{command}\n{out.out[-2000:]}\n{out.err[-2000:]}"
        printed[command] = out.out

    client = s3_env.client()
    single = output_rows(client, "docs-it/")
    assert sorted(row["id"] for row in single) == sorted(f"doc-{i}" for i in range(ROWS))  # every row once
    assert {row["target_lang"] for row in single} == {"ita_Latn"}
    fanned = output_rows(client, "docs-multi/")
    assert sorted(row["id"] for row in fanned) == sorted(f"doc-{i}" for i in range(ROWS))
    assert {row["id"]: row["target_lang"] for row in fanned} == {
        f"doc-{i}": LANGUAGES[i % len(LANGUAGES)] for i in range(ROWS)}

    tuned = workspace / "runs" / "opus-mt-en-it-tuned"
    losses = [json.loads(line)["valid_loss"] for line in (tuned / "metrics" / "valid.jsonl").read_text().splitlines()]
    assert len(losses) >= 2 and losses[-1] < losses[0]  # fine-tuning learns on the slice
    metadata = json.loads((tuned / "model" / "metadata.json").read_text())
    assert metadata["origin"]["family"] == "marian"
    assert (tuned / "model" / "ctranslate2" / "model.bin").is_file()
    quick = [printed[c] for c in printed if c.startswith("s2s translate") and "--text" in c]
    # One line per input (random weights may well translate to nothing: the line is still there).
    assert len(quick) >= 3 and all(text.count("\n") == 1 for text in quick)
