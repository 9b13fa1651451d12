"""The promoted model: ROOT/models/current.json points at a package copied under ROOT/models/.

Each nightly ROOT (say en-it and en-de) compares against and replaces its own pointer; the last
promotion is also written to STATE/models/current.json, the model `s2s submit` uses without
`--model`. A pointer is one small object written whole: readers see the old or the new one.
"""

from __future__ import annotations

import datetime as dt

from pipelines.storage import NotFound, Storage, join

POINTER = ("models", "current.json")


def current(storage: Storage, where: str) -> dict | None:
    """{'model': URI, 'package_id', 'scores', 'promoted_at'} of the model promoted under
    `where` (a nightly ROOT, or STATE for the latest of all), or None."""
    try:
        return storage.read_json(join(where, *POINTER))
    except NotFound:
        return None


def promote(storage: Storage, state: str, root: str, package: str, package_id: str, scores: dict) -> str:
    """Copy `package` to ROOT/models/PACKAGE_ID and point STATE/models/current.json at it."""
    target = join(root, "models", package_id)
    prefix = package.rstrip("/") + "/"
    for entry in storage.list(package):
        storage.write_bytes(join(target, entry.uri[len(prefix):]), storage.read_bytes(entry.uri))
    pointer = {"model": target, "package_id": package_id, "scores": scores, "source": package,
               "promoted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    for where in (root, state):
        storage.write_json(join(where, *POINTER), pointer)
    return target
