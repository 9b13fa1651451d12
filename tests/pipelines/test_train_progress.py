"""The training progress line: its ETA follows whichever limit ends the run first."""

from __future__ import annotations

import io

from pipelines.train.job import ProgressPrinter

RECORD = {"loss": 5.0, "tokens_per_s": 1000.0, "padding": 0.1, "lr": 1e-3, "max_steps": 1_000_000}


def eta_of(line: str) -> str:
    return line.rsplit("ETA ", 1)[1].strip()


def test_eta_is_the_time_budget_when_it_ends_the_run_first():
    clock = iter([100.0, 110.0, 120.0])
    stream = io.StringIO()
    printer = ProgressPrinter(stream, clock=lambda: next(clock))
    printer.show({**RECORD, "step": 10, "time_left_s": 900.0})
    printer.show({**RECORD, "step": 20, "time_left_s": 890.0})  # 1 step/s: 999,980 s by steps
    printer.show({**RECORD, "step": 30, "max_steps": 40, "time_left_s": 880.0})  # 10 s by steps
    first, second, third = stream.getvalue().splitlines()
    assert eta_of(first) == "900s" and eta_of(second) == "890s" and eta_of(third) == "10s"


def test_eta_without_a_time_budget_comes_from_the_step_rate():
    clock = iter([0.0, 10.0])
    stream = io.StringIO()
    printer = ProgressPrinter(stream, clock=lambda: next(clock))
    printer.show({**RECORD, "step": 10, "max_steps": 100, "time_left_s": None})
    printer.show({**RECORD, "step": 20, "max_steps": 100, "time_left_s": None})
    assert [eta_of(line) for line in stream.getvalue().splitlines()] == ["?", "80s"]
