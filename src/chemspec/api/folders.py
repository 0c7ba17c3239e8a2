"""Folders that chemspec writes a new folder of files into only where no one else owns them: not git's or DVC's,
not a project's top, and not inside a pipeline stage's output or the archive, which the next `dvc repro` or
archive would change or delete."""

from __future__ import annotations

import os
from pathlib import Path

from chemspec.errors import UsageError

STAGE_FILES = ("data.json", "split.json", "estimate.json", "metrics.json", "cells.json", "fit.json",
               "calibration.json", "generation.json", "reference.json")
"""Files that mark a folder as a stage's output."""


def refuse_owned(out: Path, label: str, what: str, instead: str) -> None:
    """Refuse `out` where it is, or lies inside (below the working folder), git's, DVC's, a project's top, or a
    folder that a pipeline stage or the archive writes; `label` names it as given (`--to DIR`), `what` says what
    would go there and `instead` which folder to give."""
    target, here = out.resolve(), Path.cwd().resolve()
    if any(part in (".git", ".dvc") for part in target.parts) or (target / ".git").exists() or (
            target / ".dvc").is_dir():
        raise UsageError(f"{label}: {what} would go into a project's top folder or git's or DVC's own; give "
                         f"a folder of its own, e.g. {instead}")
    for folder in (target, *(f for f in target.parents if f.is_relative_to(here) and f != here)):
        marker = next((folder / name for name in STAGE_FILES if (folder / name).is_file()), None)
        if marker is None and (folder / "objects").is_dir() and (folder / "refs").is_dir():
            marker = folder / "refs"
        if marker is not None:
            raise UsageError(f"{label}: {os.path.relpath(folder)} holds {marker.name}, written by a pipeline "
                             f"stage, the archive or a pull; {what} would go inside their output, which the next "
                             f"`dvc repro` (or pull) replaces whole. Give a folder of its own, e.g. {instead}")
