"""Hostile input, class by class, through `pipelines.cli.main` in-process: each case exits with
its code from the README's table, prints at most one `error:` line naming the file, row or
field, and no traceback. Most fail in a stage's plan, before Ray or Prefect start (fast); the
few that need a worker or a flow are marked slow.

Classes: damaged test sets, damaged packages, damaged datasets and runs, numbers out of range,
outputs that would eat their own input; then (slow) a planted checkpoint, a valid test set with
Unicode line separators inside fields, and a damaged package reached through the evaluate flow.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipelines import cli
from pipelines.evaluate.plan import read_test_set
from pipelines.settings import load_settings
from pipelines.storage import Storage
from s2s_core import errors
from s2s_core.files import index_files
from tests.conftest import REPO, SAMPLE
from tests.pipelines.conftest import TINY


@dataclass
class World:
    """What a case builds its command line from: a scratch directory, the tiny package, a
    dataset that holds only a manifest and a tokenizer (all a train plan reads) and a test set."""

    tmp: Path
    package: Path
    data: Path
    tsv: Path

    def file(self, name: str, content: bytes | str) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    def parquet(self, name: str, columns: dict) -> str:
        pq.write_table(pa.table(columns), self.tmp / name)
        return str(self.tmp / name)

    def hostile_package(self, edit: Callable[[Path], object]) -> str:
        """A copy of the package, edited, with its metadata re-indexed: every checksum agrees."""
        copy = Path(shutil.copytree(self.package, self.tmp / "hostile-package"))
        edit(copy)
        metadata = json.loads((copy / "metadata.json").read_text())
        metadata["files"] = index_files(copy, exclude="metadata.json")
        (copy / "metadata.json").write_text(json.dumps(metadata))
        return str(copy)

    def translate(self, model: str, *options: str) -> list[str]:
        return ["translate", "--model", model, "--text", "Click the plus sign.", *options]

    def evaluate(self, *args: str, model: str | None = None) -> list[str]:
        base = {"--model": model or str(self.package), "--test": str(self.tsv), "--output": str(self.tmp / "eval")}
        flags = dict(zip(args[::2], args[1::2]))
        return ["evaluate", *[x for pair in {**base, **flags}.items() for x in pair]]

    def train(self, *args: str, data: str | None = None, output: str | None = None) -> list[str]:
        # The in-memory loader reads the text shards, of which this dataset has none: the
        # streaming one would first ask for token-id shards.
        return ["train", "--data", data or str(self.data), "--output", output or str(self.tmp / "run"),
                "batching.loader=memory", *args]

    def prepare(self, *args: str) -> list[str]:
        return ["prepare", *args, "tokenizer.enabled=false"]


def edit_config(**changes) -> Callable[[Path], None]:
    def edit(package: Path) -> None:
        config = json.loads((package / "config.json").read_text())
        (package / "config.json").write_text(json.dumps({**config, **changes}))
    return edit


def checkpoint_without_model_section(w: World, name: str) -> str:
    """A directory that passes a checkpoint's file check but whose config.json has no `model`."""
    directory = w.tmp / name
    directory.mkdir()
    (directory / "config.json").write_text('{"train": {}}')
    (directory / "trainer_state.json").write_text('{"step": 1}')
    (directory / "files.json").write_text(json.dumps(index_files(directory, exclude="files.json")))
    return str(directory)


def package_with_file_index(w: World, files: object) -> str:
    """A copy of the package whose metadata.json lists its files as `files`."""
    copy = Path(shutil.copytree(w.package, w.tmp / "indexed-package"))
    metadata = json.loads((copy / "metadata.json").read_text())
    (copy / "metadata.json").write_text(json.dumps({**metadata, "files": files}))
    return str(copy)


def dataset_with_a_damaged_shard(w: World) -> str:
    """A dataset whose manifest lists a test shard that is not Parquet."""
    w.file("ds/test/part-00000.parquet", b"not parquet")
    return str(Path(w.file("ds/manifest.json", json.dumps({"shards": {"test": [{"path": "test/part-00000.parquet"}]}}))).parent)


HUGE = edit_config(d_model=1_000_000_000, heads=1)
TOO_LARGE = "config.json: a transformer of about 2.4e+19 parameters needs about 9.60e+10 GB"

