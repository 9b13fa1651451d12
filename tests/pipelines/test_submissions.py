"""Submission records and which failures count as transient: plain functions, no servers."""

from __future__ import annotations

import pytest
from ray.exceptions import RayTaskError

from pipelines.orchestrate.submissions import Registry, Submission, submission_id
from pipelines.retry import is_transient
from pipelines.storage import Storage, StorageUnavailable
from s2s_core.errors import InputError, OutputError


@pytest.fixture
def registry(tmp_path) -> Registry:
    registry = Registry(Storage(), str(tmp_path / "state"))
    registry.save(Submission(id="sub-1", task="translate", model="m", input="i", output=str(tmp_path / "o")))
    return registry


def test_a_claim_marks_the_submission_running_and_counts_the_attempt(registry):
    claimed = registry.claim("sub-1", "run-a", is_live=lambda run: True)
    assert (claimed.state, claimed.flow_run_id, claimed.attempts) == ("running", "run-a", 1)
    assert registry.claim("sub-1", "run-a", is_live=lambda run: True).attempts == 2  # the same run, retried
    assert registry.claim("nope", "run-a", is_live=lambda run: True) is None


def test_a_claim_is_refused_when_another_live_run_holds_it_or_it_is_done(registry):
    registry.claim("sub-1", "run-a", is_live=lambda run: True)
    with pytest.raises(OutputError, match="being processed by flow run run-a"):
        registry.claim("sub-1", "run-b", is_live=lambda run: run == "run-a")
    assert registry.claim("sub-1", "run-b", is_live=lambda run: False).flow_run_id == "run-b"  # run-a is gone
    registry.mark("sub-1", "done")
    with pytest.raises(OutputError, match="already holds the results of submission sub-1"):
        registry.claim("sub-1", "run-c", is_live=lambda run: False)


def test_the_run_created_by_submit_never_displaces_one_that_claimed_first(registry):
    registry.claim("sub-1", "nightly-run", is_live=lambda run: True)
    registry.set_run("sub-1", "submitted-run")
    assert registry.get("sub-1").flow_run_id == "nightly-run" and registry.get("sub-1").state == "running"


def test_ids_follow_task_and_output_and_records_list_in_creation_order(registry, tmp_path):
    assert submission_id("translate", "s3://b/out/") == submission_id("translate", "s3://b/out")
    assert submission_id("translate", "s3://b/out") != submission_id("summarize", "s3://b/out")
    registry.save(Submission(id="sub-2", task="translate", model="m", input="i", output="o2"))
    assert [s.id for s in registry.all()] == ["sub-1", "sub-2"]


@pytest.mark.parametrize(("error", "transient"), [
    (StorageUnavailable("s3://b/k", "cannot reach the S3 endpoint http://x"), True),
    (ConnectionResetError("reset"), True),
    (TimeoutError("slow"), True),
    (InputError("s3://b/k", "not found"), False),
    (FileNotFoundError("gone"), False),
    (PermissionError("no"), False),
    (ValueError("a bug"), False),
    (RayTaskError("f", "traceback", ValueError("a bug in a task")), False),
    (RayTaskError("f", "traceback", ConnectionError("lost the node")), True),
], ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value))
def test_only_transient_failures_are_retried(error, transient):
    assert is_transient(error) is transient
