"""Whether a compiled project is still its study file's (the file params.yaml's first line names, compiled
again in memory as `chemspec compile --check` does), whether its DVC project has the study compiled in
another folder, and whether a commit's compiled study is the run archived there."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import yaml

from chemspec.api.ignores import GITIGNORE
from chemspec.api.project import compile
from chemspec.compiler.render import GENERATED, PARAMS
from chemspec.errors import SpecError, UsageError


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


def changed_study(params: Path, data: bool = True) -> tuple[str, str, str] | None:
    """(why the project is not its study file's as compiled now, the compile command that makes it so, the
    validation errors where it does not validate); None where it is, or where params.yaml names no study
    file that is there. Without `data`, the study is not validated against its data file (which a clone may
    lack until `dvc pull`, and which may be large)."""
    spec = compiled_from(params)
    if spec is None:
        return None
    root = params.parent
    again = shlex.join(["chemspec", "compile", os.path.relpath(spec)]
                       + ([] if root.resolve() == Path.cwd().resolve() else ["--root", os.path.relpath(root)]))
    try:
        stale = [name for name in compile(spec, root, check=True, data=data).stale if name != GITIGNORE]
    except SpecError as exc:
        return (f"{os.path.relpath(spec)}, which {params} was compiled from, does not validate now (the study, its "
                "data or chemspec changed since)"), again, f"\n{exc}"
    if not stale:
        return None
    if PARAMS not in stale:  # params.yaml holds every setting of the study: the other files were edited
        return (f"{', '.join(stale)} {'is' if len(stale) == 1 else 'are'} not what {os.path.relpath(spec)} compiles "
                f"to, though {PARAMS} is: edited by hand since compile wrote {'it' if len(stale) == 1 else 'them'} "
                "(or written by another chemspec version)"), again, ""
    return (f"{os.path.relpath(spec)} compiles to other files now ({', '.join(stale)} would differ: the study or "
            f"chemspec changed since the last compile, or {PARAMS} was edited by hand)"), again, ""


def compiled_elsewhere(spec: Path, study: str, root: Path) -> None:
    """Refuse to compile `study` into `root` where the DVC project around it has the study compiled in another
    folder (a dvc.yaml and params.yaml that compile wrote), above it or up to three levels below the project's
    top, not inside a nested project or a folder .dvcignore names: `dvc repro` would run both pipelines,
    training the study twice."""
    from chemspec.archive.remote import project_root

    top = project_root(root if root.exists() else root.parent)
    if top is None:
        return
    here, top = root.resolve(), top.resolve()
    try:
        from dvc.fs import LocalFileSystem
        from dvc.ignore import DvcIgnoreFilter
    except ImportError:  # a machine without DVC (a GPU node that runs stages by hand) runs no `dvc repro`
        return
    ignored = DvcIgnoreFilter(LocalFileSystem(), os.fspath(top)).is_ignored_dir
    folders = [folder for folder in (here, *here.parents) if folder.is_relative_to(top)]
    for folder, subfolders, _ in os.walk(top):  # links to folders are not followed
        inside = len(Path(folder).relative_to(top).parts) < 3
        subfolders[:] = [name for name in subfolders if inside and not name.startswith(".")
                         and not any(Path(folder, name, own).exists() for own in (".dvc", ".git"))]
        folders.append(Path(folder))
    for folder in dict.fromkeys(folder for folder in folders if not ignored(os.fspath(folder))):
        if folder != here and _compiled_study(folder) == study:
            where = os.path.relpath(folder)
            raise UsageError(f"study {study!r} is already compiled in this DVC project, in {where}: a second pipeline "
                             f"of it in {'this folder' if here == Path.cwd().resolve() else os.path.relpath(here)} "
                             "would be run by the same `dvc repro` and train it twice; compile it there (`"
                             f"{shlex.join(['chemspec', 'compile', os.path.relpath(spec), '--root', where])}`), "
                             f"remove {os.path.join(where, 'dvc.yaml')} and {PARAMS} there first, or give this study "
                             "another name")


def _compiled_study(folder: Path) -> str | None:
    """The study that `folder`'s dvc.yaml and params.yaml, both written by compile, compile."""
    try:
        with open(folder / "dvc.yaml", encoding="utf-8") as handle:
            if not handle.readline().startswith(GENERATED):
                return None
        with open(folder / PARAMS, encoding="utf-8") as handle:
            if not handle.readline().startswith(GENERATED):
                return None
            line = next((line for line in handle if line.strip().startswith("study:")), "")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        value = yaml.safe_load(line.split(":", 1)[1]) if line else None
    except yaml.YAMLError:
        return None
    return str(value) if value is not None else None


def unarchived(rev: str, manifest: dict, params: Path) -> str | None:
    """Why the run archived at commit `rev` is not that of the study compiled there (its params.yaml, read from
    git, compiles another spec than the manifest's: the study was edited, compiled and committed, and no
    `dvc repro` archived it since); None where it is that run, or where the commit's params.yaml compiles
    another study or cannot be read."""
    from chemspec.archive.store import json_digest
    from chemspec.compiler import Cells

    where = params.resolve().parent
    shown = subprocess.run(["git", "show", f"{rev}:./{params.name}"], cwd=where, capture_output=True, text=True)
    if shown.returncode != 0:
        return None
    try:
        archive = Cells.model_validate(yaml.safe_load(shown.stdout)["cells"]).archive
    except (yaml.YAMLError, KeyError, TypeError, ValueError):  # one another chemspec wrote: nothing to judge by
        return None
    if archive.study != manifest.get("study") or json_digest(archive.spec) == manifest.get("spec_sha256"):
        return None
    return (f"{rev}: the run archived there is not of the study its {params.name} compiles (the study was edited, "
            "compiled and committed after that run); `dvc repro` at that commit, then a commit, archives the study "
            "as compiled there")