# (id, command line from the World, environment, exit code, what the one line must contain)
CASES: list[tuple[str, Callable[[World], list[str]], dict, int, list[str]]] = [
    # -- damaged test sets: the file and the line or row -------------------------------------------
    ("tsv-invalid-utf8", lambda w: w.evaluate("--test", w.file("bad.tsv", b"good\tbuono\nbad \xff byte\tx\n")),
     {}, 3, ["bad.tsv: line 2 is not UTF-8 text (byte 5 of the line: b'\\xff')"]),
    ("tsv-cut-utf8", lambda w: w.evaluate("--test", w.file("cut.tsv", b"a\tb\nc\td\ncaff\xc3\tx")),
     {}, 3, ["cut.tsv: line 3 is not UTF-8 text (byte 5"]),
    ("tsv-one-field", lambda w: w.evaluate("--test", w.file("one.tsv", "a\tb\nonly one field\n")),
     {}, 3, ["one.tsv: line 2 has 1 field"]),
    ("parquet-null-source", lambda w: w.evaluate("--test", w.parquet("n.parquet", {"source": ["a", None], "target": ["b", "c"]})),
     {}, 3, ["n.parquet: row 2: `source` is null"]),
    ("parquet-null-target", lambda w: w.evaluate("--test", w.parquet("t.parquet", {"source": ["a"], "target": pa.array([None], pa.string())})),
     {}, 3, ["t.parquet: row 1: `target` is null"]),
    ("parquet-numbers", lambda w: w.evaluate("--test", w.parquet("i.parquet", {"source": [1, 2], "target": ["b", "c"]})),
     {}, 3, ["i.parquet: row 1: `source` is int, not text"]),
    ("parquet-not-parquet", lambda w: w.evaluate("--test", w.file("junk.parquet", b"PAR1 but not really")),
     {}, 3, ["junk.parquet: is not a readable Parquet file (Parquet magic bytes not found"]),
    ("dataset-manifest-not-json", lambda w: w.evaluate("--test", str(Path(w.file("ds/manifest.json", "{")).parent)),
     {}, 3, ["ds/manifest.json: is not valid JSON"]),
    ("dataset-damaged-shard", lambda w: w.evaluate("--test", dataset_with_a_damaged_shard(w)),
     {}, 3, ["ds/test/part-00000.parquet: is not a readable Parquet shard"]),
    ("dataset-without-manifest", lambda w: w.evaluate("--test", str(Path(w.file("plain/notes.txt", "x")).parent)),
     {}, 3, ["plain: is not a test set"]),

    # -- damaged model packages: the file, with metadata that agrees ---------------------------------
    ("package-without-tokenizer", lambda w: w.translate(w.hostile_package(lambda p: shutil.rmtree(p / "tokenizer"))),
     {}, 3, ["tokenizer/settings.json: missing: the model package has no tokenizer"]),
    ("package-tokenizer-settings-not-json", lambda w: w.translate(w.hostile_package(
        lambda p: (p / "tokenizer/settings.json").write_text("{"))),
     {}, 3, ["tokenizer/settings.json: is not valid JSON"]),
    ("package-tokenizer-model-garbage", lambda w: w.translate(w.hostile_package(
        lambda p: (p / "tokenizer/spm.model").write_bytes(b"garbage"))),
     {}, 3, ["tokenizer: cannot be read as a tokenizer (RuntimeError: ", "spm.model"]),
    ("package-file-index-damaged", lambda w: w.translate(package_with_file_index(w, ["config.json"])),
     {}, 3, ["metadata.json: is not a file index of a model package"]),
    ("package-file-index-entry-damaged", lambda w: w.translate(package_with_file_index(w, {"config.json": {"bytes": "9"}})),
     {}, 3, ["metadata.json: is not a file index of a model package"]),
    ("package-config-not-json", lambda w: w.evaluate(model=w.hostile_package(lambda p: (p / "config.json").write_text("{"))),
     {}, 3, ["config.json: is not valid JSON"]),
    ("package-config-invalid", lambda w: w.translate(w.hostile_package(edit_config(heads=0))),
     {}, 3, ["config.json: invalid model config (`heads` must be >= 1, but is 0"]),
    ("package-too-large-translate", lambda w: w.translate(w.hostile_package(HUGE)),
     {}, 3, [TOO_LARGE, "more than the limit of 64.0 GB (S2S_MAX_MODEL_GB sets the limit)"]),
    ("package-too-large-evaluate", lambda w: w.evaluate(model=w.hostile_package(HUGE)), {}, 3, [TOO_LARGE]),
    ("package-too-large-baseline", lambda w: w.evaluate("--baseline", w.hostile_package(HUGE)), {}, 3, [TOO_LARGE]),
    ("package-too-large-export", lambda w: ["export", "--model", w.hostile_package(HUGE)], {}, 3, [TOO_LARGE]),
    ("package-too-large-average", lambda w: ["average", "--checkpoints", *[w.hostile_package(HUGE)] * 2,
                                             "--output", str(w.tmp / "avg")],
     {}, 3, [TOO_LARGE, "(S2S_MAX_MODEL_GB sets the limit)"]),
    ("package-above-a-lower-limit", lambda w: w.translate(str(w.package)), {"S2S_MAX_MODEL_GB": "0.0001"},
     3, ["config.json: a transformer of about", "more than the limit of 0.0001 GB"]),
    ("average-checkpoint-without-model", lambda w: ["average", "--checkpoints", checkpoint_without_model_section(w, "c1"),
                                                    checkpoint_without_model_section(w, "c2"), "--output", str(w.tmp / "avg")],
     {}, 3, ["c1/config.json: has no 'model' section"]),

    # -- damaged datasets and runs -----------------------------------------------------------------
    ("data-without-manifest", lambda w: w.train(data=str(Path(w.file("raw/a.tsv", "a\tb\n")).parent)),
     {}, 3, ["raw: no manifest.json: not a prepared dataset (run `s2s prepare` first)"]),
    ("data-manifest-not-json", lambda w: w.train(data=str(Path(w.file("d1/manifest.json", "{\"shards\"")).parent)),
     {}, 3, ["d1/manifest.json: is not valid JSON"]),
    ("data-manifest-a-list", lambda w: w.train(data=str(Path(w.file("d2/manifest.json", "[1]")).parent)),
     {}, 3, ["d2/manifest.json: is not a dataset manifest"]),
    ("data-manifest-shards-without-paths", lambda w: w.train(data=str(Path(w.file(
        "d3/manifest.json", '{"shards": {"train": [{"rows": 3}]}}')).parent)),
     {}, 3, ["d3/manifest.json: is not a dataset manifest"]),
    ("run-config-not-json", lambda w: w.train(output=str(Path(w.file("r/config.json", "{oops")).parent)),
     {}, 3, ["r/config.json: is not valid JSON"]),

    # -- numbers: every one checked before work starts ---------------------------------------------
    ("prepare-chunk-inf", lambda w: w.prepare("--input", str(w.tsv), "--output", str(w.tmp / "o"), "shards.chunk_mb=.inf"),
     {}, 2, ["`shards.chunk_mb` must be a finite number, but is inf"]),
    ("prepare-chunk-tiny", lambda w: w.prepare("--input", str(SAMPLE / "train.tsv"), "--output", str(w.tmp / "o"),
                                               "shards.chunk_mb=1e-9"),
     {}, 2, ["`shards.chunk_mb` 1e-09 cuts", "chunks, more than 100,000: raise it"]),
    ("prepare-shards-tiny", lambda w: w.prepare("--input", str(w.tsv), "--output", str(w.tmp / "o"),
                                                "shards.input_mb_per_shard=1e-12"),
     {}, 2, ["`shards.input_mb_per_shard` 1e-12 gives", "shards", "more than 100,000"]),
    ("prepare-vocab-huge", lambda w: w.prepare("--input", str(w.tsv), "--output", str(w.tmp / "o"),
                                               "tokenizer.vocab_size=10000000000"),
     {}, 2, ["`tokenizer.vocab_size` must be <= 1000000, but is 10000000000"]),
    ("decode-length-inf", lambda w: w.translate(str(w.package), "max_len_a=.inf"),
     {}, 2, ["`max_len_a` must be a finite number, but is inf"]),
    ("decode-length-nan", lambda w: w.translate(str(w.package), "max_len_a=.nan"),
     {}, 2, ["`max_len_a` must be a finite number, but is nan"]),
    ("decode-penalty-temperature-nan", lambda w: w.translate(str(w.package), "length_penalty=.nan", "temperature=.nan"),
     {}, 2, ["`length_penalty` must be a finite number, but is nan", "`temperature` must be a finite number"]),
    ("decode-beam-huge", lambda w: w.translate(str(w.package), "beam_size=100000"),
     {}, 2, ["`beam_size` must be <= 256, but is 100000"]),
    ("decode-search-memory", lambda w: w.translate(str(w.package), "beam_size=200", "max_tokens=200000"),
     {}, 2, ["`beam_size` 200 with `max_tokens` 200000 needs up to", "GB of search tensors per batch, more than 8.0 GB"]),
    ("decode-seed-overflow", lambda w: w.translate(str(w.package), "seed=100000000000000000000000", "sampling=true",
                                                   "beam_size=1"),
     {}, 2, ["`seed` must be in [0, 2**64)"]),
    ("evaluate-resamples", lambda w: w.evaluate("--resamples", "-1", "--bootstrap", "-7"),
     {}, 2, ["`--bootstrap` must be in [0, 10000], but is -7", "`--resamples` must be in [1, 10000], but is -1"]),
    ("evaluate-bootstrap-huge", lambda w: w.evaluate("--bootstrap", "1000000000"),
     {}, 2, ["`--bootstrap` must be in [0, 10000], but is 1000000000"]),
    ("evaluate-decoding-inf", lambda w: [*w.evaluate(), "max_len_a=.inf"],
     {}, 2, ["`max_len_a` must be a finite number, but is inf"]),
    ("train-model-huge", lambda w: w.train("preset=transformer-tiny", "model.d_model=1000000000", "model.heads=1"),
     {}, 2, ["model: a transformer of about 2.4e+19 parameters", "to train (weights, gradients, optimiser state)",
             "(S2S_MAX_MODEL_GB sets the limit)"]),
    ("train-lr-inf", lambda w: w.train("optim.lr=.inf", "model.dropout=.nan"),
     {}, 2, ["`optim.lr` must be a finite number, but is inf", "`model.dropout` must be in [0, 1), but is nan"]),
    ("train-above-a-lower-limit", lambda w: w.train("preset=transformer-tiny"), {"S2S_MAX_MODEL_GB": "0.001"},
     2, ["model: a transformer of about", "more than the limit of 0.001 GB"]),
    ("limit-not-a-number", lambda w: w.translate(str(w.package)), {"S2S_MAX_MODEL_GB": "lots"},
     2, ["S2S_MAX_MODEL_GB must be a number > 0 (GB), but is 'lots'"]),

    # -- outputs that would eat their own input ----------------------------------------------------
    ("prepare-output-inside-input", lambda w: w.prepare("--input", str(Path(w.file("corpus/a.tsv", "a\tb\n")).parent),
                                                        "--output", str(w.tmp / "corpus/out")),
     {}, 4, ["corpus/out: is inside the input", "a rerun would read its own outputs"]),
    ("prepare-output-is-input", lambda w: w.prepare("--input", str(w.tsv), "--output", str(w.tsv)),
     {}, 4, ["test.tsv: is also the input"]),
    ("prepare-output-holds-test", lambda w: w.prepare("--input", str(w.tsv), "--test", w.file("held/out/t.tsv", "a\tb\n"),
                                                      "--output", str(w.tmp / "held")),
     {}, 4, ["held: holds the input", "--overwrite would delete it"]),
    ("train-output-inside-data", lambda w: w.train(output=str(w.data / "run")), {}, 4, ["data/run: is inside the input"]),
    ("train-output-is-data", lambda w: w.train(output=str(w.data)), {}, 4, ["data: is also the input"]),
    ("evaluate-output-is-test", lambda w: w.evaluate("--output", str(w.tsv)), {}, 4, ["test.tsv: is also the input"]),
    ("evaluate-output-inside-dataset", lambda w: w.evaluate("--test", str(w.data), "--output", str(w.data / "eval")),
     {}, 4, ["data/eval: is inside the input"]),
    ("evaluate-output-is-a-file", lambda w: w.evaluate("--output", w.file("report.json", "{}")),
     {}, 4, ["report.json: is a file"]),
    ("average-output-is-a-checkpoint", lambda w: ["average", "--checkpoints", str(w.package), str(w.tmp / "other"),
                                                  "--output", str(w.package)],
     {}, 4, ["is also the input"]),
]


