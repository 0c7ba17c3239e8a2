"""Where the project stands in its git repository: the revisions git resolves there, and the path from the
repository's top to the project, which git's `REV:path` and `:(top)` name committed files by."""

from __future__ import annotations

import subprocess
from pathlib import Path


def commit_of(rev: str, cwd: str | Path) -> str | None:
    """The commit git resolves `rev` to in `cwd`, or None when it is no revision there."""
    done = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=cwd,
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def in_repository(cwd: str | Path) -> bool:
    return subprocess.run(["git", "rev-parse", "--git-dir"], cwd=cwd, capture_output=True).returncode == 0


def git_top(cwd: str | Path) -> Path | None:
    """The top of the git work tree `cwd` lies in, resolved; None outside one."""
    done = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True)
    return Path(done.stdout.strip()).resolve() if done.returncode == 0 else None


def project_top(cwd: str | Path, root: str = "archive") -> Path | None:
    """The nearest folder above `cwd`, up to the git work tree's top, that holds `root` where cwd does not:
    the project that cwd is a folder below; None otherwise."""
    return _below(Path(cwd).resolve(), git_top(cwd), root)


def _below(here: Path, top: Path | None, root: str) -> Path | None:
    if top is None or (here / root).is_dir() or not here.is_relative_to(top):
        return None
    return next((folder for folder in here.parents if folder.is_relative_to(top) and (folder / root).is_dir()), None)


def elsewhere(cwd: str | Path, root: str = "archive") -> str:
    """Where `cwd` is a folder below the project (project_top): a clause saying to run the command there; empty
    otherwise."""
    top = project_top(cwd, root)
    return "" if top is None else f"; this is a folder below the project: run it from the project's top, {top}"


def _prefix(cwd: Path, root: str) -> str:
    top = git_top(cwd)
    if top is None or not cwd.is_relative_to(top):
        return ""
    project = _below(cwd, top, root) or cwd
    return "".join(f"{part}/" for part in project.relative_to(top).parts)


def from_top(path: str, cwd: str | Path, root: str = "archive") -> str:
    """`path` of the project (cwd, or the project it is a folder below) as a path from the repository's top,
    which `REV:<it>` and `:(top)<it>` read: a project may be a subfolder of its git repository."""
    return _prefix(Path(cwd).resolve(), root) + path
