"""Claiming an output location: the one rule every stage follows before it writes.

Each stage's output holds a record of what it is (a dataset's manifest, a training run's
config, a bulk job's identity). Running a stage again on the same output:
- with the same identity continues (or finds the work done);
- with a different identity, or into a location with files that are not ours, is refused
  unless `--overwrite`, which deletes what the stage owns there first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pipelines.storage import NotFound, Storage, absolute, basename, join
from s2s_core.errors import OutputError

Differences = Callable[[dict, dict], list[str]]
"""(recorded identity, new identity) -> what differs, as short phrases; [] when the same."""


def differing_keys(old: dict, new: dict) -> list[str]:
    """The top-level keys whose values differ."""
    return [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


@dataclass(frozen=True)
class OutputKind:
    """How one stage's output is recognised and replaced."""

    what: str
    """What the output holds, for messages: 'dataset', 'training run', 'bulk job'."""
    record: str
    """The file (relative to the output) whose content is the identity."""
    owned: tuple[str, ...] = ()
    """Entries (relative names) the stage writes and `--overwrite` deletes; () means everything."""
    differences: Differences = differing_keys

    def is_owned(self, output: str, uri: str) -> bool:
        """Whether `uri` is one of the named entries (with owned=(), nothing is known to be ours
        until the record says so)."""
        return any(uri == join(output, name) or uri.startswith(join(output, name) + "/")
                                     for name in self.owned)


def check_output(storage: Storage, output: str, kind: OutputKind, identity: dict, overwrite: bool) -> dict | None:
    """Whether the stage may write to `output`: returns the recorded identity when it matches
    (continue or done), None when the output is new or may be replaced.

    Raises:
        OutputError: another identity or foreign files are there and `overwrite` is off.
    """
    storage.check_bucket(output)
    try:
        recorded = storage.read_json(join(output, kind.record))
    except NotFound:
        recorded = None
    if recorded is None:
        foreign = [entry.uri for entry in _listing(storage, output) if not kind.is_owned(output, entry.uri)]
        if foreign and not overwrite:
            raise OutputError(output, f"is not empty and holds no {kind.what} ({basename(foreign[0])}, ...); "
                                      "use another --output, or --overwrite to replace it")
        return None
    changed = kind.differences(recorded, identity)
    if not changed:
        return recorded
    if not overwrite:
        raise OutputError(output, f"holds a {kind.what} with a different {', '.join(changed[:5])}; "
                                  "use another --output, or --overwrite to replace it")
    return None


def claim_output(storage: Storage, output: str, kind: OutputKind, identity: dict, overwrite: bool,
                 write_record: bool = True) -> dict | None:
    """`check_output`, then make room: unless the identity matches, delete what the stage owns
    there (leftovers of an unfinished run included). With `write_record`, record `identity`
    (a stage that writes its record last, like prepare's manifest, passes False).
    Returns the recorded identity when it matched, else None."""
    recorded = check_output(storage, output, kind, identity, overwrite)
    if recorded is None:
        for name in kind.owned or ("",):
            storage.delete(join(output, name) if name else output, recursive=True)
    if write_record:
        storage.write_json(join(output, kind.record), identity)
    return recorded


def check_apart(inputs: list[str], output: str) -> None:
    """Refuse an output that is one of the inputs, lies inside one, or holds one: a rerun would
    read its own outputs (local paths and s3:// prefixes alike; URIs are compared absolute).

    Raises:
        OutputError: naming the output and the input it collides with.
    """
    out = _as_prefix(output)
    for uri in inputs:
        source = _as_prefix(uri.split("*", 1)[0] if "*" in uri else uri)  # a glob: its fixed part
        if out == source:
            raise OutputError(output, f"is also the input {uri}: give an --output of its own")
        if out.startswith(source):
            raise OutputError(output, f"is inside the input {uri}: a rerun would read its own outputs; "
                                      "give an --output outside it")
        if source.startswith(out):
            raise OutputError(output, f"holds the input {uri}: --overwrite would delete it; "
                                      "give an --output that does not contain the input")


def _as_prefix(uri: str) -> str:
    """`uri` absolute, with one trailing '/', so that prefix tests respect name boundaries."""
    return absolute(uri).rstrip("/") + "/"


def _listing(storage: Storage, output: str) -> list[Any]:
    try:
        return storage.list(output)
    except NotFound:
        return []
