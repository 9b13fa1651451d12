"""The rooms of `pipelines/` and `s2s_core/` (docs/architecture.md), checked on every import statement.

Stages (prepare, train, generate, evaluate) import only shared modules and `s2s_core`; only
`orchestrate`, `demo` and the CLI compose stages. `s2s_core` never imports `pipelines`, and the
model package format never imports training. Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

STAGES = ("prepare", "train", "generate", "evaluate")
COMPOSERS = ("orchestrate", "demo")


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` statement in the file names (any depth)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def offenders(folder: Path, forbidden: tuple[str, ...]) -> list[str]:
    """'file imports module' for every import under `folder` of a module in (or under) `forbidden`."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for name in sorted(imported_modules(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(folder)} imports {name}")
    return found


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_no_other_stage_and_no_composer(stage):
    others = tuple(f"pipelines.{name}" for name in (*STAGES, *COMPOSERS) if name != stage)
    assert offenders(REPO / "pipelines" / stage, others) == []


def test_shared_modules_import_no_stage_and_no_composer():
    shared = [p for p in (REPO / "pipelines").glob("*.py") if p.name not in ("cli.py", "__init__.py")]
    stages = tuple(f"pipelines.{name}" for name in (*STAGES, *COMPOSERS))
    assert [f"{p.name} imports {n}" for p in shared for n in sorted(imported_modules(p))
            if any(n == s or n.startswith(s + ".") for s in stages)] == []


def test_the_library_never_imports_pipelines():
    assert offenders(REPO / "s2s_core", ("pipelines",)) == []


def test_the_package_format_never_imports_training():
    names = imported_modules(REPO / "s2s_core" / "package.py")
    assert [n for n in names if n.startswith("s2s_core.training")] == []


def test_the_check_sees_imports_inside_functions(tmp_path):
    (tmp_path / "m.py").write_text("import os\n\ndef f():\n    from pipelines.train.plan import plan\n"
                                   "    import pipelines.prepare.job\n")
    assert offenders(tmp_path, ("pipelines.train", "pipelines.prepare")) == [
        "m.py imports pipelines.prepare.job", "m.py imports pipelines.train.plan", "m.py imports pipelines.train.plan.plan"]
    assert offenders(tmp_path, ("pipelines.generate",)) == []
