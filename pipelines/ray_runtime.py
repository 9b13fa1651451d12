"""Connecting to Ray: an existing cluster by address, or a local Ray started on demand.

Token authentication (Ray 2.60): a local Ray started here turns it on and writes its token to
`~/.ray/auth_token` if none exists. A driver connecting BY ADDRESS sends a token only when
`RAY_AUTH_MODE=token` is set in its environment (Ray never turns it on for an explicit address);
the token then comes from `RAY_AUTH_TOKEN`, else the file named by `RAY_AUTH_TOKEN_PATH`, else
`~/.ray/auth_token`. Ray reads these itself, so nothing here handles the secret; a refused or
missing token becomes one `ClusterError` line saying where the token goes (never its value).
Ray Client (`ray://`) is avoided: flaky here.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import time
from typing import Any, Iterator

import ray
from ray.exceptions import RayTaskError

from pipelines.settings import Settings
from s2s_core.errors import ClusterFailure, S2SError


class ClusterError(ClusterFailure):
    """Ray could not run the job: a worker or actor failed for good, or resources are missing."""


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
            with _warnings_to_ray_logs(quiet=not settings.debug):
                ray.init(num_cpus=settings.local_ray_cpus, include_dashboard=False,
                         object_store_memory=store * (1 << 20) if store else None,
                         logging_level=logging.WARNING, log_to_driver=False)
    except ray.exceptions.AuthenticationError as err:
        # Raised before connecting: token mode is on but no token was found (or an unreadable
        # RAY_AUTH_TOKEN_PATH); Ray's own text says which, without the secret.
        raise ClusterError(f"{err.message}: provide the cluster's token ({TOKEN_SOURCES})") from None
    except (ConnectionError, RuntimeError) as err:
        if _token_refused(err):
            raise ClusterError(_refused_message(address)) from None
        if isinstance(err, ConnectionError):
            raise ClusterError(f"cannot reach the Ray cluster at {address}: {str(err).splitlines()[0]}") from None
        raise


DRIVER_LOG = "s2s-driver-{pid}.log"
"""In the local Ray's session log directory: Ray's own warnings from this process."""


@contextlib.contextmanager
def _warnings_to_ray_logs(quiet: bool) -> Iterator[None]:
    """While a local Ray starts, and after: Ray's own log lines from this process go to its
    session log directory, not the terminal, so that a failing command prints its one line.
    Starting a local Ray always warns "Token authentication is enabled for this Ray cluster"
    (token auth stays on: only the notice moves). `quiet=False` (--debug) changes nothing; a
    cluster connected to by address keeps its warnings (they may be about that cluster)."""
    if not quiet:
        yield
        return
    logger = logging.getLogger("ray")
    consoles = [h for h in logger.handlers if type(h) is not logging.FileHandler]
    held = logging.handlers.MemoryHandler(capacity=10_000, flushLevel=logging.CRITICAL + 1)
    for handler in consoles:
        logger.removeHandler(handler)
    logger.addHandler(held)
    try:
        yield
    except BaseException:
        for handler in consoles:  # no Ray, no session directory: the CLI reports the failure
            logger.addHandler(handler)
        raise
    finally:
        logger.removeHandler(held)
        held.setTarget(_session_log())  # None (no session): they are dropped
        held.close()


def _session_log() -> logging.Handler | None:
    """A handler on this process's log file in the local Ray's session logs, added to Ray's logger."""
    try:
        directory = ray._private.worker._global_node.get_logs_dir_path()  # no public API for it
    except AttributeError:
        return None
    handler = logging.FileHandler(os.path.join(directory, DRIVER_LOG.format(pid=os.getpid())), delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s"))
    logging.getLogger("ray").addHandler(handler)
    return handler


TOKEN_SOURCES = "RAY_AUTH_TOKEN, a file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token"


def _token_refused(error: BaseException | None) -> bool:
    """Whether the cluster refused this process's token (or its lack of one). Ray retries for
    about 20 s, then raises a bare ConnectionError whose cause holds the reason as text."""
    for _ in range(4):
        if error is None:
            return False
        if "InvalidAuthToken" in str(error):
            return True
        error = error.__cause__
    return False


def _refused_message(address: str | None) -> str:
    """How to give this process the cluster's token (its value is never printed)."""
    if not _token_mode_on():
        return (f"the Ray cluster at {address} requires token authentication: set RAY_AUTH_MODE=token "
                f"and provide the cluster's token ({TOKEN_SOURCES})")
    return (f"the Ray cluster at {address} refused this process's authentication token: provide the "
            f"cluster's token ({TOKEN_SOURCES})")


def _token_mode_on() -> bool:
    # Ray's own reading of RAY_AUTH_MODE, so that this module reads no environment variable.
    from ray._raylet import AuthenticationMode, get_authentication_mode
    return get_authentication_mode() == AuthenticationMode.TOKEN


def check_resources(workers: int, cpus_per_worker: float, gpus_per_worker: float, scale_wait_s: float = 0) -> None:
    """Say now, instead of waiting forever, when the cluster cannot place the workers.

    On an autoscaling cluster (`scale_wait_s` > 0) the missing resources are first requested
    from the autoscaler, which has that long to add the nodes.
    """
    need = {"CPU": workers * cpus_per_worker, "GPU": workers * gpus_per_worker}
    short = _shortfall(need)
    if short and scale_wait_s > 0:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[{"CPU": cpus_per_worker, "GPU": gpus_per_worker} if gpus_per_worker
                                   else {"CPU": cpus_per_worker}] * workers)
        deadline = time.monotonic() + scale_wait_s
        while short and time.monotonic() < deadline:
            time.sleep(5)
            short = _shortfall(need)
    if short:
        resource, has = short
        waited = f" after waiting {scale_wait_s:g} s for the autoscaler" if scale_wait_s > 0 else ""
        raise ClusterError(
            f"{workers} workers x {need[resource] / workers:g} {resource} need {need[resource]:g} {resource}, "
            f"but the Ray cluster has {has:g}{waited}: lower --workers or add nodes")


def _shortfall(need: dict[str, float]) -> tuple[str, float] | None:
    """(resource, what the cluster has) for the first resource it has too little of, else None."""
    total = ray.cluster_resources()
    for resource, amount in need.items():
        if amount > total.get(resource, 0):
            return resource, float(total.get(resource, 0))
    return None


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
