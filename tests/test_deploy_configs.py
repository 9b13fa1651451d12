"""The config YAMLs of deploy/ are loaded and validated (DESIGN.md §3.2: no config nothing runs).

Config files are the top-level deploy/*.yaml, except the deployment descriptions: Prefect's
deploy/prefect.yaml and deploy/compose.yaml, and deploy/ray/ and deploy/kuberay/, which
tests/test_deploy_artifacts.py checks (as it does docker/Dockerfile)."""

from __future__ import annotations

import pytest

from pipelines.orchestrate.config import NightlyConfig
from s2s_core.config import build, load_yaml
from s2s_core.data.config import PrepareConfig
from s2s_core.generation import GenerationConfig
from s2s_core.training.config import resolve
from tests.conftest import REPO

# file name -> the function that validates it (raises ConfigError listing every problem)
VALIDATORS = {"prepare.yaml": lambda data: build(PrepareConfig, data), "train.yaml": resolve,
              "translate.yaml": lambda data: build(GenerationConfig, data),
              "summarize.yaml": lambda data: build(GenerationConfig, data),
              "nightly.yaml": lambda data: build(NightlyConfig, data)}


NOT_CONFIGS = {"prefect.yaml", "compose.yaml"}
CONFIGS = sorted(path for path in (REPO / "deploy").glob("*.yaml") if path.name not in NOT_CONFIGS)


def test_config_files_are_found():
    assert {"prepare.yaml", "train.yaml", "translate.yaml", "summarize.yaml", "nightly.yaml"} <= {path.name for path in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_deploy_yaml_is_valid(path):
    data = load_yaml(path)
    assert data, f"{path} is empty"
    validate = VALIDATORS.get(path.name)
    assert validate is not None, f"{path.name}: add its validator to VALIDATORS"
    validate(data)

