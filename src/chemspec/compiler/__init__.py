"""The compiler: study -> cells -> files. Pure: no I/O, no clock, the same spec gives the same bytes."""

from __future__ import annotations

from chemspec.compiler.cells import Cells, identity
from chemspec.compiler.expand import expand
from chemspec.compiler.render import render
from chemspec.specs import Study

__all__ = ["Cells", "compile_study", "expand", "identity"]


def compile_study(study: Study, spec_path: str, source_file: str | None = None) -> dict[str, str]:
    """{relative path: text} of dvc.yaml and params.yaml for a validated study."""
    return render(expand(study), spec_path, source_file)
