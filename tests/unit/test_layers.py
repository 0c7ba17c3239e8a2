"""The layers depend downwards only: the runtime (the stage commands) imports nothing of the report,
the CLI or the api, so a stage runs, and is tested, without them."""

from __future__ import annotations

import ast
from pathlib import Path

import chemspec.runtime

UPPER = ("chemspec.report", "chemspec.cli", "chemspec.api")  # chemspec.cli also covers cli_results


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_runtime_imports_nothing_from_the_layers_above_it():
    runtime = Path(chemspec.runtime.__file__).parent
    upward = {f"{path.name}: {name}" for path in sorted(runtime.rglob("*.py")) for name in _imports(path)
              if name.startswith(UPPER)}
    assert upward == set()
