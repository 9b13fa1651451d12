"""Prefect flow `evaluate_model`: translate a test set with a model package and score it.

Writes OUTPUT/report.json (scores with their signatures, model id, test-set fingerprint, decoding
options, speed), OUTPUT/report.md (also attached to the run as a markdown artifact) and the
outputs. Translation: BLEU/chrF by sacrebleu on detokenized text, so they compare with published
sacrebleu numbers. Summarization: ROUGE-1/2/L F1 by rouge-score, stemming on. With a baseline
package, a paired bootstrap test says whether the difference between the two is significant.
"""

from __future__ import annotations

import datetime as dt

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from pipelines.evaluate.plan import EvalPlan, EvalRequest, TestSet, plan, read_test_set  # noqa: F401 - read_test_set: re-exported
from pipelines.packages import open_text_layer
from pipelines.progress import Progress
from pipelines.retry import io_task_options
from pipelines.settings import load_settings
from pipelines.storage import Storage, basename, join
from s2s_core.config import to_dict
from s2s_core.generation import GenerationConfig
from s2s_core.metrics import corpus_scores, paired_bootstrap

EXAMPLES = 5
"""Test sentences shown with their reference and output in the report."""
PROGRESS_CHUNK = 256
"""Sentences generated between two progress lines."""


@task
def plan_task(storage: Storage, request: EvalRequest) -> EvalPlan:
    return plan(storage, request)


def _run_name() -> str:
    from prefect.runtime import flow_run
    test = basename(str(flow_run.parameters.get("test", "test")).rstrip("/")).split(".")[0] or "test"
    return f"evaluate-{test}-{dt.date.today():%Y%m%d}"


@task
def generate(storage: Storage, task_name: str, model: str, config: GenerationConfig,
             sources: list[str]) -> tuple[list[str], float, dict]:
    """(outputs in input order, seconds, the engine that ran) of one model package on the test
    sources, with a progress line (decoding is batch-invariant, so generating in chunks changes
    no output)."""
    generator = open_text_layer(storage, model, task_name, config)
    progress = Progress(f"{task_name} {basename(model.rstrip('/'))}", len(sources), every=5.0)
    outputs: list[str] = []
    for start in range(0, len(sources), PROGRESS_CHUNK):
        results = generator(sources[start:start + PROGRESS_CHUNK])
        outputs += [result.text for result in results]
        progress.update(len(results), sentences=len(results), tokens=sum(r.tokens for r in results))
    return outputs, progress.finish(), generator.engine.describe()


@flow(name="evaluate_model", flow_run_name=_run_name)
def evaluate_model(model: str, test: str, output: str, task: str = "translate", metrics: list[str] | None = None,
                   baseline: str | None = None, config_file: str | None = None, overrides: list[str] | None = None,
                   bootstrap: int = 0, resamples: int = 1000) -> dict:
    """Score `model` on `test` (and, with `baseline`, test whether it beats that package; see
    `EvalRequest`); returns the report, also written to OUTPUT/report.json and .md, with the
    outputs in OUTPUT/outputs.txt."""
    settings = load_settings()
    storage = Storage(settings.s3)
    request = EvalRequest(model=model, test=test, output=output, task=task, metrics=metrics, baseline=baseline,
                          config_file=config_file, overrides=overrides or [], bootstrap=bootstrap, resamples=resamples)
    planned = plan_task.with_options(**io_task_options(settings))(storage, request)
    test_set = planned.test_set
    outputs, seconds, engine = generate(storage, task, planned.model, planned.config, test_set.sources)
    report = {"task": task, "model": planned.model, "model_id": planned.model_id, "test": planned.test,
              "test_fingerprint": test_set.fingerprint, "generation": to_dict(planned.config), "engine": engine,
              "metrics": planned.metrics,
              "scores": corpus_scores(outputs, test_set.references, planned.metrics, bootstrap),
              "speed": {"seconds": round(seconds, 2), "sentences_per_s": round(len(outputs) / max(seconds, 1e-9), 1)},
              "examples": [{"source": s, "reference": r, "output": o} for s, r, o in
                           zip(test_set.sources[:EXAMPLES], test_set.references[:EXAMPLES], outputs)]}
    if test_set.origins:
        report["by_origin"] = {origin: corpus_scores(*_subset(outputs, test_set, origin), planned.metrics)
                               for origin in sorted(set(test_set.origins))}
    if planned.baseline:
        baseline_outputs, _, _ = generate(storage, task, planned.baseline, planned.config, test_set.sources)
        report["comparison"] = {"baseline": planned.baseline, "baseline_id": planned.baseline_id,
                                "resamples": resamples,
                                "scores": paired_bootstrap(baseline_outputs, outputs, test_set.references,
                                                           planned.metrics, resamples)}
    write_report(storage, planned.output, report, outputs)
    return report


