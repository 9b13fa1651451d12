"""`make demo QUICK=1` as a user runs it (the `s2s demo` process it starts): every stage on local
Ray and Prefect's ephemeral API, the summary, the reuse of valid outputs, CLEAN, and the
summarization variant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


class Demo:
    """One `s2s demo --quick` process as a user starts it, its output in a file beside `output`."""

    def __init__(self, output: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "RAY_ADDRESS", "S2S_DEMO"))}
        env.update(PREFECT_HOME=str(output / ".prefect-home"), S2S_LOCAL_RAY_CPUS="2",
                   PREFECT_SERVER_ANALYTICS_ENABLED="false")
        self.log = output / f"demo-{time.monotonic_ns()}.log"
        self.started = time.monotonic()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli", "demo", "--quick", "--output", str(output), *args],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    def finish(self) -> tuple[str, float]:
        """(what it printed, seconds) once it exits 0."""
        try:
            code = self.process.wait(timeout=max(1.0, 600 - (time.monotonic() - self.started)))
        finally:
            self.stop()
        seconds = time.monotonic() - self.started
        printed = self.log.read_text(errors="replace")
        assert code == 0, printed[-4000:]
        return printed, seconds

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def run_demo(output: Path, *args: str) -> tuple[str, float]:
    return Demo(output, *args).finish()


class SummarizationDemo:
    """The summarization demo (after CLEAN), started once: by the translation test beside its
    second run, which mostly reuses outputs and leaves a core idle (about 25 s saved; that run
    only gets slower, so its `second_s < first_s` stays as strict), or else by its own test."""

    def __init__(self, output: Path) -> None:
        self.output, self.demo = output, None

    @property
    def root(self) -> Path:
        return self.output / "summarize-quick"

    def start(self) -> None:
        if self.demo is None:
            (self.root / "train").mkdir(parents=True)
            (self.root / "train" / "config.json").write_text("{}")  # an earlier run's leftovers: CLEAN drops them
            self.demo = Demo(self.output, "--task", "summarize", "--clean")

    def finish(self) -> str:
        self.start()
        return self.demo.finish()[0]


@pytest.fixture(scope="module")
def summarization_demo(tmp_path_factory):
    demo = SummarizationDemo(tmp_path_factory.mktemp("summarization-demo"))
    yield demo
    if demo.demo is not None:
        demo.demo.stop()


def test_quick_demo_runs_every_stage_then_reuses_them(tmp_path, summarization_demo):
    printed, first_s = run_demo(tmp_path)
    root = tmp_path / "translate-quick"
    for stage in range(1, 6):
        assert f"=== [{stage}/5]" in printed
    assert "tok/s" in printed and "ETA" in printed and "rows (" in printed  # progress of train and bulk
    summary = (root / "SUMMARY.md").read_text()
    unescaped = summary.replace("\\|", "|")
    for row in ("| corpus | 6,000 pairs read -> train 5,000, valid 500, test 500", "| training | transformer-tiny, 120 steps",
                "| test (500 sentences) | BLEU ", "| signature | bleu: nrefs:1|", "| bulk translate | 500 rows (0 errors)"):
        assert row in unescaped, row
    assert summary.count("\n| ") >= 8 + 5  # the table, then five examples
    assert (root / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((root / "evaluation" / "report.json").read_text())
    assert report["scores"]["signature"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    bulk = json.loads((root / "bulk" / "_SUCCESS").read_text())
    assert bulk["rows_out"] == 500 == bulk["ok"] and bulk["model_id"] == report["model_id"]
    assert "Demo summary (translate-quick)" in printed and len(report["examples"]) == 5
    print(f"quick demo: {first_s:.0f} s")

    summarization_demo.start()
    printed, second_s = run_demo(tmp_path)
    assert "reusing the finished training run" in printed and "reusing the evaluation report" in printed
    assert "already holds this dataset" in printed
    assert json.loads((root / "bulk" / "_SUCCESS").read_text())["units_this_run"] == 0
    assert second_s < first_s


def test_quick_summarization_demo_scores_rouge_after_clean(summarization_demo):
    root = summarization_demo.root
    printed = summarization_demo.finish()
    assert "CLEAN=1: removing" in printed and "reusing" not in printed and "already holds" not in printed
    report = json.loads((root / "evaluation" / "report.json").read_text())
    assert report["task"] == "summarize" and report["metrics"] == ["rouge"]
    test_rows = json.loads((root / "dataset" / "manifest.json").read_text())["counts"]["splits"]["test"]
    assert report["generation"]["no_repeat_ngram_size"] == 3 and report["scores"]["sentences"] == test_rows > 190
    assert "ROUGE-1" in (root / "SUMMARY.md").read_text() and "rouge-score:0.1.2" in printed
    bulk = json.loads((root / "bulk" / "_SUCCESS").read_text())
    assert bulk["task"] == "summarize" and bulk["rows_out"] == test_rows


@pytest.mark.parametrize(("variables", "expected"), [
    ([], "s2s demo --task translate"),
    (["QUICK=1", "CLEAN=1", "TASK=summarize"], "s2s demo --task summarize --quick --clean"),
    (["QUICK=0"], "s2s demo --task translate"),
])
def test_make_demo_passes_its_variables(variables, expected):
    planned = subprocess.run(["make", "-n", "demo", *variables], cwd=REPO, capture_output=True, text=True, check=True)
    (line,) = [line for line in planned.stdout.splitlines() if "s2s demo" in line]
    assert line.split("bin/", 1)[1].strip() == expected
