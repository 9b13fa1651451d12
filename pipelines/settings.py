"""Settings from the environment: the ONE module that reads environment variables.

S2S_* variables configure the project; S3 credentials follow the standard AWS chain
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, profiles, instance roles),
which pyarrow and boto3 resolve themselves when no explicit key is set here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import Mapping

from s2s_core.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class S3Settings:
    """How to reach S3 or an S3-compatible server. Secrets never appear in `repr`."""

    endpoint_url: str | None = None
    """e.g. http://127.0.0.1:8333 for a local server; None means AWS itself."""
    region: str = "us-east-1"
    access_key: str | None = field(default=None, repr=False)
    """None lets pyarrow/boto3 use the standard AWS credential chain."""
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the pipelines take from the environment, read once."""

    s3: S3Settings
    ray_address: str | None = None
    """Address of an existing Ray cluster; None starts a local Ray on demand."""
    local_ray_cpus: int | None = None
    """CPUs for a local Ray started on demand (None: all of this machine's)."""
    local_ray_object_store_mb: int | None = None
    """Object store of a local Ray started on demand (None: Ray's default share of memory)."""
    state: str = "~/.s2s"
    """Where orchestration keeps its records (submissions, the local Prefect server's database
    and address): a local directory or an s3:// prefix shared by `serve`, `submit` and `status`."""
    prefect_api_url: str | None = None
    """PREFECT_API_URL: a Prefect server to use; None lets `serve` start a local one."""
    io_retries: int = 2
    """Retries of a flow's I/O and cluster-call tasks after a transient failure."""
    io_retry_delay_s: float = 10.0
    """Seconds between those retries."""
    scale_wait_s: float = 0.0
    """On an autoscaling Ray cluster: seconds to wait for the autoscaler to add the nodes a job
    needs before saying it cannot be placed (0: say it at once)."""
    max_model_gb: str | None = None
    """S2S_MAX_MODEL_GB: the largest model, by estimated memory in GB, that a run may train or
    a package may load (None: s2s_core's default, 64); read as given, checked where used
    (`max_model_bytes`), so that a bad value is one error line like any other."""
    debug: bool = False
    demo_s3: bool = False
    """`make demo` writes to a local SeaweedFS S3 server that it starts and stops."""


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from `environ` (default: the process environment)."""
    env = os.environ if environ is None else environ
    s3 = S3Settings(
        endpoint_url=env.get("S2S_S3_ENDPOINT") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
        region=env.get("S2S_S3_REGION") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        access_key=env.get("AWS_ACCESS_KEY_ID"),
        secret_key=env.get("AWS_SECRET_ACCESS_KEY"),
        session_token=env.get("AWS_SESSION_TOKEN"),
    )
    cpus = env.get("S2S_LOCAL_RAY_CPUS")
    object_store = env.get("S2S_LOCAL_RAY_OBJECT_STORE_MB")
    return Settings(
        s3=s3,
        ray_address=env.get("S2S_RAY_ADDRESS") or env.get("RAY_ADDRESS") or None,
        local_ray_cpus=int(cpus) if cpus else None,
        local_ray_object_store_mb=int(object_store) if object_store else None,
        state=env.get("S2S_STATE") or os.path.expanduser("~/.s2s"),
        prefect_api_url=env.get("PREFECT_API_URL") or None,
        io_retries=int(env.get("S2S_IO_RETRIES") or 2),
        io_retry_delay_s=float(env.get("S2S_IO_RETRY_DELAY_S") or 10.0),
        scale_wait_s=float(env.get("S2S_SCALE_WAIT_S") or 0.0),
        max_model_gb=env.get("S2S_MAX_MODEL_GB") or None,
        debug=_flag(env, "S2S_DEBUG"),
        demo_s3=_flag(env, "S2S_DEMO_S3"),
    )


def max_model_bytes(settings: Settings) -> int | None:
    """`settings.max_model_gb` in bytes; None when unset (the library's default applies).

    Raises:
        ConfigError: S2S_MAX_MODEL_GB is not a number > 0.
    """
    if settings.max_model_gb is None:
        return None
    try:
        gigabytes = float(settings.max_model_gb)
    except ValueError:
        gigabytes = math.nan
    if not (gigabytes > 0 and math.isfinite(gigabytes)):
        raise ConfigError([f"S2S_MAX_MODEL_GB must be a number > 0 (GB), but is {settings.max_model_gb!r}"])
    return int(gigabytes * 10**9)


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "") not in ("", "0", "false")


def with_ray_address(settings: Settings, address: str | None) -> Settings:
    """`settings` with `address` (e.g. `--ray-address`, a flow's `ray_address` parameter) in
    place of the environment's, when given."""
    return replace(settings, ray_address=address) if address else settings


def run_settings(ray_address: str | None = None) -> Settings:
    """A flow's settings: the environment's, with the run's own Ray address when it has one."""
    return with_ray_address(load_settings(), ray_address)


def use_prefect_api(url: str) -> None:
    """Point this process's Prefect client at `url` (set before Prefect reads its settings)."""
    os.environ["PREFECT_API_URL"] = url


def prepare_process(debug: bool) -> None:
    """Process-wide defaults the CLI needs before Prefect is imported.

    Prefect's own telemetry is switched off unless the user set it. --debug is passed on to
    the settings that flows load (S2S_DEBUG). Without --debug, Prefect's
    console handler stays silent about failures (it would print each error with a traceback,
    and the CLI reports it once, in one line); the run history still gets the full error
    through Prefect's API log handler.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "DEBUG" if debug else "WARNING")
    if debug:  # flows read their settings again: --debug reaches them (e.g. a local Ray's warnings stay shown)
        os.environ["S2S_DEBUG"] = "1"
    else:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
