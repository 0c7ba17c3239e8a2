"""Which archived run a target names: a git revision (with a study, or the only one archived there) or a manifest
id, or the start of one, found in the history of the archive's refs or in the working tree's archive."""

from __future__ import annotations

import subprocess
from pathlib import Path

from chemspec.archive.repository import commit_of, elsewhere, from_top, in_repository, project_top
from chemspec.archive.snapshot import WORKTREE, Snapshot
from chemspec.archive.store import manifest_digest
from chemspec.errors import ArchiveError, UsageError


def archived_ids(prefix: str, cwd: Path) -> dict[str, tuple[str, str]]:
    """{manifest id: (newest commit whose archive refs name it, its study)} for ids starting with `prefix`.
    A ref that some past commit left unreadable (a committed merge conflict) names no run and is passed over:
    history cannot be repaired, and it must not stop a pull of anything else."""
    found: dict[str, tuple[str, str]] = {}
    if not all(c in "0123456789abcdef" for c in prefix):
        return found
    log = subprocess.run(["git", "log", "--format=%H", "--", f":(top){from_top('archive/refs', cwd)}"], cwd=cwd,
                         capture_output=True, text=True)
    for commit in log.stdout.split():
        snapshot = Snapshot(commit, cwd=cwd)
        try:
            studies = snapshot.studies()
        except ArchiveError:  # a commit that deleted archive/refs names no run
            continue
        for study in studies:
            try:
                digest = manifest_digest(snapshot.read(f"refs/{study}.json"), f"{commit}:archive/refs/{study}.json")
            except ArchiveError:
                continue
            if digest.startswith(prefix):
                found.setdefault(digest, (commit, study))
    return found


def uncommitted_ids(prefix: str, cwd: Path) -> dict[str, str]:
    """{manifest id: study} of the runs in the working tree's archive (the project top's, from a folder below it)
    whose ids start with `prefix`."""
    from chemspec.archive.manifest import scan

    archive = cwd / "archive" if (cwd / "archive").is_dir() else (project_top(cwd) or cwd) / "archive"
    if not prefix or not all(c in "0123456789abcdef" for c in prefix) or not archive.is_dir():
        return {}
    return {digest: manifest["study"] for digest, manifest in scan(archive)[0] if digest.startswith(prefix)}


def _lookup(target: str, cwd: Path) -> tuple[str | None, dict[str, tuple[str, str]], dict[str, str]]:
    """What `target` names: a commit, the manifests archived in this history whose ids it starts, and those
    only the working tree's archive holds."""
    return commit_of(target, cwd), archived_ids(target, cwd), uncommitted_ids(target, cwd) if target != WORKTREE else {}


def resolve(target: str, study: str | None, cwd: Path, worktree: bool = False) -> tuple[str, str, str]:
    """(commit, study, manifest id) of the run `target` names: a git revision (with `study`, or the only
    study archived there), or a manifest id (or its start) archived in this history, whose study it is. With
    `worktree`, a manifest id that only the working tree's archive holds resolves to WORKTREE."""
    return _resolve(target, study, cwd, worktree, *_lookup(target, cwd))


def _resolve(target: str, study: str | None, cwd: Path, worktree: bool, commit: str | None,
             runs: dict[str, tuple[str, str]], local: dict[str, str]) -> tuple[str, str, str]:
    if commit is not None and (runs or local):
        raise ArchiveError(f"{target!r} is both a git revision (commit {commit[:12]}) and the start of manifest "
                           f"{', '.join(d[:16] for d in sorted({*runs, *local}))}; give the full commit or more of "
                           "the manifest id")
    if len(ids := {**{digest: name for digest, (_, name) in runs.items()}, **local}) > 1:
        listed = ", ".join(f"{digest[:16]} ({name}{'' if digest in runs else ', named by no commit'})"
                           for digest, name in sorted(ids.items()))
        raise ArchiveError(f"{len(ids)} archived manifests start with {target!r}: {listed}; give more characters")
    if not runs and local:
        ((digest, name),) = local.items()
        if not worktree:
            stored = from_top(f"archive/objects/{digest[:2]}/{digest}", cwd)
            committed = subprocess.run(["git", "cat-file", "-e", f"HEAD:{stored}"],
                                       cwd=cwd, capture_output=True).returncode == 0
            if committed:
                raise UsageError(f"manifest {digest[:16]} (study {name}) is committed, but no commit's archive/refs "
                                 "names it (a later run replaced it before the commit), and a pull fetches a run's "
                                 "checkpoints at the commit that names it: refit it from the working tree instead "
                                 f"(`chemspec refit {target}`)")
            raise UsageError(f"manifest {digest[:16]} (study {name}) is in the working tree's archive/ but in no "
                             "commit, and a pull reads a committed run: commit it (`git add -A && git commit`) and "
                             f"pull again, or refit it in place (`chemspec refit {target}`)")
        if study is not None and study != name:
            raise UsageError(f"manifest {digest[:16]} is a run of study {name!r}, not {study!r}; drop --study")
        if hint := elsewhere(cwd):
            raise UsageError(f"manifest {digest[:16]} (study {name}) is in no commit, only in the working tree's "
                             f"archive/{hint}")
        return WORKTREE, name, digest
    if commit is not None:
        digest, manifest = Snapshot(commit, cwd=cwd, label=target).manifest(study)
        return commit, manifest["study"], digest
    if not runs:
        outside = "" if in_repository(cwd) else f" ({cwd.resolve()} is in no git repository: run this in the study's " \
                                                "project)"
        raise UsageError(f"{target!r} is neither a git revision nor a manifest id archived in this history{outside}; "
                         "`chemspec archive ls` lists manifests")
    ((digest, (commit, name)),) = runs.items()
    if study is not None and study != name:
        raise UsageError(f"manifest {digest[:16]} is a run of study {name!r}, not {study!r}; drop --study, or "
                         f"give a manifest of {study!r} (`chemspec archive ls`)")
    return commit, name, digest


def revision(target: str, study: str | None, cwd: Path) -> tuple[str, str | None]:
    """The revision to read `target` at, and the study to read there: a git revision or WORKTREE with `study`,
    or for a manifest id (or its start) the commit whose archive names it, or WORKTREE where only the working
    tree's archive holds it, with the manifest's study."""
    if target == WORKTREE or not any((looked := _lookup(target, cwd))[1:]):
        return target, study
    commit, name, _ = _resolve(target, study, cwd, True, *looked)
    return commit, name
