"""The archive as committed at one git revision, or as on disk (the pseudo-revision `WORKTREE`).

The small tier of the archive is committed, so `git show REV:archive/...` is all a reader needs: no DVC
remote, no checkout, no retraining.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from chemspec.archive.repository import commit_of, elsewhere, from_top, in_repository
from chemspec.archive.store import manifest_digest
from chemspec.errors import ArchiveError, UnknownStudy, UsageError

T = TypeVar("T")

WORKTREE = "WORKTREE"


class Snapshot:
    """The archive as it was at one revision (or in the working tree)."""

    def __init__(self, rev: str, root: str = "archive", cwd: str | Path = ".", label: str | None = None):
        """`label`: the revision as the user typed it, for messages, where `rev` is the commit it names."""
        if not rev.strip():
            raise UsageError("the revision is empty; give a commit, branch or tag, or WORKTREE for the files on disk")
        self.rev, self.root, self.cwd, self.label = rev, root, Path(cwd), label or rev

    def read(self, relative: str) -> bytes:
        path = f"{self.root}/{relative}"
        if self.rev == WORKTREE:
            file = self.cwd / path
            if not file.is_file():
                if hint := elsewhere(self.cwd, self.root):
                    raise ArchiveError(f"{path} not found in the working tree{hint}")
                raise ArchiveError(f"{path} not found in the working tree; restore it from git (`git checkout -- "
                                   f"{self.root}`) or re-run the archive stage; `chemspec archive verify` checks "
                                   "the rest")
            return file.read_bytes()
        done = subprocess.run(["git", "show", f"{self.rev}:{from_top(path, self.cwd, self.root)}"], cwd=self.cwd,
                              capture_output=True)
        if done.returncode != 0:
            raise ArchiveError(f"{path} not found at revision {self.label}: "
                               f"{done.stderr.decode(errors='replace').strip() or 'no such file'}; "
                               "was the archive committed there?")
        return done.stdout

    def studies(self) -> list[str]:
        if self.rev == WORKTREE:
            return sorted(p.stem for p in (self.cwd / self.root / "refs").glob("*.json"))
        refs = from_top(f"{self.root}/refs", self.cwd, self.root)
        done = subprocess.run(["git", "ls-tree", "--full-tree", "--name-only", f"{self.rev}:{refs}"],
                              cwd=self.cwd, capture_output=True, text=True)
        if done.returncode != 0:
            if not in_repository(self.cwd):
                raise UsageError(f"cannot read revision {self.label!r}: {self.cwd.resolve()} is not in a git "
                                 "repository; run this in the study's project, or give WORKTREE to read the "
                                 "archive on disk")
            if commit_of("HEAD", self.cwd) is None:
                raise ArchiveError(f"cannot read revision {self.label!r}: the repository has no commits yet; commit "
                                   "the study's archive/ folder (`git add archive && git commit`), or give WORKTREE "
                                   "to read the archive on disk")
            if commit_of(self.rev, self.cwd) is None:
                raise UsageError(f"{self.label!r} is not a git revision here (a commit, branch or tag); "
                                 "`git log --oneline -- archive/refs` lists the commits that archived runs")
            raise ArchiveError(f"no archive at revision {self.label} ({self.root}/refs is not committed there)")
        return sorted(Path(name).stem for name in done.stdout.split() if name.endswith(".json"))

    def study(self, name: str | None) -> str:
        found = self.studies()
        if name is not None:
            if name not in found:
                hint = elsewhere(self.cwd, self.root) if self.rev == WORKTREE and not found else ""
                other = (f"; if {name!r} is a renamed {found[0]!r}, its runs before the rename are under the old name: "
                         f"give --study {found[0]}" if len(found) == 1 else "")
                wrong = UnknownStudy if found else ArchiveError  # a name among others, or nothing archived here
                raise wrong(f"study {name!r} is not archived at {self.label}; archived: {found or 'none'}{hint}{other}")
            return name
        if not found:
            where = "in the working tree" if self.rev == WORKTREE else f"at revision {self.label}"
            if self.rev == WORKTREE and (hint := elsewhere(self.cwd, self.root)):
                raise ArchiveError(f"no study is archived {where} ({self.root}/refs is missing here){hint}")
            raise ArchiveError(f"no study is archived {where} ({self.root}/refs is empty or missing); run the "
                               "study with `dvc repro`, whose archive stage writes it, and commit archive/")
        if len(found) > 1:
            raise UsageError(f"{len(found)} studies archived at {self.label} ({', '.join(found)}); "
                             "name one with --study")
        return found[0]

    def object(self, digest: str) -> bytes:
        data = self.read(f"objects/{digest[:2]}/{digest}")
        if hashlib.sha256(data).hexdigest() != digest:
            if self.rev == WORKTREE:
                raise ArchiveError(f"archive object {digest} in the working tree is corrupt; run `chemspec archive "
                                   "verify`, which lists every damaged object, and restore them from git (`git "
                                   f"checkout -- {self.root}`)")
            raise ArchiveError(f"archive object {digest} at revision {self.label} is corrupt: the bytes committed "
                               "there no longer hash to its name, so the run that names it cannot be read at that "
                               "revision; read it at a commit that holds an intact copy (`git log --oneline -- "
                               f"{self.root}/objects/{digest[:2]}/{digest}` lists the commits that changed it)")
        return data

    def json(self, digest: str) -> Any:
        return json.loads(self.object(digest))

    def manifest(self, study: str | None = None) -> tuple[str, dict]:
        name = self.study(study)
        where = f"{self.root}/refs/{name}.json"
        digest = manifest_digest(self.read(f"refs/{name}.json"),
                                 where if self.rev == WORKTREE else f"{self.rev}:{where}")
        return digest, self.manifest_at(digest)

    def manifest_at(self, digest: str) -> dict:
        """The manifest `digest`, checked: refused where it is no manifest chemspec wrote."""
        from chemspec.archive.shape import checked

        where = "in the working tree" if self.rev == WORKTREE else f"at revision {self.label}"
        return checked(self.json(digest), digest, where)


def given_study(function: Callable[..., T]) -> Callable[..., T]:
    """An API verb whose UnknownStudy is the UsageError it is where its `study` argument (--study) named it, not
    where chemspec chose the study itself."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def verb(*args: Any, **kwargs: Any) -> T:
        study = signature.bind(*args, **kwargs).arguments.get("study")
        try:
            return function(*args, **kwargs)
        except UnknownStudy as exc:
            if study is None:
                raise
            raise UsageError(str(exc)) from None
    return verb
