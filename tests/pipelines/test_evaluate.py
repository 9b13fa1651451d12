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


def test_comparison_mode_tests_the_difference_between_two_packages(tiny_package, test_tsv, tmp_path, capsys):
    other = tiny_package.parent / "seed1"
    if not other.exists():
        rebuild_with_seed(tiny_package, other, seed=1)
    out = tmp_path / "compare"
    assert cli.main(["evaluate", "--model", str(other), "--baseline", str(tiny_package), "--test", str(test_tsv),
                     "--output", str(out), "--metrics", "bleu,chrf,rouge", "--resamples", "200", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "ROUGE-1 = " in printed and "vs baseline" in printed
    report = json.loads((out / "report.json").read_text())
    comparison = report["comparison"]
    assert set(comparison["scores"]) == {"bleu", "chrf", "rouge1", "rouge2", "rougeL"}
    assert comparison["baseline_id"] != report["model_id"] and comparison["resamples"] == 200
    # The candidate's side of the comparison is this report's own score; the baseline's side is
    # what evaluating the baseline alone gives.
    assert comparison["scores"]["chrf"]["candidate"] == report["scores"]["chrf"]
    alone = tmp_path / "alone"
    assert cli.main(["evaluate", "--model", str(tiny_package), "--test", str(test_tsv), "--output", str(alone),
                     "--metrics", "chrf,rouge", *FAST]) == 0
    baseline = json.loads((alone / "report.json").read_text())["scores"]
    assert comparison["scores"]["chrf"]["baseline"] == baseline["chrf"]
    assert comparison["scores"]["rouge1"]["baseline"] == baseline["rouge1"]
    for row in comparison["scores"].values():
        assert row["delta"] == pytest.approx(row["candidate"] - row["baseline"], abs=0.011)
        assert 0 < row["p_value"] <= 1
    assert "paired bootstrap, 200 resamples" in (out / "report.md").read_text()
    assert len((out / "outputs.txt").read_text().splitlines()) == 30


def test_summarize_task_scores_rouge_with_the_summarize_preset(tiny_package, tmp_path, capsys):
    lines = (SAMPLE.parent / "summarization-en" / "test.tsv").read_text(encoding="utf-8").splitlines()[:12]
    test = tmp_path / "summaries.tsv"
    test.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "summaries"
    assert cli.main(["evaluate", "--task", "summarize", "--model", str(tiny_package), "--test", str(test),
                     "--output", str(out), "beam_size=2", "max_len_b=5"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"] == ["rouge"] and "bleu" not in report["scores"]
    assert {"rouge1", "rouge2", "rougeL", "output_words", "reference_words"} <= set(report["scores"])
    assert report["generation"]["no_repeat_ngram_size"] == 3 and report["generation"]["max_len_b"] == 5
    assert "rouge-score:0.1.2|stemmer:porter" in capsys.readouterr().out
    assert "| ROUGE-L |" in read_artifact("evaluation-report").data


def rebuild_with_seed(package, target, seed: int):
    """The same tiny architecture and tokenizer as `package`, other random weights."""
    import torch

    from s2s_core.models import build_model
    from s2s_core.package import load_package, save_package

    loaded = load_package(package)
    torch.manual_seed(seed)
    save_package(target, build_model(loaded.config), loaded.config, package / "tokenizer", {"note": f"seed {seed}"})


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--test", "missing.tsv"], 3, "missing.tsv: not found"),
    (["--metrics", "bleu,meteor"], 2, "unknown metric 'meteor'"),
    (["--baseline", "nowhere"], 3, "is not a model package"),
    (["preset=poetry"], 2, "unknown decoding preset 'poetry'"),
])
def test_bad_evaluate_input_is_one_line(tiny_package, test_tsv, tmp_path, capsys, args, code, message):
    base = {"--model": str(tiny_package), "--test": str(test_tsv), "--output": str(tmp_path / "out")}
    flags = [a for a in args if "=" not in a]
    for flag, value in zip(flags[::2], flags[1::2]):
        base[flag] = str(tmp_path / value) if flag in ("--test", "--baseline") else value
    argv = ["evaluate", *[x for pair in base.items() for x in pair], *[a for a in args if "=" in a]]
    assert cli.main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
