"""Submitted corpora: one small JSON record per submission under `STATE/submissions/`.

A submission names a bulk job (task, model, input, output, options). Its id comes from the
task and the output, so one output never holds two submissions. States:

    pending  -> recorded; a flow run of the bulk deployment is created for it
    running  -> a `bulk_generate` run claimed it (its flow run id is recorded)
    done     -> that run finished: every input row is in the output exactly once
    failed   -> that run failed; the nightly flow (or `s2s submit` again) picks it up

The nightly flow processes a submission only when it is pending with no live flow run of its
own, or failed: so each is processed by one run at a time. (Two runs racing on the same
submission would still not duplicate rows: the bulk job commits each unit exactly once.)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from pipelines.storage import NotFound, Storage, join

State = Literal["pending", "running", "done", "failed"]
FOLDER = "submissions"


@dataclass(frozen=True, kw_only=True)
class Submission:
    id: str
    task: str
    model: str
    input: str
    output: str
    column: str = "source"
    id_column: str | None = None
    overrides: list[str] = field(default_factory=list)
    state: State = "pending"
    flow_run_id: str | None = None
    created_at: str = ""
    updated_at: str = ""
    error: str | None = None
    rows_out: int | None = None

    def bulk_parameters(self) -> dict:
        """The `bulk_generate` flow parameters that process this submission."""
        return {"task": self.task, "model": self.model, "input": self.input, "output": self.output,
                "column": self.column, "id_column": self.id_column, "overrides": list(self.overrides),
                "submission": self.id}


def submission_id(task: str, output: str) -> str:
    return "sub-" + hashlib.sha256(f"{task}\n{output.rstrip('/')}".encode()).hexdigest()[:12]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Registry:
    """The submission records under `state`/submissions (local directory or s3:// prefix)."""

    def __init__(self, storage: Storage, state: str) -> None:
        self.storage = storage
        self.folder = join(state, FOLDER)

    def _uri(self, sub_id: str) -> str:
        return join(self.folder, f"{sub_id}.json")

    def get(self, sub_id: str) -> Submission | None:
        try:
            return Submission(**json.loads(self.storage.read_bytes(self._uri(sub_id))))
        except NotFound:
            return None

    def save(self, submission: Submission) -> Submission:
        stamped = replace(submission, updated_at=_now(), created_at=submission.created_at or _now())
        self.storage.write_bytes(self._uri(stamped.id), (json.dumps(asdict(stamped), indent=2) + "\n").encode())
        return stamped

    def delete(self, sub_id: str) -> None:
        self.storage.delete(self._uri(sub_id))

    def all(self) -> list[Submission]:
        try:
            entries = self.storage.list(self.folder)
        except NotFound:
            return []
        found = (self.get(e.uri.rsplit("/", 1)[1].removesuffix(".json")) for e in entries if e.uri.endswith(".json"))
        return sorted((s for s in found if s is not None), key=lambda s: s.created_at)

    def mark(self, sub_id: str, state: State, **fields) -> Submission | None:
        """Set the state (and other fields) of a recorded submission; None when there is none."""
        current = self.get(sub_id)
        return None if current is None else self.save(replace(current, state=state, **fields))
