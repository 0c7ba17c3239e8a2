"""The archive verbs: ls, show and verify; pull and refit, which read archived runs back."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

from chemspec.api.folders import refuse_owned
from chemspec.archive.snapshot import given_study
from chemspec.errors import ArchiveError, InputError, UsageError
from chemspec.runtime.result_files import cells_problem, fit_problem, read_cells, read_checked


def archive_ls(root: str | Path = "archive") -> tuple[list[dict], list[str], list[str]]:
    """The archived runs that can be read, newest of each study marked current, a line for each ref or
    manifest that cannot be read, and one for each leftover of an interrupted write."""
    from chemspec.archive import Store, leftovers, scan

    store = Store(root)
    found, damaged = scan(root)
    problems, current = list(damaged.values()), {}
    for study in store.studies():
        try:
            current[store.ref(study)] = study
        except ArchiveError as exc:
            problems.append(str(exc))
    readable = {digest for digest, _ in found}
    problems += [f"{store.ref_path(study)} names manifest {digest}, which is missing or corrupt; restore it with "
                 "`git checkout -- archive` or rerun the archive stage (`chemspec archive verify` checks all)"
                 for digest, study in current.items() if digest not in readable]
    if not found and not problems:
        from chemspec.archive.manifest import nothing_archived

        raise nothing_archived(root)
    project = Path(root).resolve().parent
    committed, made = _committed(project), _history(project)

    def made_on(manifest: dict) -> str:
        return manifest.get("provenance", {}).get("git", {}).get("commit") or ""

    found.sort(key=lambda run: (run[1]["study"], made.get(made_on(run[1]), -1), run[0] in current))
    return [{"manifest": digest, "study": m["study"], "cells": _cells(store, m), "at": committed.get(digest),
             "commit": made_on(m)[:12], "current": digest in current,
             "compute_hours": m.get("provenance", {}).get("compute_hours")}
            for digest, m in found], problems, leftovers(root)


def _history(project: Path) -> dict[str, int]:
    """{commit: its place in the history of HEAD, oldest first}: runs are listed in the order of the commits
    they ran on (none outside a git repository)."""
    log = subprocess.run(["git", "rev-list", "--reverse", "HEAD"], cwd=project, capture_output=True, text=True)
    return {commit: place for place, commit in enumerate(log.stdout.split())}


def _committed(project: Path) -> dict[str, str]:
    """{manifest id: the newest commit at which it is its study's run} over the history of `project` (none
    outside a git repository, where git log lists no commit)."""
    from chemspec.archive.targets import archived_ids

    return {digest: commit for digest, (commit, _) in archived_ids("", project).items()}


def _cells(store, manifest: dict) -> int | None:
    """The cells of a run as its report counts them (one per model and data size, whatever ranks and seeds
    trained); None where its cells object cannot be read."""
    try:
        return len(store.get_json(manifest["objects"]["cells"]))
    except (ArchiveError, KeyError, TypeError, ValueError):
        return None


def archive_show(run: str, root: str | Path = "archive") -> dict:
    """The manifest of one archived run: `run` is its id, or the first characters of it, or a study's name for
    that study's newest run."""
    from chemspec.archive import Store, find, scan

    if not run.strip():
        raise UsageError("the manifest id is empty; give one, or its first characters, or a study's name "
                         "(`chemspec archive ls` lists them)")
    store = Store(root)
    if run not in store.studies():
        digest, manifest = find(root, run)
        return {"manifest": digest, **manifest}
    named = store.ref(run)
    if others := [digest for digest, _ in scan(root)[0] if digest.startswith(run) and digest != named]:
        raise UsageError(f"{run!r} is a study's name and the start of manifest {others[0][:16]}"
                         f"{f' and {len(others) - 1} more' if len(others) > 1 else ''}: give more of that id, or "
                         f"{named[:16]} (the study's newest run)")
    try:
        digest, manifest = find(root, named)
    except UsageError:
        raise ArchiveError(f"{root}/refs/{run}.json names manifest {named[:16]}, which is missing; restore the archive "
                           "with `git checkout -- archive` (`chemspec archive verify` checks every object)") from None
    return {"manifest": digest, **manifest}


def archive_verify(root: str | Path = "archive") -> tuple[int, list[str]]:
    """Re-hash every archived object; return how many were checked and a line for each leftover of an
    interrupted write (harmless), or raise listing each problem."""
    from chemspec.archive import leftovers, verify

    checked, problems = verify(root)
    if problems:
        raise ArchiveError("archive verify found problems:\n" + "\n".join(f"  {p}" for p in problems))
    return checked, leftovers(root)


def archived_object(value, role: str, problem, source: str):
    """An archived summary object, checked like the file it was made from."""
    wrong = problem(value)
    if wrong:
        raise ArchiveError(f"the {role}.json archived at {source} cannot be read: {wrong}; `chemspec archive verify` "
                           "checks the archive's objects, or report that run with the chemspec that archived it")
    return value


@given_study
def pull(target: str, to: str | Path | None = None, study: str | None = None) -> dict:
    from chemspec.archive import pull as archive_pull
    from chemspec.archive.pull import PULLED

    if not target.strip():
        raise UsageError("the run to pull is empty; give a git revision or a manifest id "
                         "(`chemspec archive ls` lists them)")
    if to is not None and not str(to).strip():
        raise UsageError("--to is empty; give the folder to create, or leave --to out for pulled/<study>-<manifest id>")
    if to is not None and not (Path(to) / PULLED).is_file():  # a folder a pull made: the pull says what it holds
        refuse_owned(Path(to), f"--to {to}", "the pull", "the default pulled/<study>-<manifest id>/")
    return archive_pull(target, to, study=study)


