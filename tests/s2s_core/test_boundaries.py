"""s2s_core stays a pure library: it never imports ray, prefect, boto3/botocore, fsspec, s3fs or
transformers (a test and benchmark dependency only)."""

from __future__ import annotations

import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import s2s_core

FORBIDDEN = ("ray", "prefect", "boto3", "botocore", "fsspec", "s3fs", "transformers")
PACKAGE_DIR = Path(s2s_core.__file__).resolve().parent
IMPORT_RE = re.compile(
    rf"^\s*(?:from\s+({'|'.join(FORBIDDEN)})(?:\.\S*)?\s+import\b|import\s+[^#\n]*?\b({'|'.join(FORBIDDEN)})\b)",
    re.MULTILINE,
)


def all_modules() -> list[str]:
    names = ["s2s_core"]
    names += [m.name for m in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="s2s_core.")]
    return sorted(names)


def test_module_list_covers_the_library():
    modules = all_modules()
    for expected in ("s2s_core.config", "s2s_core.errors", "s2s_core.tokenizer", "s2s_core.data.config",
                     "s2s_core.data.readers", "s2s_core.data.cleaning", "s2s_core.data.hashing",
                     "s2s_core.data.rows"):
        assert expected in modules
    files = {p.relative_to(PACKAGE_DIR.parent).with_suffix("").as_posix().replace("/", ".")
             for p in PACKAGE_DIR.rglob("*.py")}
    files = {f.removesuffix(".__init__") for f in files}
    assert files == set(modules)


def test_importing_every_module_loads_no_forbidden_package():
    modules = all_modules()
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {set(FORBIDDEN)!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=PACKAGE_DIR.parent)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_check_would_see_a_forbidden_import():
    # The subprocess check above is only meaningful if it can see such a module at all.
    code = ("import sys, types; sys.modules['fsspec'] = types.ModuleType('fsspec'); "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {set(FORBIDDEN)!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['fsspec']"


def test_source_has_no_forbidden_import_statement():
    offenders = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for match in IMPORT_RE.finditer(path.read_text(encoding="utf-8")):
            offenders.append(f"{path.name}: {match.group(0).strip()}")
    assert offenders == []


def test_import_regex_catches_the_usual_forms():
    bad = ["import ray", "import ray.data", "from ray import data", "  from prefect.flows import flow",
           "import os, boto3", "import botocore.session as s", "from fsspec import open", "import s3fs"]
    good = ["import os", "from s2s_core.data import hashing", "import rayon", "from pyarrow import fs",
            "# import ray", "x = 'ray'", "import prefecture"]
    for line in bad:
        assert IMPORT_RE.search(line), line
    for line in good:
        assert not IMPORT_RE.search(line), line