@pytest.fixture(scope="module")
def manifest_only_dataset(tiny_package, tmp_path_factory) -> Path:
    """A dataset with a manifest and the tiny package's tokenizer, and no shards: everything the
    train plan reads, so its checks run without preparing data."""
    data = tmp_path_factory.mktemp("hostile") / "data"
    shutil.copytree(tiny_package / "tokenizer", data / "tokenizer")
    files = [{"path": f"tokenizer/{p.name}", "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
             for p in sorted((data / "tokenizer").iterdir())]
    manifest = {"dataset_id": "manifest-only", "shards": {"train": [], "valid": [], "test": []},
                "tokenizer": {"files": files}}
    (data / "manifest.json").write_text(json.dumps(manifest))
    return data


@pytest.fixture
def world(tiny_package, manifest_only_dataset, tmp_path) -> World:
    tsv = tmp_path / "test.tsv"
    tsv.write_text("".join(line + "\n" for line in (SAMPLE / "dev.tsv").read_text(encoding="utf-8").split("\n")[:3]))
    return World(tmp_path, tiny_package, manifest_only_dataset, tsv)


def one_error(capsys) -> str:
    """The one `error:` line on stderr ('' if none); there is never a traceback."""
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    lines = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(lines) <= 1, captured.err
    return lines[0] if lines else ""


@pytest.mark.parametrize("argv, environment, code, fragments", [case[1:] for case in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_is_one_line_with_its_exit_code(world, capsys, monkeypatch, argv, environment, code, fragments):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    command = argv(world)
    assert cli.main(command) == code
    line = one_error(capsys)
    for fragment in fragments:
        assert fragment in line, line
    assert "internal error" not in line


def test_debug_shows_the_traceback_with_the_same_exit_code(world):
    # In a process of its own: --debug leaves Prefect's console logging verbose for the rest of
    # the process it first imports Prefect in, which later in-process cases would then print.
    bad = world.file("bad.tsv", b"bad \xff\tx\n")
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "--debug", *world.evaluate("--test", bad)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "Traceback" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {bad}: line 1 is not UTF-8")


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x1c", "\x1d", "\x1e", "\x85", "\v", "\f"])
def test_a_test_set_splits_lines_on_newline_only(tmp_path, separator):
    text = f"\ufeffhello{separator}world\tciao{separator}mondo\r\nsecond\tsecondo\n"
    (tmp_path / "test.tsv").write_text(text, encoding="utf-8")
    test_set = read_test_set(Storage(load_settings().s3), str(tmp_path / "test.tsv"))
    assert test_set.sources == [f"hello{separator}world", "second"]
    assert test_set.references == [f"ciao{separator}mondo", "secondo"]


# --- through Ray Train and Prefect ----------------------------------------------------------------

class Planted:
    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
@pytest.mark.usefixtures("pipeline")
def test_a_planted_pickle_in_a_checkpoint_is_named_and_never_runs(dataset, two_workers, tmp_path, capsys):
    """In a copy of the session's reference run, the last checkpoint's optimizer.pt replaced by a
    pickle that runs a command, files.json updated to match: the worker refuses it, and the
    CheckpointError it raises reaches the CLI as itself."""
    output = tmp_path / "run"
    shutil.copytree(two_workers, output)
    checkpoint = output / "checkpoints" / "checkpoint-0000020"
    Planted.marker = str(tmp_path / "pwned")
    torch.save({"optimizer": Planted(), "scheduler": {}}, checkpoint / "optimizer.pt")
    (checkpoint / "files.json").write_text(json.dumps(index_files(checkpoint, exclude="files.json")))
    capsys.readouterr()
    code = cli.main(["train", "--data", str(dataset), "--output", str(output), "--max-failures", "0", *TINY,
                     "max_steps=30"])
    line = one_error(capsys)
    assert code == 3, line
    assert line.startswith(f"error: {checkpoint}/optimizer.pt: is not a plain state dict (Trying to load "
                           "unsupported GLOBAL posix.system")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("pipeline")
def test_evaluate_keeps_fields_with_unicode_separators_and_names_a_damaged_package(world, capsys):
    test = world.file("separators.tsv", "one\u2028two\tuno\u2028due\nthree\x85four\ttre\x1cquattro\n")
    assert cli.main(world.evaluate("--test", test, "--output", str(world.tmp / "ok")) + ["max_len_a=0", "max_len_b=3"]) == 0
    assert json.loads((world.tmp / "ok" / "report.json").read_text())["scores"]["sentences"] == 2
    capsys.readouterr()
    broken = world.hostile_package(lambda p: shutil.rmtree(p / "tokenizer"))
    assert cli.main(world.evaluate("--output", str(world.tmp / "broken"), model=broken)) == 3
    assert "tokenizer/settings.json: missing: the model package has no tokenizer" in one_error(capsys)


def test_every_error_kind_has_the_exit_code_of_the_readme_table():
    """The CLI's one table (`cli.EXIT_CODES`) against the README's errors table."""
    readme = (REPO / "README.md").read_text()
    documented = {int(code) for code in re.findall(r"^\| (\d) \| ", readme, flags=re.MULTILINE)}
    kinds = {errors.ConfigError(["x"]): 2, errors.InputError("u", "r"): 3, errors.CheckpointError("u", "r"): 3,
             errors.OutputError("u", "r"): 4, errors.StorageFailure("u", "r"): 5, errors.ClusterFailure("x"): 6,
             errors.OrchestrationFailure("x"): 7, errors.S2SError("x"): 1}
    for error, code in kinds.items():
        assert cli.exit_code(error) == code, type(error).__name__
    assert {code for code in kinds.values() if code != 1} <= documented