@given_study
def refit(source: str, laws: list[str] | None = None, confidence: float | None = None,
          study: str | None = None) -> dict:
    """Refit archived cell losses (a pulled directory, a git revision or a manifest id) without training;
    `fitted` says whether any law could be fitted anywhere, `edited` which files of a pulled directory differ
    from the run it was pulled from."""
    from chemspec.archive.pull import edited
    from chemspec.archive.repository import commit_of, in_repository
    from chemspec.archive.snapshot import WORKTREE
    from chemspec.archive.targets import archived_ids, uncommitted_ids
    from chemspec.runtime.fit import error_fits, fits
    from chemspec.runtime.io import finite_json

    if not source.strip():
        raise UsageError("the source is empty; give a folder that `chemspec pull` made, or a git revision")
    if laws and len(set(laws)) != len(laws):
        raise UsageError(f"--law repeats a value ({', '.join(laws)}); give each law once")
    if confidence is not None and not 0 < confidence < 1:
        raise UsageError(f"--confidence {confidence} is not between 0 and 1; give a level such as 0.95")
    folder = Path(source)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{source} is a file; give the folder that holds cells.json and fit.json "
                         "(one that `chemspec pull` made) or a git revision")
    if not folder.is_dir() and source != WORKTREE and commit_of(source, ".") is None \
            and not (in_repository(".") and archived_ids(source, Path("."))) and not uncommitted_ids(source, Path(".")):
        outside = "" if in_repository(".") else " (this folder is in no git repository)"
        raise UsageError(f"{source} is neither a folder, a git revision nor an archived manifest id here{outside}; "
                         "give a folder that `chemspec pull` made, a commit, branch or tag, or a manifest id "
                         "(`chemspec archive ls`)")
    if folder.is_dir():
        if not (folder / "cells.json").is_file():
            raise ArchiveError(f"{folder} holds no cells.json; pull a run into it with `chemspec pull`")
        with _read_from(folder):
            cells = read_cells(folder)
        if laws and confidence is not None:  # all that fit.json would give besides the study's name
            old = {"study": _study_of(folder), "fits": [], "confidence": confidence}
        else:
            with _read_from(folder, alone="fit cells.json alone: give both --law and --confidence"):
                old = read_checked(folder / "fit.json", "fit", fit_problem, ("study",))
        if study is not None and old["study"] not in (None, study):
            raise ArchiveError(f"{folder} holds study {old['study']!r}, not {study!r}; drop --study or pull that study")
        name, changed = old["study"] or study, edited(folder)
    else:
        (cells, old, name), changed = _archived_summaries(source, study), []
    laws = laws or list(dict.fromkeys(f["law"] for f in old["fits"]))
    level = confidence if confidence is not None else old["confidence"]
    flat, joint = fits(cells, laws, level)
    fitted = any(f["status"] == "ok" for f in flat) or (joint or {}).get("status") == "ok"
    errors = error_fits(cells, level)
    return finite_json({"study": name, "source": source, "confidence": level, "fits": flat, "joint": joint,
                        "errors": errors, "fitted": fitted, "edited": changed})


@contextlib.contextmanager
def _read_from(folder: Path, alone: str = "") -> Iterator[None]:
    """An InputError reading a file of `folder` with the advice that fits: pull again, where the folder was pulled;
    and `alone`, the way around a fit.json that cannot be read."""
    try:
        yield
    except InputError as exc:
        pulled = (folder / "manifest.json").is_file()
        if not pulled and alone and not (folder / "fit.json").exists():
            raise InputError(exc.problem, alone) from None
        other = f", or {alone}" if alone else ""
        if not pulled:
            raise InputError(exc.problem, exc.fix + other) from None
        raise ArchiveError(f"{exc.problem}; {folder} was pulled, so no stage rewrites it: pull the run again into "
                           f"an empty folder (`chemspec pull REV --to DIR`){other}") from None


def _study_of(folder: Path) -> str | None:
    """The study whose results a folder holds, as its manifest.json or fit.json says, where either can be read;
    None for a folder of cells alone."""
    for name in ("manifest.json", "fit.json"):
        try:
            study = json.loads((folder / name).read_bytes())["study"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(study, str):
            return study
    return None


def _archived_summaries(source: str, study: str | None) -> tuple[list[dict], dict, str]:
    """The cells, fit and study of the run archived at `source`: WORKTREE, a git revision or a manifest id."""
    from chemspec.archive import Snapshot, summary
    from chemspec.archive.snapshot import WORKTREE
    from chemspec.archive.targets import resolve

    if source == WORKTREE:
        snapshot = Snapshot(source)
        _, manifest = snapshot.manifest(study)
    else:
        rev, _, digest = resolve(source, study, Path("."), worktree=True)
        snapshot = Snapshot(rev)
        manifest = snapshot.manifest_at(digest)
    cells, fit = (archived_object(summary(manifest, role, snapshot.json), role, problem, source)
                  for role, problem in (("cells", cells_problem), ("fit", fit_problem)))
    return cells, fit, manifest["study"]
