"""The verbs that turn a study into a pipeline: validate, schema, compile (run: api.stages; launch: api.launching)."""

from __future__ import annotations

import os
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from chemspec import relock
from chemspec.api import changes
from chemspec.api.ignores import GITIGNORE, gitignore
from chemspec.compiler import compile_study, expand
from chemspec.compiler.cells import Cells
from chemspec.compiler.render import GENERATED, PARAMS, PIPELINES
from chemspec.errors import ArchiveError, CompileError, RunError, UsageError
from chemspec.lockfiles import lock_path
from chemspec.runtime.io import final_path, written_together
from chemspec.specs import Study, json_schema, load_study
from chemspec.specs.atoms_source import AtomsFileSource
from chemspec.specs.base import unsafe_character
from chemspec.specs.data import SmilesFileSource
from chemspec.specs.model import Model


def validate(spec: str | Path) -> Study:
    """Load a study and check it against its data, as `compile` does: that a SMILES file holds the molecules
    and an atoms file the structures the sizes need, counted without parsing them (from an npz's arrays, an
    HDF5 file's energies or a database's rows; an extxyz file is scanned line by line, about a second per
    100 MB), and that an atoms file passes the loader's checks where they are quick: every array of an npz,
    every HDF5 group's datasets by name and shape, the first frame of an extxyz file or ASE database."""
    return load_study(spec, count_structures=_structures)


def _structures(path: Path, source: AtomsFileSource, model: Model) -> int:
    """The structures of a data file; an extxyz file's frames of several charges or multiplicities, which its
    comment lines give, are refused for a model that cannot tell them apart."""
    from chemspec.runtime.atoms_files import check_sample, count_structures
    from chemspec.runtime.atoms_states import several_states

    states = Counter() if source.format == "extxyz" and not getattr(model, "charge_spin", False) else None
    try:
        count = count_structures(path, source.format, source.energy_key, states)
        if count:  # an empty file is refused by the sizes it cannot fill, which says more
            check_sample(path, source.format, source.energy_key, source.forces_key)
    except RunError as exc:
        raise ValueError(f"data.source.{exc.field}: {exc}") from None
    if states and None not in states and (problem := several_states(states, model.family)):
        raise ValueError(f"data.source.file {source.file!r} holds frames of {problem}")
    return count


def schema() -> dict:
    return json_schema()


def _project_path(path: Path, root: Path) -> str:
    """A path as DVC should see it: relative to the root where the file is inside the DVC project that
    holds the root (`../mols.csv` from a root in a subfolder), so the project moves as a whole; absolute
    otherwise. The folders above it are resolved (a project reached through a linked folder is the same
    project), the file's own name is kept: a linked data file is named as the study named it."""
    from chemspec.archive.remote import project_root

    absolute, root = Path(os.path.realpath(path.parent)) / path.name, root.resolve()
    if absolute.is_relative_to(root):
        return absolute.relative_to(root).as_posix()
    project = project_root(root)
    if project is not None and absolute.is_relative_to(project.resolve()):
        return Path(os.path.relpath(absolute, root)).as_posix()
    return str(absolute)


def _previous_name(root: Path, located: str) -> str:
    """The data file as the project's params.yaml already names it, where that is the same file: a project
    compiled when files outside its root were named by absolute path keeps its data cell's identity."""
    try:
        compiled = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
        previous = compiled["cells"]["data"]["source"]["file"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError, KeyError):
        return located
    same = isinstance(previous, str) and os.path.realpath(root / previous) == os.path.realpath(root / located)
    return previous if same else located


def _with_project_paths(study: Study, spec: Path, root: Path) -> tuple[Study, str | None]:
    source = study.data.source
    if not isinstance(source, (SmilesFileSource, AtomsFileSource)):
        return study, None
    file = Path(source.file)
    located = _previous_name(root, _project_path(file if file.is_absolute() else spec.parent / file, root))
    if found := unsafe_character(located):  # the folders above the file, which the study does not name
        raise CompileError(f"data.source.file {source.file!r} would stand in dvc.yaml as {located!r}, which contains "
                           f"{found!r}: DVC and shells would expand it there; move the file, or a link to it, "
                           "to a folder whose path has no '$', '`' or control characters (nothing was written)")
    data = study.data.model_copy(update={"source": source.model_copy(update={"file": located})})
    return study.model_copy(update={"data": data}), located


