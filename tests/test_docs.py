"""Every `s2s` command shown in the README and docs/operations.md is one the CLI accepts."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO
from tests.test_deploy_artifacts import parse_s2s, s2s_argv, shell_commands

PAGES = [REPO / "README.md", REPO / "docs" / "operations.md"]
FENCE = re.compile(r"```(?:bash|sh)\n(.*?)```", re.S)


def shown_commands(text: str) -> list[list[str]]:
    """The commands of the page's bash blocks (comments dropped, continued lines joined)."""
    commands = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands += shell_commands(line)
    return commands


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_s2s_command_on_the_page_parses(page):
    commands = [argv for argv in map(s2s_argv, shown_commands(page.read_text())) if argv]
    assert len(commands) >= 3, f"{page.name}: the scan found too few s2s commands"
    for argv in commands:
        assert parse_s2s(argv).command in argv


def test_operations_guide_covers_each_orchestration_command():
    used = {parse_s2s(argv).command for argv in map(s2s_argv, shown_commands((REPO / "docs" / "operations.md").read_text()))
            if argv}
    assert {"serve", "submit", "status", "translate"} <= used
    assert "RAY_TOKEN_PARAGRAPH" not in (REPO / "docs" / "operations.md").read_text()
