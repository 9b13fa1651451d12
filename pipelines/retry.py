"""Which failures a flow's tasks retry: transient I/O and cluster calls, never a user's mistake.

A missing file or a bad option fails the same way every time, so retrying it only delays the
one-line error; an unreachable S3 endpoint or a lost Ray node may be back a few seconds later.
"""

from __future__ import annotations

from typing import Any

from pipelines.settings import Settings
from pipelines.storage import StorageUnavailable
from s2s_core.errors import S2SError

# OSErrors that mean "this path is wrong", not "the network hiccuped".
PERMANENT_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)


def is_transient(error: BaseException) -> bool:
    """True for failures worth retrying: unreachable storage, network and Ray system errors."""
    from ray.exceptions import RayError, RayTaskError

    if isinstance(error, StorageUnavailable):
        return True
    if isinstance(error, RayTaskError):  # a task raised: judge what it raised, not the wrapper
        cause = getattr(error, "cause", None)
        return isinstance(cause, BaseException) and cause is not error and is_transient(cause)
    if isinstance(error, (S2SError, *PERMANENT_OS_ERRORS)):
        return False
    return isinstance(error, (ConnectionError, TimeoutError, OSError, RayError))


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's `retry_condition_fn`: retry only when the failure is transient."""
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        try:
            state.result(raise_on_failure=True)
        except BaseException as raised:  # noqa: BLE001 - we only classify it
            error = raised
    return error is not None and is_transient(error)


def io_task_options(settings: Settings) -> dict:
    """`Task.with_options` arguments for a task wrapping I/O or a cluster call."""
    return {"retries": settings.io_retries, "retry_delay_seconds": settings.io_retry_delay_s,
            "retry_condition_fn": retry_transient}
