"""The layering rule of ARCHITECTURE.md: `lib/` never imports dagster."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import roster_pipelines.lib

LIB = Path(roster_pipelines.lib.__file__).parent


def _lib_modules() -> list[str]:
    root = LIB.parent.parent
    return [
        ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for p in sorted(LIB.rglob("*.py"))
        if "migrations" not in p.parts
    ]


def test_lib_source_has_no_dagster_import() -> None:
    offenders = []
    for path in LIB.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path}: {n}" for n in names if n == "dagster" or n.startswith("dagster")
            ]
    assert offenders == []


def test_importing_all_of_lib_loads_no_dagster() -> None:
    modules = _lib_modules()
    assert "roster_pipelines.lib.sync" in modules
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0].startswith('dagster')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