def _blocked(root: Path, name: str) -> bool:
    """Whether `name` cannot be written under `root`: it is a folder, or a folder on its path is a file."""
    path = root / name
    folders = [root / parent for parent in Path(name).parents if parent != Path(".")]
    return (path.exists() and not path.is_file()) or any(f.exists() and not f.is_dir() for f in folders)


@dataclass
class CompileResult:
    study: str
    files: dict[str, str]
    stale: list[str] = field(default_factory=list)
    """Files that differ from what this spec compiles to, or are not there (those are also in `missing`)."""
    missing: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    """Per-size pipeline files of an earlier compile that this grid no longer has."""
    relocked: list[str] = field(default_factory=list)
    """Finished stages whose DVC record moved to the dvc.lock beside their new dvc.yaml."""
    rechosen: list[str] = field(default_factory=list)
    """Training stages recorded before 2026-12-06 (with the study's estimator in their identity, a train stage
    as depending on selected.json), now recorded as compiled now (relock.carry_selection)."""
    renamed: list[str] = field(default_factory=list)
    """Rank-1 stages named <cell>-r1 until 2026-12-06, carried with their folders to <cell> (relock.carry_ranks)."""
    leftovers: list[str] = field(default_factory=list)
    """Folders of per-cell stages that no stage of the study writes now, left on disk."""
    notes: list[str] = field(default_factory=list)


def compile(spec: str | Path, root: str | Path = ".", check: bool = False, data: bool = True) -> CompileResult:
    """Compile a study into dvc.yaml + params.yaml under `root`; with `check`, only report staleness; without
    `data`, do not validate the study against its data file."""
    spec, root = Path(spec), Path(root)
    study = validate(spec) if data else load_study(spec, data=False)
    if not (root.is_dir() or (root.parent.is_dir() and not root.exists())):
        raise UsageError(f"--root {root} is not a folder, nor one that can be made in an existing folder; "
                         "create the project there first "
                         f"(`mkdir -p {shlex.quote(str(root))} && cd {shlex.quote(str(root))} && git init && dvc init`) "
                         "or give an existing one")
    if not check:
        from chemspec.api.compiled import compiled_elsewhere

        compiled_elsewhere(spec, study.study, root)
    study, source_file = _with_project_paths(study, spec, root)
    files = compile_study(study, _project_path(spec, root), source_file)
    result = CompileResult(study=study.study, files=files)
    before, foreign = _compare(root, result)
    obsolete = [p.relative_to(root).as_posix() for p in sorted((root / PIPELINES).glob("*/dvc.yaml"))
                if p.relative_to(root).as_posix() not in files and p.read_bytes().startswith(GENERATED.encode())]
    result.stale.extend(obsolete)
    was, ignored = gitignore(root, cells := expand(study))
    if ignored != was:
        result.stale.append(GITIGNORE)
    if check:
        return result
    _refuse_unwritable(root, files, foreign)
    redrawn = _write(root, result, {**files, GITIGNORE: ignored}, obsolete, cells, before.get(PARAMS))
    result.leftovers = changes.leftovers(cells, root)
    result.notes += [*changes.carried(result, root), *changes.other_studies(cells, root),
                     *changes.rerun(cells, root, redrawn), *study.notes(),
                     *_project_notes(root, study)]
    return result


def _compare(root: Path, result: CompileResult) -> tuple[dict[str, str | None], list[str]]:
    """Fill in which compiled files are missing or stale; return what each held, and those another hand wrote."""
    foreign, before = [], {}
    for name, text in result.files.items():
        existing = before[name] = _existing(root / name) if (root / name).is_file() else None
        if existing is None:
            result.missing.append(name)
        if existing != text:
            result.stale.append(name)
        if existing is not None and existing.strip() and not existing.startswith(GENERATED):
            foreign.append(name)
    return before, foreign


def _refuse_unwritable(root: Path, files: dict[str, str], foreign: list[str]) -> None:
    """Refuse, before anything is written, to replace files chemspec did not write or where folders stand."""
    if foreign:
        one, first = len(foreign) == 1, root / foreign[0]
        raise CompileError(f"{' and '.join(str(root / name) for name in foreign)} {'was' if one else 'were'} not "
                           f"written by `chemspec compile` (the first line is not '{GENERATED} ...'), and compiling "
                           f"would replace {'it' if one else 'them'}: move {'it' if one else 'them'} aside (`mv "
                           f"{shlex.quote(str(first))} {shlex.quote(str(first) + '.mine')}`) and compile again, or "
                           "compile into another --root (nothing was written)")
    pipelines = [name for name in files if name.endswith("dvc.yaml")]
    blocked = [name for name in [*files, *map(lock_path, pipelines)] if _blocked(root, name)]
    if blocked:
        raise CompileError(f"cannot write {', '.join(str(root / n) for n in blocked)}: a folder stands where a "
                           "file goes, or a file where a folder goes; move it and compile again (nothing was written)")


