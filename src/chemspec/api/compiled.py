"""Whether a compiled project is still its study file's: the file params.yaml's first line names, compiled
again in memory as `chemspec compile --check` does."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from chemspec.api.project import compile
from chemspec.compiler.render import GENERATED
from chemspec.errors import SpecError


def compiled_from(params: Path) -> Path | None:
    """The study file that params.yaml's first line says it was compiled from (relative to the project
    root, where params.yaml is); None where the line names none, or a file that is not there."""
    try:
        with open(params, encoding="utf-8") as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError):
        return None
    named = first.removeprefix(GENERATED).strip().partition("`")[0] if first.startswith(GENERATED) else ""
    spec = params.parent / named
    return spec if named and spec.is_file() else None


def changed_study(params: Path) -> tuple[str, str, str] | None:
    """(why the project is not its study file's as compiled now, the compile command that makes it so, the
    validation errors where it does not validate); None where it is, or where params.yaml names no study
    file that is there."""
    spec = compiled_from(params)
    if spec is None:
        return None
    root = params.parent
    again = shlex.join(["chemspec", "compile", os.path.relpath(spec)]
                       + ([] if root.resolve() == Path.cwd().resolve() else ["--root", os.path.relpath(root)]))
    try:
        stale = compile(spec, root, check=True).stale
    except SpecError as exc:
        return (f"{os.path.relpath(spec)}, which {params} was compiled from, does not validate now (the study, its "
                "data or chemspec changed since)"), again, f"\n{exc}"
    if not stale:
        return None
    return (f"{os.path.relpath(spec)} compiles to other files now ({', '.join(stale)} would differ: the study or "
            "chemspec changed since the last compile)"), again, ""
