"""The demo's closing summary: one table over every stage, then example outputs; printed to the
terminal and written to SUMMARY.md (also a Prefect artifact)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.demo.plan import DemoPlan
from pipelines.evaluate.flow import SCORE_NAMES, markdown_cell, score_names


@dataclass
class DemoResults:
    plan: DemoPlan
    manifest: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    bulk: dict = field(default_factory=dict)
    curves_png: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each stage in this run (a reused stage takes seconds)."""


def summary_rows(results: DemoResults) -> list[tuple[str, str]]:
    """(what, value) rows of the summary table."""
    counts, train, report, bulk = results.manifest["counts"], results.train, results.evaluation, results.bulk
    splits = ", ".join(f"{name} {n:,}" for name, n in counts["splits"].items())
    rejected = sum(counts["rejected"].values())
    training_s = train.get("training_seconds") or 0.0
    tokens_per_s = train.get("tokens_seen", 0) / training_s if training_s else 0.0
    validation = train.get("validation") or {}
    scores = report["scores"]
    shown = ", ".join(f"{SCORE_NAMES[n]} {scores[n]}" for n in score_names(report["metrics"]))
    signatures = "; ".join(f"{name}: {signature}" for name, signature in scores["signature"].items())
    return [
        ("corpus", f"{counts['read']:,} pairs read -> {splits}; {rejected:,} rejected, {counts['duplicates']:,} "
                   f"duplicates"),
        ("training", f"{train.get('preset')}, {results.plan.max_steps} steps on {train.get('workers')} worker(s): "
                     f"{training_s:,.0f} s, {tokens_per_s:,.0f} tokens/s"),
        (f"validation (package: step {train.get('step')})",
         ", ".join(f"{k} {v:.2f}" for k, v in sorted(validation.items()) if isinstance(v, float))),
        ("curves", results.curves_png or "(none)"),
        (f"test ({scores['sentences']:,} sentences)", shown),
        ("signature", signatures),
        (f"bulk {results.plan.task}", _bulk_line(bulk)),
        ("stage times", ", ".join(f"{stage} {s:,.0f} s" for stage, s in results.seconds.items())),
    ]


def _bulk_line(bulk: dict) -> str:
    done = f"{bulk['rows_out']:,} rows ({bulk['error']} errors)"
    if bulk.get("units_this_run") == 0:
        return done + ": every unit was committed by an earlier run"
    throughput = bulk["throughput"]
    return (f"{done} in {throughput['seconds']} s: {throughput['rows_per_s']:,.1f} rows/s, "
            f"{throughput['tokens_per_s']:,.0f} tokens/s")


def summary_text(results: DemoResults) -> str:
    rows = summary_rows(results)
    width = max(len(label) for label, _ in rows)
    lines = ["", f"Demo summary ({results.plan.name}); also in {results.plan.local_root / 'SUMMARY.md'}",
             "-" * 78]
    lines += [f"{label:<{width}}  {value}" for label, value in rows]
    lines += ["-" * 78, "Examples from the test split (source / reference / output):"]
    for example in results.evaluation.get("examples", []):
        lines += [f"  > {example['source']}", f"  = {example['reference']}", f"  < {example['output']}", ""]
    return "\n".join(lines)


def summary_markdown(results: DemoResults) -> str:
    lines = [f"# Demo summary ({results.plan.name})", "", "| | |", "|---|---|"]
    lines += [f"| {label} | {markdown_cell(value)} |" for label, value in summary_rows(results)]
    if results.curves_png:
        lines += ["", "![training curves](curves.png)"]
    lines += ["", "## Examples from the test split", "", "| source | reference | output |", "|---|---|---|"]
    lines += [f"| {markdown_cell(e['source'])} | {markdown_cell(e['reference'])} | {markdown_cell(e['output'])} |"
              for e in results.evaluation.get("examples", [])]
    return "\n".join(lines) + "\n"
