"""Read archived runs at any git revision without checking it out, and compare two of them.

The small tier of the archive is committed, so `git show REV:archive/...` is all a diff needs: no
DVC remote, no checkout, no retraining. The pseudo-revision `WORKTREE` reads the files on disk.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
from pathlib import Path
from statistics import NormalDist
from typing import Any

from chemspec.archive.store import manifest_digest
from chemspec.errors import ArchiveError, UsageError

WORKTREE = "WORKTREE"


def commit_of(rev: str, cwd: str | Path) -> str | None:
    """The commit git resolves `rev` to in `cwd`, or None when it is no revision there."""
    done = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=cwd,
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def in_repository(cwd: str | Path) -> bool:
    return subprocess.run(["git", "rev-parse", "--git-dir"], cwd=cwd, capture_output=True).returncode == 0


class Snapshot:
    """The archive as it was at one revision (or in the working tree)."""

    def __init__(self, rev: str, root: str = "archive", cwd: str | Path = "."):
        if not rev.strip():
            raise UsageError("the revision is empty; give a commit, branch or tag, or WORKTREE for the files on disk")
        self.rev, self.root, self.cwd = rev, root, Path(cwd)

    def read(self, relative: str) -> bytes:
        path = f"{self.root}/{relative}"
        if self.rev == WORKTREE:
            file = self.cwd / path
            if not file.is_file():
                raise ArchiveError(f"{path} not found in the working tree")
            return file.read_bytes()
        done = subprocess.run(["git", "show", f"{self.rev}:{path}"], cwd=self.cwd, capture_output=True)
        if done.returncode != 0:
            raise ArchiveError(f"{path} not found at revision {self.rev}: "
                               f"{done.stderr.decode(errors='replace').strip() or 'no such file'}; "
                               "was the archive committed there?")
        return done.stdout

    def studies(self) -> list[str]:
        if self.rev == WORKTREE:
            return sorted(p.stem for p in (self.cwd / self.root / "refs").glob("*.json"))
        done = subprocess.run(["git", "ls-tree", "--name-only", f"{self.rev}:{self.root}/refs"], cwd=self.cwd,
                              capture_output=True, text=True)
        if done.returncode != 0:
            if not in_repository(self.cwd):
                raise ArchiveError(f"cannot read revision {self.rev!r}: {self.cwd.resolve()} is not in a git "
                                   "repository; run this in the study's project, or give WORKTREE to read the "
                                   "archive on disk")
            if commit_of(self.rev, self.cwd) is None:
                raise ArchiveError(f"{self.rev!r} is not a git revision here (a commit, branch or tag); "
                                   "`git log --oneline -- archive/refs` lists the commits that archived runs")
            raise ArchiveError(f"no archive at revision {self.rev} ({self.root}/refs is not committed there)")
        return sorted(Path(name).stem for name in done.stdout.split() if name.endswith(".json"))

    def study(self, name: str | None) -> str:
        found = self.studies()
        if name is not None:
            if name not in found:
                raise ArchiveError(f"study {name!r} is not archived at {self.rev}; archived: {found or 'none'}")
            return name
        if not found:
            where = "in the working tree" if self.rev == WORKTREE else f"at revision {self.rev}"
            raise ArchiveError(f"no study is archived {where} ({self.root}/refs is empty or missing); run the "
                               "study with `dvc repro`, whose archive stage writes it, and commit archive/")
        if len(found) > 1:
            raise ArchiveError(f"{len(found)} studies archived at {self.rev} ({', '.join(found)}); "
                               "name one with --study")
        return found[0]

    def object(self, digest: str) -> bytes:
        data = self.read(f"objects/{digest[:2]}/{digest}")
        if hashlib.sha256(data).hexdigest() != digest:
            raise ArchiveError(f"archive object {digest} at {self.rev} is corrupt; run `chemspec archive verify`")
        return data

    def json(self, digest: str) -> Any:
        return json.loads(self.object(digest))

    def manifest(self, study: str | None = None) -> tuple[str, dict]:
        name = self.study(study)
        where = f"{self.root}/refs/{name}.json"
        digest = manifest_digest(self.read(f"refs/{name}.json"),
                                 where if self.rev == WORKTREE else f"{self.rev}:{where}")
        return digest, self.json(digest)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def spec_changes(a: dict, b: dict) -> list[dict]:
    fa, fb = _flatten(a), _flatten(b)
    return [{"field": k, "before": fa.get(k), "after": fb.get(k)}
            for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def _standard_error(fit: dict) -> float | None:
    ci, level = fit.get("ci"), fit.get("confidence")
    if not ci or level is None or fit.get("n", 0) < 3:
        return None
    from scipy import stats  # not at module level: it would add a second to every CLI call

    df = max(fit["n"] - 2, 1)
    return (ci[1] - ci[0]) / (2 * stats.t.ppf(0.5 + level / 2, df))


def exponent_changes(a: list[dict], b: list[dict], level: float) -> list[dict]:
    """Each fitted exponent in both runs, with an approximate test of the change (independent normal errors)."""
    key = lambda f: (f["axis"], str(f["group"]), f["law"])  # noqa: E731
    before, after = {key(f): f for f in a}, {key(f): f for f in b}
    rows = []
    for k in sorted(set(before) | set(after)):
        fa, fb = before.get(k), after.get(k)
        row: dict = {"axis": k[0], "group": k[1], "law": k[2],
                     "before": fa and fa.get("exponent"), "ci_before": fa and fa.get("ci"),
                     "after": fb and fb.get("exponent"), "ci_after": fb and fb.get("ci"), "significant": None}
        if row["before"] is not None and row["after"] is not None:
            se_a, se_b = _standard_error(fa), _standard_error(fb)
            if se_a is not None and se_b is not None:
                z = (row["after"] - row["before"]) / math.hypot(se_a, se_b)
                row["z"] = z
                row["significant"] = bool(abs(z) > NormalDist().inv_cdf(0.5 + level / 2))
        rows.append(row)
    return rows


def _generation_changes(key: str, before: dict, after: dict) -> list[dict]:
    ga, gb = before.get("generation") or {}, after.get("generation") or {}
    return [{"cell": key, "metric": m, "before": ga.get(m), "after": gb.get(m)}
            for m in sorted(set(ga) | set(gb)) if ga.get(m) != gb.get(m)]


def cell_changes(a: list[dict], b: list[dict]) -> dict:
    key = lambda c: f"{c['model']}-{c['data_size']}"  # noqa: E731
    before, after = {key(c): c for c in a}, {key(c): c for c in b}
    common = sorted(set(before) & set(after))
    return {"added": sorted(set(after) - set(before)), "removed": sorted(set(before) - set(after)),
            "changed": [{"cell": k, "val_loss_before": before[k]["val_loss"], "val_loss_after": after[k]["val_loss"],
                         "delta": after[k]["val_loss"] - before[k]["val_loss"]}
                        for k in common if before[k]["val_loss"] != after[k]["val_loss"]],
            "generation": [change for k in common for change in _generation_changes(k, before[k], after[k])]}


def diff(rev_a: str, rev_b: str, study: str | None = None, cwd: str | Path = ".") -> dict:
    a, b = Snapshot(rev_a, cwd=cwd), Snapshot(rev_b, cwd=cwd)
    a.studies()  # a revision that is none says so before a study is picked from the other
    name = b.study(study)
    id_a, man_a = a.manifest(name)
    id_b, man_b = b.manifest(name)
    spec_b = b.json(man_b["objects"]["spec"])
    level = spec_b.get("fit", {}).get("confidence", 0.95)
    return {"study": name, "a": {"rev": rev_a, "manifest": id_a}, "b": {"rev": rev_b, "manifest": id_b},
            "spec": spec_changes(a.json(man_a["objects"]["spec"]), spec_b),
            "cells": cell_changes(a.json(man_a["objects"]["cells"]), b.json(man_b["objects"]["cells"])),
            "exponents": exponent_changes(a.json(man_a["objects"]["fit"])["fits"],
                                          b.json(man_b["objects"]["fit"])["fits"], level),
            "confidence": level}
