"""Domain errors. Each carries the fields it is about, and its message is one line.

Every error a user can cause is (a subclass of) one of the kinds below. Code raises the most
precise kind and never prints or exits itself: the CLI (`pipelines.cli.EXIT_CODES`, the one
table of exit codes) turns an error into its one line and the code of its kind.
"""

from __future__ import annotations


class S2SError(Exception):
    """Base class for every error a user can cause and fix.

    Errors cross process boundaries (Ray tasks raise them, the driver reports them), so each
    subclass whose constructor is not `(message)` says how to rebuild it in `__reduce__`.
    """


class ConfigError(S2SError):
    """One or more invalid configuration values, reported together."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = f"invalid configuration: {self.problems[0]}"
        else:
            message = f"invalid configuration ({len(self.problems)} problems): " + "; ".join(self.problems)
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.problems,))


class LocationError(S2SError):
    """A problem with one file, object or location: `uri` names it, `reason` says what is wrong."""

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = uri
        self.reason = reason
        super().__init__(f"{uri}: {reason}")

    def __reduce__(self):
        return (type(self), (self.uri, self.reason))


class InputError(LocationError):
    """A whole input cannot be used (missing, empty, wrong columns, misaligned...)."""


class OutputError(LocationError):
    """The output location cannot be used as asked (e.g. it holds a different dataset)."""


class CheckpointError(LocationError):
    """A checkpoint or model package is missing, truncated, corrupted or incompatible."""


class StorageFailure(LocationError):
    """Storage could not do what was asked (access denied, unreachable, ...): see pipelines.storage."""


class ClusterFailure(S2SError):
    """The Ray cluster cannot run the job as asked: see pipelines.ray_runtime."""


class OrchestrationFailure(S2SError):
    """The Prefect API or a deployment cannot be used as asked: see pipelines.orchestrate."""

