"""The promoted model: STATE/models/current.json points at a package copied under ROOT/models/.

`s2s submit` without `--model` uses it; the nightly flow replaces it when a new model scores
better. The pointer is one small object written whole, so readers see the old or the new one.
"""

from __future__ import annotations

import datetime as dt
import json

from pipelines.storage import NotFound, Storage, join

POINTER = ("models", "current.json")


def current(storage: Storage, state: str) -> dict | None:
    """{'model': URI, 'package_id', 'scores', 'promoted_at'} of the promoted model, or None."""
    try:
        return json.loads(storage.read_bytes(join(state, *POINTER)))
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
    storage.write_bytes(join(state, *POINTER), (json.dumps(pointer, indent=2) + "\n").encode())
    return target