def write_report(storage: Storage, output: str, report: dict, outputs: list[str]) -> None:
    """report.json, report.md and outputs.txt under `output`, and the markdown as an artifact."""
    storage.write_json(join(output, "report.json"), report)
    storage.write_bytes(join(output, "report.md"), report_markdown(report).encode())
    storage.write_bytes(join(output, "outputs.txt"), "".join(f"{line}\n" for line in outputs).encode())
    create_markdown_artifact(report_markdown(report), key="evaluation-report",
                             description=f"{report['model_id']} on {report['test']}")


def _subset(hypotheses: list[str], test_set: TestSet, origin: str) -> tuple[list[str], list[str]]:
    chosen = [i for i, o in enumerate(test_set.origins or []) if o == origin]
    return [hypotheses[i] for i in chosen], [test_set.references[i] for i in chosen]


SCORE_NAMES = {"bleu": "BLEU", "chrf": "chrF", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}


def score_names(metrics: list[str]) -> list[str]:
    """Report keys of `metrics`: 'rouge' gives its three scores."""
    return [name for metric in metrics for name in (["rouge1", "rouge2", "rougeL"] if metric == "rouge" else [metric])]


def score_lines(report: dict) -> list[str]:
    """One printable line per score: 'BLEU = 31.2 ± 1.1  nrefs:1|...'."""
    scores, lines = report["scores"], []
    for name in score_names(report["metrics"]):
        ci = f" ± {scores[name + '_ci95']}" if name + "_ci95" in scores else ""
        signature = scores["signature"]["rouge" if name.startswith("rouge") else name]
        lines.append(f"{SCORE_NAMES[name]} = {scores[name]}{ci}  {signature}")
    if "rouge" in report["metrics"]:
        lines.append(f"output length {scores['output_words']} words (references {scores['reference_words']})")
    return lines


def report_markdown(report: dict) -> str:
    scores, names = report["scores"], score_names(report["metrics"])
    lines = [f"# Evaluation of `{report['model_id']}` ({report['task']})", "",
             f"test set `{report['test']}` (fingerprint {report['test_fingerprint']}, {scores['sentences']} sentences)",
             "", "| metric | score | signature |", "|---|---:|---|"]
    for name in names:
        ci = f" ± {scores[name + '_ci95']}" if name + "_ci95" in scores else ""
        signature = scores["signature"]["rouge" if name.startswith("rouge") else name].replace("|", "\\|")
        lines.append(f"| {SCORE_NAMES[name]} | {scores[name]}{ci} | `{signature}` |")
    for origin, by in report.get("by_origin", {}).items():
        values = " / ".join(str(by[name]) for name in names)
        lines.append(f"| {' / '.join(SCORE_NAMES[n] for n in names)} ({origin}, {by['sentences']} sentences) | {values} | |")
    if "rouge" in report["metrics"]:
        lines += ["", f"average output length {scores['output_words']} words; references {scores['reference_words']}"]
    if "comparison" in report:
        comparison = report["comparison"]
        lines += ["", f"## Against `{comparison['baseline_id']}` (paired bootstrap, {comparison['resamples']} resamples)",
                  "", "| metric | baseline | this model | difference | p-value |", "|---|---:|---:|---:|---:|"]
        for name, row in comparison["scores"].items():
            verdict = " (significant)" if row["p_value"] < 0.05 else ""
            lines.append(f"| {SCORE_NAMES[name]} | {row['baseline']} | {row['candidate']} | {row['delta']:+.2f} | "
                         f"{row['p_value']}{verdict} |")
    engine = report.get("engine", {})
    lines += ["", f"speed: {report['speed']['sentences_per_s']} sentences/s; beam {report['generation']['beam_size']}"
                  + (f"; engine {engine['engine']} ({engine['compute_type']})" if engine else "")]
    if report.get("examples"):
        lines += ["", "| source | reference | output |", "|---|---|---|"]
        lines += [f"| {markdown_cell(e['source'])} | {markdown_cell(e['reference'])} | {markdown_cell(e['output'])} |" for e in report["examples"]]
    return "\n".join(lines) + "\n"


def markdown_cell(text: str, limit: int = 160) -> str:
    """Text fit for one markdown table cell."""
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return text.replace("|", "\\|").replace("\n", " ")
