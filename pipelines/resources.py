"""The worker resources a stage is asked for (`--workers`, `--cpus-per-worker`, `--gpus-per-worker`),
checked the same way by every stage's plan before Ray starts (whether the cluster can place them
is `ray_runtime.check_resources`' question, asked once Ray is up)."""

from __future__ import annotations

import math


def resource_problems(workers: int, cpus_per_worker: float, gpus_per_worker: float) -> list[str]:
    """What is wrong with the numbers: at least one worker, CPUs > 0, GPUs >= 0, all finite."""
    out = [] if workers >= 1 else [f"`--workers` must be >= 1, but is {workers}"]
    if not gpus_per_worker >= 0:  # NaN fails too
        out.append(f"`--gpus-per-worker` must be >= 0, but is {gpus_per_worker}")
    elif not math.isfinite(gpus_per_worker):
        out.append(f"`--gpus-per-worker` must be a finite number, but is {gpus_per_worker}")
    if not (cpus_per_worker > 0 and math.isfinite(cpus_per_worker)):
        out.append(f"`--cpus-per-worker` must be a number > 0, but is {cpus_per_worker}")
    return out