def _write(root: Path, result: CompileResult, files_now: dict[str, str], obsolete: list[str], cells: Cells,
           params_before: str | None) -> list[str]:
    """Write the stale files together, carry DVC's records of finished stages to where this compile puts them,
    remove obsolete per-size pipelines; return the notes on data the change redraws."""
    pipelines = {name: text for name, text in result.files.items() if name.endswith("dvc.yaml")}
    changed = [name for name in result.stale if name in files_now]
    _not_while_running(root, [name for name in result.stale if name != GITIGNORE])
    redrawn: list[str] = []
    try:
        with written_together({root / name: files_now[name].encode() for name in changed}):
            result.relocked = relock.carry(root, pipelines, [*pipelines, *obsolete], result.written)
            relock.carry_ranks(root, cells, pipelines, result.written, result.renamed)
            result.rechosen = relock.carry_selection(root, cells, result.written)
            for name in obsolete:
                for leftover in ("dvc.yaml", "dvc.lock"):
                    (root / name).with_name(leftover).unlink(missing_ok=True)
                for folder in ((root / name).parent, root / PIPELINES):
                    if folder.is_dir() and not any(folder.iterdir()):
                        folder.rmdir()
                result.removed.append(name)
        result.written += changed
        if params_before != result.files[PARAMS]:  # unchanged params: no cell came or went
            redrawn = changes.redrawn(changes.previous(params_before, cells), cells, root)
    except OSError as exc:
        where = final_path(os.fsdecode(exc.filename)) if exc.filename else root
        moved = f"; moved so far: the folders of {', '.join(result.renamed)}" if result.renamed else ""
        raise CompileError(f"cannot write {where}: {exc.strerror or exc}; fix that and compile again (written so "
                           f"far: {', '.join(result.written + result.removed) or 'nothing'}{moved})") from None
    return redrawn


def _project_notes(root: Path, study: Study) -> list[str]:
    """The DVC remote the study's archive pushes to, set up here; or why it is not."""
    from chemspec.archive.remote import ensure_remote, project_root

    project = project_root(root)
    if project is None:
        from chemspec.archive.repository import git_top

        top = git_top(root)
        init = ("git init && dvc init" if top is None else "dvc init" if top == root.resolve() else
                "dvc init --subdir")
        return [f"{root} is not a DVC project yet: run `{init}` there, then compile again, which sets up the "
                "study's DVC remote, before `dvc repro`"]
    try:
        from dvc.exceptions import DvcException
    except ImportError:  # a machine that only trains (a GPU node's image) may lack it
        return ["dvc is not installed here, so no DVC remote was set up; install chemspec's dependencies where "
                "you run `dvc repro`"]
    try:
        return [f"DVC remote {ensure_remote(project, study.archive.remote)}"]
    except ArchiveError as exc:
        return [str(exc)]
    except (DvcException, OSError) as exc:
        return [f"the DVC remote {study.archive.remote!r} could not be set up ({exc}); check "
                f"{project / '.dvc'}, then compile again"]


def _not_while_running(root: Path, changing: list[str]) -> None:
    """Refuse to write `changing` under `root` while a dvc or a `chemspec launch` runs the pipeline compiled there:
    checked holding DVC's project lock, which a `dvc repro` holds between two stages."""
    from chemspec.api.busy import dvc_lock, running
    from chemspec.archive.remote import project_root

    if not changing or (project := project_root(root)) is None:
        return
    files, then = ", ".join(str(root / n) for n in changing), "then compile again (nothing was written)"
    with dvc_lock(project) as holder:
        if holder:
            raise CompileError(f"{holder} holds DVC's project lock (.dvc/tmp/lock), as a running `dvc repro` does "
                               f"between two stages, so compile cannot tell whether it runs the pipeline it would "
                               f"change ({files}): wait for that command to end, {then}")
        if busy := running(project, root):
            raise CompileError(f"compiling now would change {files} under {busy}, whose later stages would then fail: "
                               "wait for it to end, or stop it (Ctrl-C in its terminal, or `kill -INT <pid>`), "
                               f"{then}")


def _existing(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CompileError(f"{path} cannot be read ({getattr(exc, 'strerror', None) or 'not UTF-8 text'}); "
                           "delete it, or fix its permissions, and compile again (nothing was written)") from None
