"""Connecting to Ray: an existing cluster by address, or a local Ray started on demand.

Ray 2.60 turns token authentication on by default; a local Ray generates its token and a
remote cluster's token comes from Ray's own settings (`RAY_AUTH_TOKEN` or the token file),
so nothing here handles secrets. Ray Client (`ray://`) is avoided: flaky here.
"""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray.exceptions import RayTaskError

from pipelines.settings import Settings
from s2s_core.errors import S2SError


class ClusterError(S2SError):
    exit_code = 6


def ensure_ray(settings: Settings) -> None:
    """Connect once per process; reuse an existing connection (tests, flows calling flows)."""
    if ray.is_initialized():
        return
    address = settings.ray_address
    if address and address.startswith("ray://"):
        raise ClusterError(f"Ray Client address {address} is not supported: use the cluster's GCS "
                           "address (host:6379) or submit with the Ray Jobs API")
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            store = settings.local_ray_object_store_mb
            ray.init(num_cpus=settings.local_ray_cpus, include_dashboard=False,
                     object_store_memory=store * (1 << 20) if store else None,
                     logging_level=logging.WARNING, log_to_driver=False)
    except ConnectionError as err:
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {str(err).splitlines()[0]}") from None


def check_resources(workers: int, cpus_per_worker: float, gpus_per_worker: float) -> None:
    """Say now, instead of waiting forever, when the cluster cannot place the workers."""
    total = ray.cluster_resources()
    need = {"CPU": workers * cpus_per_worker, "GPU": workers * gpus_per_worker}
    for resource, amount in need.items():
        if amount > total.get(resource, 0):
            raise ClusterError(
                f"{workers} workers x {need[resource] / workers:g} {resource} need {amount:g} {resource}, "
                f"but the Ray cluster has {total.get(resource, 0):g}: lower --workers or add nodes")


def cluster_cpus() -> float:
    return float(ray.cluster_resources().get("CPU", 1.0))


def unwrap(error: BaseException) -> BaseException:
    """The user-level error inside a Ray task or Ray Train failure, so the CLI can print it in
    one line; `error` itself when there is none."""
    return _find_ours(error, depth=0) or error


def _find_ours(error: BaseException | None, depth: int) -> S2SError | None:
    if error is None or depth > 6:
        return None
    # A RayTaskError(InputError) is an InputError subclass whose message is Ray's traceback:
    # look inside it before taking the error itself.
    ray_wrapper = isinstance(error, ray.exceptions.RayTaskError)
    if isinstance(error, S2SError) and not ray_wrapper:
        return error
    inner = [getattr(error, "cause", None), getattr(error, "controller_failure", None), error.__cause__]
    inner += list(getattr(error, "worker_failures", {}).values())
    for candidate in inner:
        if isinstance(candidate, BaseException) and candidate is not error:
            found = _find_ours(candidate, depth + 1)
            if found is not None:
                return found
    return error if isinstance(error, S2SError) else None


def get(refs: Any) -> Any:
    """`ray.get` that re-raises our own errors from inside tasks unwrapped."""
    try:
        return ray.get(refs)
    except RayTaskError as err:
        raise unwrap(err) from None
