"""The house rule of DESIGN.md "Where code lives": no stage imports another stage's folder, and
shared/ imports none."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT / "shared"
SERVICES = ROOT / "services"


def stage_imports(path: Path) -> set[str]:
    """The ``services.*`` modules one file imports, at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] == "services")
    return found


def test_shared_modules_import_no_stage_folder():
    found = {
        (str(path.relative_to(SHARED)), module)
        for path in sorted(SHARED.rglob("*.py"))
        for module in stage_imports(path)
    }
    assert found == set()


def test_no_stage_imports_another_stage_folder():
    stages = sorted(
        path.name for path in SERVICES.iterdir() if path.is_dir() and path.name != "__pycache__"
    )
    assert {"ingest", "graph", "llm", "calibrate"} <= set(stages)
    found = {
        (str(path.relative_to(SERVICES)), module)
        for stage in stages
        for path in sorted((SERVICES / stage).rglob("*.py"))
        for module in stage_imports(path)
        if module.split(".")[:2] != ["services", stage]
    }
    assert found == set()
