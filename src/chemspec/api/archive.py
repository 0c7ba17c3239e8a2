"""The archive verbs: ls, show and verify."""

from __future__ import annotations

from pathlib import Path

from chemspec.errors import ArchiveError, UsageError


def archive_ls(root: str | Path = "archive") -> tuple[list[dict], list[str], list[str]]:
    """The archived runs that can be read, newest of each study marked current, a line for each ref or
    manifest that cannot be read, and one for each leftover of an interrupted write."""
    from chemspec.archive import Store, leftovers, scan

    store = Store(root)
    found, problems = scan(root)
    current = {}
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
        from chemspec.archive.history import elsewhere

        if hint := elsewhere(Path(root).parent, Path(root).name):
            raise ArchiveError(f"no archived runs under {root}{hint} (or give the archive's folder with --root)")
        raise ArchiveError(f"no archived runs under {root}; run `dvc repro` first, or give the archive's folder "
                           "with --root")
    committed = _committed(Path(root).resolve().parent)
    return [{"manifest": digest, "study": m["study"], "cells": _cells(store, m), "at": committed.get(digest),
             "commit": (m["provenance"]["git"].get("commit") or "")[:12], "current": digest in current,
             "compute_hours": m["provenance"].get("compute_hours")}
            for digest, m in found], problems, leftovers(root)


def _committed(project: Path) -> dict[str, str]:
    """{manifest id: the newest commit at which it is its study's run} over the history of `project` (none
    outside a git repository, where git log lists no commit)."""
    from chemspec.archive.pull import archived_ids

    return {digest: commit for digest, (commit, _) in archived_ids("", project).items()}


def _cells(store, manifest: dict) -> int | None:
    """The cells of a run as its report counts them (one per model and data size, whatever ranks and seeds
    trained); None where its cells object cannot be read."""
    try:
        return len(store.get_json(manifest["objects"]["cells"]))
    except (ArchiveError, KeyError, TypeError, ValueError):
        return None


def archive_show(prefix: str, root: str | Path = "archive") -> dict:
    from chemspec.archive import find

    if not prefix.strip():
        raise UsageError("the manifest id is empty; give one, or its first characters "
                         "(`chemspec archive ls` lists them)")
    digest, manifest = find(root, prefix)
    return {"manifest": digest, **manifest}


def archive_verify(root: str | Path = "archive") -> tuple[int, list[str]]:
    """Re-hash every archived object; return how many were checked and a line for each leftover of an
    interrupted write (harmless), or raise listing each problem."""
    from chemspec.archive import leftovers, verify

    checked, problems = verify(root)
    if problems:
        raise ArchiveError("archive verify found problems:\n" + "\n".join(f"  {p}" for p in problems))
    return checked, leftovers(root)
