"""The stages that `dvc repro` runs: the compiled cells they read, and `chemspec run <stage>`."""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml
from pydantic import ValidationError

from chemspec.compiler import Cells
from chemspec.errors import ChemspecError, RunError, UsageError


def load_cells(params: str | Path) -> Cells:
    """The compiled cells of a params file: RunError where the default params.yaml is not there (nothing compiled
    here yet), UsageError (exit 2) where --params named another that is not."""
    path = Path(params)
    missing = RunError if path == Path("params.yaml") else UsageError
    if path.exists() and not path.is_file():
        raise missing(f"{path} is not a regular file; give the params.yaml that `chemspec compile` wrote")
    if not path.is_file():
        above = next((folder / path.name for folder in path.resolve().parent.parents
                      if (folder / path.name).is_file() and (folder / "dvc.yaml").is_file()), None)
        raise missing(f"{path} not found; run `chemspec compile <study.yaml>` first" + (
            f", or, to use the project at {os.path.relpath(above.parent)} that this folder lies in, run from there "
            f"or give --params {os.path.relpath(above)}" if above else ""))
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(document, dict) and "cells" not in document and {"study", "model"} <= document.keys():
            raise RunError(f"{path} is a study file, not the params.yaml that `chemspec compile {path}` writes; "
                           "compile it, then leave --params out (or give the params.yaml it wrote)")
        return Cells.model_validate(document["cells"])
    except ValidationError:
        raise RunError(f"{path} does not hold the cells this chemspec reads: another version of `chemspec compile` "
                       "wrote it, or it was edited; recompile the study (`chemspec compile <study.yaml>`)") from None
    except (yaml.YAMLError, UnicodeDecodeError, TypeError, KeyError):
        raise RunError(f"{path} is not a params file written by `chemspec compile`; recompile the study") from None
    except OSError as exc:
        raise RunError(f"{path} cannot be read ({exc.strerror}); check its permissions") from None


def run(stage: str, params: str | Path = "params.yaml", cell: str | None = None,
        expected_identity: str | None = None) -> dict:
    """Run one stage; where it fails under a `dvc repro` that removed the outputs of its last run, the error
    says how to put them back."""
    try:
        return _run(stage, params, cell, expected_identity)
    except (ChemspecError, KeyboardInterrupt) as exc:  # a Ctrl-C in a stage that does not turn it into Interrupted
        from chemspec.runtime.dvc_parent import dvc_ancestor

        if stage != "archive" and dvc_ancestor() is not None and _ran_before(stage, cell, params):  # its ref persists
            exc.add_note("dvc removed the outputs of this stage's last run before running it again; `dvc checkout` "
                         "puts them back from DVC's cache (`dvc pull` fills it in a fresh clone; `git checkout -- "
                         "<file>` the metrics git tracks, as fit.json), or `dvc repro` writes them again")
        raise


def _ran_before(stage: str, cell: str | None, params: str | Path) -> bool:
    """Whether a dvc.lock of the project records a run of this stage, whose outputs dvc removes before it runs."""
    from chemspec.lockfiles import Ran

    try:
        return (f"{stage}@{cell}" if cell else stage) in Ran(Path(params).resolve().parent).identities()
    except ChemspecError:  # a lock file that is not one: the note may still apply
        return True


def _run(stage: str, params: str | Path, cell: str | None, expected_identity: str | None) -> dict:
    from chemspec.launch_stop import stage_beside_launch
    from chemspec.runtime import run_stage

    if why := stage_beside_launch(Path(params).resolve().parent):
        raise UsageError(why)
    if expected_identity is not None and not re.fullmatch(r"[0-9a-f]{8,64}", expected_identity):
        raise UsageError(f"--identity {expected_identity!r} is not the start of a cell identity (8 to 64 hex "
                         "digits, as `chemspec compile` writes into dvc.yaml); leave it out or recompile")
    return run_stage(stage, load_cells(params), cell, expected_identity, source=str(params))
