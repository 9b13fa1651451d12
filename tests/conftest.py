"""Shared fixtures: a real local Ray (2 CPUs), Prefect's test harness (a real temporary API
server), and a real SeaweedFS S3 server on 127.0.0.1. Nothing is mocked."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Before Prefect is imported anywhere: a private home, no telemetry, quiet console.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="s2s-prefect-home-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
for name in ("S2S_S3_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "RAY_ADDRESS", "S2S_RAY_ADDRESS"):
    os.environ.pop(name, None)

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample" / "en-it"


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray with 2 CPUs for the whole session (the CI machine's size)."""
    import ray

    from pipelines import ray_runtime
    from pipelines.settings import load_settings

    if not ray.is_initialized():
        settings = load_settings()
        ray_runtime.ensure_ray(type(settings)(s3=settings.s3, local_ray_cpus=2))
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_api():
    """Prefect's real API in a temporary server for the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real SeaweedFS S3 server over HTTP on 127.0.0.1 with enforced credentials."""
    from pipelines.local_s3 import run_s3_server

    with run_s3_server(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Point this process's settings at the test S3 server (as a user's environment would)."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture
def pipeline(ray_local, prefect_api):
    """Marker fixture: the test runs flows on real Ray + Prefect."""
    return None


@pytest.fixture(autouse=True)
def root_logging_restored():
    """A library that calls `logging.info` on an unconfigured root logger gives it a handler on
    the test's captured stderr, which closes with the test; a later log line would then crash
    the session. Each test leaves the root logger's handlers as it found them."""
    import logging

    before = list(logging.root.handlers)
    yield
    for handler in [h for h in logging.root.handlers if h not in before]:
        logging.root.removeHandler(handler)
