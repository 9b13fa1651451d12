"""Prefect flow `demo`: the whole pipeline on the committed sample, each stage a flow of its own
(prepare_corpus -> train_model -> evaluate_model -> bulk_generate), then a summary.

A second run reuses every stage whose output is still valid: prepare and bulk do that by
themselves (same dataset id; committed units), training is skipped when the run at its output
finished with the same config, evaluation when its report is for the same model, test set and
decoding options.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from pipelines.datasets import read_manifest
from pipelines.demo.plan import DemoPlan, demo_plan
from pipelines.demo.summary import DemoResults, summary_markdown, summary_text
from pipelines.evaluate.flow import evaluate_model
from pipelines.evaluate.plan import read_test_set
from pipelines.generate.flow import bulk_generate
from pipelines.packages import package_id
from pipelines.prepare.flow import prepare_corpus
from pipelines.settings import load_settings
from pipelines.storage import NotFound, Storage, join
from pipelines.train import plan as train_plan
from pipelines.train.flow import train_model
from s2s_core.config import to_dict
from s2s_core.generation.config import resolve_generation


def _stage(number: int, title: str) -> float:
    print(f"\n=== [{number}/5] {title} ===", file=sys.stderr, flush=True)
    return time.monotonic()


@flow(name="demo", flow_run_name="demo-{task}")
def demo(task: str = "translate", quick: bool = False, local_root: str = "demo-output",
         data_root: str | None = None) -> DemoResults:
    """Run (or reuse) every stage of the demo of `task`, writing under `data_root` (default:
    `local_root`); returns what the summary shows."""
    plan = demo_plan(task, quick, Path(local_root), data_root)
    plan.local_root.mkdir(parents=True, exist_ok=True)
    storage = Storage(load_settings().s3)
    results = DemoResults(plan=plan)

    started = _stage(1, f"prepare: clean, deduplicate, split, shard, tokenizer -> {plan.uri('dataset')}")
    results.manifest = prepare_corpus(inputs=[plan.train_file], output=plan.uri("dataset"),
                                      valid_inputs=[plan.valid_file] if plan.valid_file else [],
                                      test_inputs=[plan.test_file], overrides=plan.prepare_overrides, overwrite=True)
    results.seconds["prepare"] = time.monotonic() - started

    started = _stage(2, f"train: {plan.max_steps} steps on {plan.train_workers} Ray Train worker(s) -> "
                        f"{plan.uri('train')}")
    results.train = _train(storage, plan)
    results.seconds["train"] = time.monotonic() - started

    model, test = join(plan.uri("train"), "model"), plan.uri("dataset")
    started = _stage(3, f"evaluate on the test split -> {plan.uri('evaluation')}")
    results.evaluation = _evaluate(storage, plan, model, test)
    results.seconds["evaluate"] = time.monotonic() - started

    started = _stage(4, f"bulk {plan.task}: the test split with a Ray actor pool -> {plan.uri('bulk')}")
    results.bulk = bulk_generate(task=plan.task, model=model, input=join(test, "test"), output=plan.uri("bulk"),
                                 id_column="id", workers=plan.bulk_workers, overrides=plan.decoding_overrides,
                                 overwrite=True, unit_mb=0.01)
    results.seconds["bulk"] = time.monotonic() - started

    _stage(5, "report")
    results.curves_png = _local_curves(storage, plan)
    markdown = summary_markdown(results)
    (plan.local_root / "SUMMARY.md").write_text(markdown, encoding="utf-8")
    create_markdown_artifact(markdown, key="demo-summary", description=f"make demo ({plan.name})")
    print(summary_text(results), flush=True)
    return results


def _train(storage: Storage, plan: DemoPlan) -> dict:
    """The model package's metadata, training only when no finished run is there to reuse."""
    if _training_done(storage, plan):
        print("reusing the finished training run (same config)", file=sys.stderr)
        return storage.read_json(join(plan.uri("train"), "model", "metadata.json"))
    # overwrite: a run with another config at the demo's own output is an older demo; start over.
    return train_model(data=plan.uri("dataset"), output=plan.uri("train"), overrides=plan.train_overrides,
                       workers=plan.train_workers, overwrite=True)


def _evaluate(storage: Storage, plan: DemoPlan, model: str, test: str) -> dict:
    """The evaluation report, evaluating only when no report for the same inputs is there."""
    report = _reusable_report(storage, plan, model, test)
    if report is not None:
        print("reusing the evaluation report (same model, test set and decoding options)", file=sys.stderr)
        return report
    return evaluate_model(model=model, test=test, output=plan.uri("evaluation"), task=plan.task,
                          overrides=plan.decoding_overrides)


def _training_done(storage: Storage, plan: DemoPlan) -> bool:
    """The run at the train output finished `max_steps` with exactly this config."""
    train, model = train_plan.resolve_config(None, plan.train_overrides)
    manifest = read_manifest(storage, plan.uri("dataset"))
    model = train_plan.fit_vocabulary(model, storage, plan.uri("dataset"), manifest)
    wanted = json.loads(json.dumps(train_plan.run_config_of(train, model, plan.uri("dataset"), manifest)))
    try:
        existing = storage.read_json(join(plan.uri("train"), "config.json"))
        storage.read_bytes(join(plan.uri("train"), "model", "metadata.json"))  # the package exists
        logged = storage.read_bytes(join(plan.uri("train"), "metrics", "train.jsonl")).decode().splitlines()
    except NotFound:
        return False
    # The package is the best validated step; the training log's last line is the last step run.
    last_step = json.loads(logged[-1])["step"] if logged else 0
    return existing == wanted and last_step >= plan.max_steps


def _reusable_report(storage: Storage, plan: DemoPlan, model: str, test: str) -> dict | None:
    """The existing evaluation report if it is for this model, test set and decoding options."""
    try:
        report = storage.read_json(join(plan.uri("evaluation"), "report.json"))
    except NotFound:
        return None
    config = resolve_generation(None, plan.decoding_overrides, plan.task)
    same = (report.get("model_id") == package_id(storage, model)
            and report.get("test_fingerprint") == read_test_set(storage, test).fingerprint
            and report.get("generation") == to_dict(config) and report.get("task") == plan.task)
    return report if same else None


def _local_curves(storage: Storage, plan: DemoPlan) -> str | None:
    """The training curves PNG, copied next to SUMMARY.md (it lives in S3 with S2S_DEMO_S3=1)."""
    try:
        data = storage.read_bytes(join(plan.uri("train"), "metrics", "curves.png"))
    except NotFound:
        return None
    path = plan.local_root / "curves.png"
    path.write_bytes(data)
    return str(path)
