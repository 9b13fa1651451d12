"""Counts the rows each process hands to the text layer, for bench/bulk_vs_ray_data.py.

On PYTHONPATH with S2S_BENCH_CALLS set (a directory), every Python process that imports
`s2s_core.generation.text` (Ray workers of both systems included: they inherit the variable)
appends one line per `TextGenerator.__call__` to `<dir>/calls-<pid>.txt`:

    start <pid> <rows> <unix time>      before generating
    end <pid> <rows> <unix time>        after

Nothing else changes: the call itself runs as before. Rows started more than once (a worker killed
mid-batch, a batch retried) are the rows recomputed; `end` times give the rate past start-up.
Processes that never import the text layer (Ray's own services) load nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import time

TARGET = "s2s_core.generation.text"


def _log(directory: str, event: str, rows: int) -> None:
    with open(os.path.join(directory, f"calls-{os.getpid()}.txt"), "a") as out:
        out.write(f"{event} {os.getpid()} {rows} {time.time():.3f}\n")


def _patch(module, directory: str) -> None:
    original = module.TextGenerator.__call__

    def counted(self, texts, *args, **kwargs):  # the same call, whatever options it grows
        _log(directory, "start", len(texts))
        results = original(self, texts, *args, **kwargs)
        _log(directory, "end", len(texts))
        return results

    module.TextGenerator.__call__ = counted


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when the text layer is imported, wraps its loader to patch it."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)  # once: the real finders locate the module
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            _patch(module, self.directory)

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("S2S_BENCH_CALLS"):
    os.makedirs(os.environ["S2S_BENCH_CALLS"], exist_ok=True)
    sys.meta_path.insert(0, _Finder(os.environ["S2S_BENCH_CALLS"]))
