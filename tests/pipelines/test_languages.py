"""Languages of multilingual imported models from the command line: `--source-lang`/`--target-lang`
for quick use and bulk jobs, checked against the package's codes before anything loads, and a
per-row `--target-lang-column` that fans one bulk job out into several languages."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import cli
from s2s_core.generation import Translator
from s2s_core.generation.config import resolve_generation
from s2s_core.package import load_package
from tests.conftest import SAMPLE
from tests.pipelines.test_generate import output_rows, success
from tests.pipelines.test_train import error_line
from tests.s2s_core.importers.conftest import build_marian, build_nllb

pytest.importorskip("transformers")

GREEDY = ["beam_size=1", "max_len_a=0", "max_len_b=8", "engine=torch"]
LANGUAGES = ["ita_Latn", "deu_Latn", "fra_Latn"]


@pytest.fixture(scope="module")
def nllb_package(tmp_path_factory, spm_model) -> Path:
    return build_nllb(tmp_path_factory.mktemp("nllb"), spm_model).package.directory


@pytest.fixture(scope="module")
def marian_package(tmp_path_factory, spm_model) -> Path:
    return build_marian(tmp_path_factory.mktemp("marian"), spm_model).package.directory


def sentences(count: int) -> list[str]:
    lines = (SAMPLE / "test.tsv").read_text(encoding="utf-8").splitlines()
    return [line.split("\t")[0] for line in lines if 0 < len(line.split("\t")[0]) <= 120][:count]


def quick(package: Path, texts: list[str], code: str) -> list[str]:
    """What the text layer gives `texts` in language `code` with the same options."""
    config = resolve_generation(None, [*GREEDY, f"target_lang={code}"], "translate")
    return [r.text for r in Translator(load_package(package), config)(texts)]


def test_text_takes_languages_and_an_unknown_code_is_one_line_with_the_closest(nllb_package, capsys):
    args = ["translate", "--model", str(nllb_package), "--text", "Open the file.", *GREEDY]
    assert cli.main([*args, "--source-lang", "eng_Latn", "--target-lang", "deu_Latn"]) == 0
    assert capsys.readouterr().out == quick(nllb_package, ["Open the file."], "deu_Latn")[0] + "\n"
    assert cli.main([*args, "--target-lang", "deu_latn"]) == 2
    assert error_line(capsys) == ("error: invalid configuration: `target_lang`: unknown language code 'deu_latn' for "
                                  "this model (closest: deu_Latn; 202 codes in all)")
    assert cli.main([*args, "target_lang=it"]) == 2
    assert "unknown language code 'it' for this model (closest: ita_Latn" in error_line(capsys)
    assert cli.main([*args, "--target-lang-column", "lang"]) == 2
    assert "`--target-lang-column` needs --input" in error_line(capsys)


def test_a_marian_model_given_a_language_refuses_in_one_line(marian_package, tmp_path, capsys):
    text = ["translate", "--model", str(marian_package), "--text", "Open the file.", "--target-lang", "ita"]
    assert cli.main(text) == 2
    assert error_line(capsys) == (
        "error: invalid configuration: `target_lang`: this marian model has no language codes to choose from "
        "(languages are for multilingual imported models: NLLB, M2M-100, mBART, multilingual Marian)")
    source = tmp_path / "in.jsonl"
    source.write_text('{"source": "Open the file.", "lang": "ita"}\n')
    bulk = ["translate", "--model", str(marian_package), "--input", str(source), "--output", str(tmp_path / "out")]
    assert cli.main([*bulk, "--target-lang-column", "lang"]) == 2  # refused by the plan, before Ray starts
    assert "`--target-lang-column`: this marian model has no language codes" in error_line(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("pipeline")
def test_a_bulk_job_fans_rows_out_into_their_languages(nllb_package, tmp_path, capsys):
    texts = sentences(45)
    langs: list[str | None] = [LANGUAGES[i % 3] for i in range(len(texts))]
    langs[10], langs[20] = "ita_latn", None  # an unknown code and no code: row-level rejects
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": texts, "lang": langs}), source,
                   row_group_size=10)
    output = tmp_path / "out"
    job = ["translate", "--model", str(nllb_package), "--input", str(source), "--output", str(output),
           "--column", "text", "--id-column", "id", "--unit-mb", "0.0005", *GREEDY]
    assert cli.main([*job, "--target-lang-column", "lang"]) == 0
    rows = {r["id"]: r for r in output_rows(str(output))}
    assert sorted(rows) == sorted(f"r{i}" for i in range(len(texts)))  # every row once
    assert rows["r10"]["error"] == ("target language 'ita_latn': unknown language code 'ita_latn' for this model "
                                    "(closest: ita_Latn; 202 codes in all)")
    assert rows["r20"]["error"] == "target language: null" and rows["r20"]["output"] is None
    assert [rows[f"r{i}"]["target_lang"] for i in range(len(texts))] == langs
    summary = success(str(output))
    assert (summary["ok"], summary["error"], summary["units"] > 1) == (len(texts) - 2, 2, True)
    for code in LANGUAGES:  # each row in its own language: as a quick translation into it
        members = [i for i, lang in enumerate(langs) if lang == code]
        assert [rows[f"r{i}"]["output"] for i in members] == quick(nllb_package, [texts[i] for i in members], code)
    italian = quick(nllb_package, texts[:9], "ita_Latn")
    assert sum(rows[f"r{i}"]["output"] != italian[i] for i in range(9) if langs[i] != "ita_Latn") >= 3

    again = ["translate", "--model", str(nllb_package), "--input", str(source), "--output", str(tmp_path / "it"),
             "--column", "text", "--id-column", "id", *GREEDY]
    assert cli.main([*again, "--target-lang", "ita_Latn"]) == 0  # one language for the whole job
    italian_rows = output_rows(str(tmp_path / "it"))
    assert {r["target_lang"] for r in italian_rows} == {"ita_Latn"} and all(r["error"] is None for r in italian_rows)
    assert cli.main([*again, "--target-lang", "ita_Latn", "--target-lang-column", "lang"]) == 2
    assert "give one" in error_line(capsys)
