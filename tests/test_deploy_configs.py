"""Every YAML under deploy/ is loaded and validated (DESIGN.md §3.2: no config nothing runs)."""

from __future__ import annotations

import pytest

from s2s_core.config import build, load_yaml
from s2s_core.data.config import PrepareConfig
from s2s_core.generation import GenerationConfig
from s2s_core.training.config import resolve
from tests.conftest import REPO

# file name -> the function that validates it (raises ConfigError listing every problem)
VALIDATORS = {"prepare.yaml": lambda data: build(PrepareConfig, data), "train.yaml": resolve,
              "translate.yaml": lambda data: build(GenerationConfig, data),
              "summarize.yaml": lambda data: build(GenerationConfig, data)}


@pytest.mark.parametrize("path", sorted((REPO / "deploy").rglob("*.yaml")), ids=lambda p: p.name)
def test_deploy_yaml_is_valid(path):
    data = load_yaml(path)
    assert data, f"{path} is empty"
    validate = VALIDATORS.get(path.name)
    assert validate is not None, f"{path.name}: add its validator to VALIDATORS"
    validate(data)


def test_dockerfile_installs_with_the_constraints():
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert f"torch=={pins['torch']}" in dockerfile
    assert "-c constraints.txt" in dockerfile and "USER " in dockerfile and "HEALTHCHECK" in dockerfile
