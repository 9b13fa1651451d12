"""Submitted corpora: one small JSON record per submission under `STATE/submissions/`.

A submission names a bulk job (task, model, input, output, options). Its id comes from the
task and the output, so one output never holds two submissions. States:

    pending    -> recorded; a flow run of the bulk deployment is created for it
    running    -> a `bulk_generate` run claimed it (its flow run id is recorded)
    done       -> that run finished: every input row is in the output exactly once
    failed     -> that run failed; the nightly flow (or `s2s submit` again) picks it up
    cancelled  -> its run was cancelled by someone: left alone

The decoding options are resolved and pinned when submitting, so whichever run processes it
(the one `submit` created, or a nightly retry) decodes exactly as checked. A run claims the
submission before working and refuses one that is done or held by another live run; the
nightly flow only takes submissions with no live run, at most MAX_ATTEMPTS times. (Two runs
racing anyway would still not duplicate rows: the bulk job commits each unit exactly once.)
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from pipelines.storage import NotFound, Storage, join
from s2s_core.errors import OutputError

State = Literal["pending", "running", "done", "failed", "cancelled"]
FOLDER = "submissions"
MAX_ATTEMPTS = 3


@dataclass(frozen=True, kw_only=True)
class Submission:
    id: str
    task: str
    model: str
    input: str
    output: str
    column: str = "source"
    id_column: str | None = None
    target_lang_column: str | None = None
    """Column of each row's target language code; None: the options' `target_lang` for every row."""
    options: list[str] = field(default_factory=list)
    """Every decoding option as `key=value`, resolved when submitting."""
    unit_mb: float = 32.0
    state: State = "pending"
    flow_run_id: str | None = None
    attempts: int = 0
    created_at: str = ""
    updated_at: str = ""
    error: str | None = None
    rows_out: int | None = None

    def bulk_parameters(self) -> dict:
        """The `bulk_submission` flow parameters that process this submission."""
        lang = {"target_lang_column": self.target_lang_column} if self.target_lang_column else {}
        return {"task": self.task, "model": self.model, "input": self.input, "output": self.output,
                "column": self.column, "id_column": self.id_column, "config_file": None,
                "overrides": list(self.options), "unit_mb": self.unit_mb, "submission": self.id, **lang}


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
            return Submission(**self.storage.read_json(self._uri(sub_id)))
        except NotFound:
            return None

    def save(self, submission: Submission) -> Submission:
        stamped = replace(submission, updated_at=_now(), created_at=submission.created_at or _now())
        self.storage.write_json(self._uri(stamped.id), asdict(stamped))
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

    def set_run(self, sub_id: str, flow_run_id: str) -> None:
        """Record the flow run created for a submission, unless a run already claimed it."""
        current = self.get(sub_id)
        if current is not None and current.flow_run_id is None:
            self.save(replace(current, flow_run_id=flow_run_id))

    def claim(self, sub_id: str, flow_run_id: str, is_live) -> Submission | None:
        """Mark a submission running under `flow_run_id`; None when it is not recorded.

        Raises:
            OutputError: it is done, or another flow run that `is_live(run_id)` holds it.
        """
        current = self.get(sub_id)
        if current is None:
            return None
        if current.state == "done":
            raise OutputError(current.output, f"already holds the results of submission {sub_id}")
        if current.flow_run_id not in (None, flow_run_id) and is_live(current.flow_run_id):
            raise OutputError(current.output, f"submission {sub_id} is being processed by flow run "
                                              f"{current.flow_run_id}")
        return self.save(replace(current, state="running", flow_run_id=flow_run_id, error=None,
                                 attempts=current.attempts + 1))
