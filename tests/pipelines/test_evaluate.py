"""`s2s evaluate` on real sentences with a real Prefect API: signed scores, a report, and the
same scores every time."""

from __future__ import annotations

import json

import pytest

from pipelines import cli
from tests.conftest import SAMPLE
from tests.pipelines.test_train import read_artifact

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("pipeline")]
FAST = ["max_len_a=0", "max_len_b=6", "beam_size=2"]


@pytest.fixture
def test_tsv(tmp_path):
    """30 real dev pairs, with an origin column (two origins)."""
    lines = (SAMPLE / "dev.tsv").read_text(encoding="utf-8").splitlines()[:30]
    path = tmp_path / "test.tsv"
    path.write_text("".join(f"{line}\t{'a' if i % 2 else 'b'}\n" for i, line in enumerate(lines)), encoding="utf-8")
    return path


def test_evaluate_prints_signed_scores_writes_a_report_and_repeats_exactly(tiny_package, test_tsv, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert cli.main(["evaluate", "--model", str(tiny_package), "--test", str(test_tsv), "--output", str(first), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "BLEU = " in printed and "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" in printed
    report = json.loads((first / "report.json").read_text())
    assert report["scores"]["sentences"] == 30 and set(report["by_origin"]) == {"a", "b"}
    assert sum(by["sentences"] for by in report["by_origin"].values()) == 30
    assert report["generation"]["beam_size"] == 2 and len(report["test_fingerprint"]) == 16
    markdown = (first / "report.md").read_text()
    assert report["scores"]["signature"]["bleu"].replace("|", "\\|") in markdown
    assert read_artifact("evaluation-report").data == markdown

    assert cli.main(["evaluate", "--model", str(tiny_package), "--test", str(test_tsv), "--output", str(second), *FAST]) == 0
    again = json.loads((second / "report.json").read_text())
    assert again["scores"] == report["scores"] and again["by_origin"] == report["by_origin"]


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--test", "missing.tsv"], 3, "missing.tsv: not found"),
    (["--task", "summarize"], 2, "only translation is scored so far"),
])
def test_bad_evaluate_input_is_one_line(tiny_package, test_tsv, tmp_path, capsys, args, code, message):
    base = {"--model": str(tiny_package), "--test": str(test_tsv), "--output": str(tmp_path / "out")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = str(tmp_path / value) if flag == "--test" else value
    assert cli.main(["evaluate", *[x for pair in base.items() for x in pair]]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
