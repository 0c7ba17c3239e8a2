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
    for owned in stage_outputs(here):
        inside = target == owned or owned in target.parents
        if inside or (target in owned.parents and target != here and target.is_relative_to(here)):
            where = "into" if inside else f"among the outputs of pipeline stages, {os.path.relpath(target)} holding"
            raise UsageError(f"{label}: {what} would go {where} {os.path.relpath(owned)}, which a stage of dvc.yaml "
                             f"writes and the next `dvc repro` replaces. Give a folder of its own, e.g. {instead} "
                             "(nothing was written)")


def stage_outputs(root: Path) -> list[Path]:
    """The outputs the pipelines compiled in `root` declare (outs, metrics, plots), resolved; a cell template's
    (`results/<study>/train/${key}/model`) as the folder that holds every cell's."""
    from chemspec.compiler.render import PIPELINES
    from chemspec.errors import CompileError
    from chemspec.lockfiles import read_yaml

    found = []
    for pipeline in [root / "dvc.yaml", *sorted(root.glob(f"{PIPELINES}/*/dvc.yaml"))]:
        try:
            document = read_yaml(pipeline)
        except CompileError:  # an unreadable pipeline is named by the commands that run it
            continue
        stages = document.get("stages") if isinstance(document, dict) else None
        for stage in (stages.values() if isinstance(stages, dict) else []):
            stage = stage.get("do", stage) if isinstance(stage, dict) else None
            if not isinstance(stage, dict):
                continue
            folder = pipeline.parent / str(stage.get("wdir", "."))
            entries = [stage.get(key) for key in ("outs", "metrics", "plots")]
            for entry in (entry for listed in entries if isinstance(listed, list) for entry in listed):
                name = next(iter(entry), None) if isinstance(entry, dict) else entry
                # a template's fixed part: the folder above its first ${...}
                fixed = name.partition("${")[0].rpartition("/")[0] if isinstance(name, str) and "${" in name else name
                if isinstance(fixed, str) and fixed.strip("./"):
                    found.append((folder / fixed).resolve())
    return found


PAGE_MARKS = {"index.html": "<title>chemspec · ", "report.md": "\n| law | axis | group | exponent |"}
"""Text that the pages `chemspec report` writes hold, so that a file of that name of the user's is not replaced."""


def pages_folder(out: Path, given: bool = True) -> Path:
    """`out`, unless it is, or lies inside (below this folder), git's, DVC's, or a folder that a pipeline stage
    or the archive writes, or it holds pages or plots/ that `chemspec report` did not write (`given`: as --out)."""
    target, label = out.resolve(), f"--out {out}" if given else str(out)
    refuse_owned(out, label, "the pages", "the default reports/<study>/" if given else "give one with --out")
    fit = target.parent / "fit"
    if given and target.name == "report" and any((fit / name).is_file() for name in STAGE_FILES):
        raise UsageError(f"{label}: the pages of the workspace's run go there, beside {os.path.relpath(fit)} (as "
                         "`chemspec report` writes them), and those of --from would replace them; give another "
                         "folder, e.g. the default reports/<study>/ (nothing was written)")
    for name, mark in PAGE_MARKS.items():
        page = target / name
        if page.is_dir() or (page.is_file() and mark not in page.read_text(encoding="utf-8", errors="replace")):
            raise UsageError(f"{label}: its {name} was not written by `chemspec report`, and the pages would "
                             "replace it; move it aside, or give another folder (nothing was written)")
    plots = target / "plots"
    other = next((p for p in plots.iterdir() if p.suffix != ".png"), None) if plots.is_dir() else None
    if other or plots.is_file():
        raise UsageError(f"{label}: its plots/ holds {os.path.relpath(other or plots)}, which `chemspec report` did "
                         "not write, and the pages replace plots/ whole; move it aside, or give another folder "
                         "(nothing was written)")
    return out
