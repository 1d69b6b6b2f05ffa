"""The layering of docs/architecture.md, checked: the import-linter contract in pyproject.toml (layers
in data-flow order, no cycles), and tmln's own imports at module top level."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "tmln"

# Where a function-level ``from tmln... import`` is still allowed, and why.
LAZY_TMLN_IMPORTS = {
    # one module per command, each importing the API inside its command so that `tmln --help` (which
    # loads every command for its one-line help) and `tmln info` do not import torch, pandas and shapely
    "cli/": "commands import the API when run",
}


def _lint_imports(src_parent: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(src_parent)}
    return subprocess.run([str(exe), "--no-cache"], cwd=ROOT, env=env,
                          capture_output=True, text=True)


def test_layers_contract_is_kept():
    r = _lint_imports(SRC.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


@pytest.mark.parametrize("module, line", [
    ("regions.py", "from tmln.cohort.table import read_slides_table"),  # upward: regions below cohort
    ("tiff_tiles.py", "from tmln.slide import Slide"),  # the slide <-> tiff_tiles cycle
    ("measure/nodes.py", "def _f():\n    from tmln.report.overlay import overlay_image"),  # lazy counts too
])
def test_contract_catches_an_upward_import(tmp_path, module, line):
    copy = tmp_path / "src" / "tmln"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("bundled", "static", "templates", "__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + "\n\n" + line + "\n")
    r = _lint_imports(copy.parent)
    assert r.returncode != 0 and "BROKEN" in r.stdout, r.stdout


def _function_level_tmln_imports(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == "tmln"):
                    lines.add(node.lineno)
                elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "tmln" for a in node.names):
                    lines.add(node.lineno)
    return sorted(lines)


def test_tmln_imports_at_module_top_level():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if any(rel.startswith(prefix) for prefix in LAZY_TMLN_IMPORTS):
            continue
        found += [f"{rel}:{n}" for n in _function_level_tmln_imports(path)]
    assert not found, "function-level tmln imports (move them to the module's top): " + ", ".join(found)


def test_the_lazy_import_check_can_fail(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("import numpy\n\n\ndef f():\n    from tmln.slide import Slide\n    return Slide\n")
    assert _function_level_tmln_imports(p) == [5]
