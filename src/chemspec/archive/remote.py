"""The large tier: checkpoints, data and splits stay DVC-tracked and move with `dvc push` / `dvc pull`.

`archive.remote: default` means a local directory remote that needs no service: it is written to
`.dvc/config.local` (never committed, so no machine's path enters the repository) and points at
$CHEMSPEC_REMOTE, or $XDG_CACHE_HOME/chemspec/dvc-remote, or ~/.cache/chemspec/dvc-remote. Any
other name must be a DVC remote the user configured (S3, GCS, SSH, ...: `dvc remote add NAME URL`).
"""

from __future__ import annotations

import os
from pathlib import Path

from chemspec.errors import ArchiveError

DEFAULT = "default"


def default_url() -> Path:
    if os.environ.get("CHEMSPEC_REMOTE"):
        return Path(os.environ["CHEMSPEC_REMOTE"]).expanduser().resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (cache / "chemspec" / "dvc-remote").resolve()


def ensure_remote(root: str | Path, name: str = DEFAULT, make_default: bool = True) -> str:
    """Make sure the DVC project at `root` has the remote `name` (create the default one if needed) and,
    with `make_default`, make it the project's default in .dvc/config.local, so that a plain `dvc push`
    goes where the study archives: an earlier compile may have left another name there."""
    from dvc.repo import Repo

    repo = Repo(str(root))
    remotes = repo.config["remote"]
    known = name in remotes
    if not known and name != DEFAULT:
        raise ArchiveError(f"archive.remote {name!r} is not a DVC remote of this project; add it with "
                           f"`dvc remote add {name} <url>` (s3://, gs://, ssh://, or a directory)")
    url = remotes[name].get("url") if known else default_url()
    if not known:
        url.mkdir(parents=True, exist_ok=True)
    if not known or make_default:
        with repo.config.edit("local") as config:
            if not known:
                config["remote"][DEFAULT] = {"url": str(url)}
            if make_default:
                config["core"]["remote"] = name
    return f"{name} -> {url}"


def remote_options(name: str = DEFAULT) -> dict:
    """DVCFileSystem arguments that reach the remote even at a revision whose config lacks it."""
    if name == DEFAULT:
        return {"remote": DEFAULT, "remote_config": {"url": str(default_url())}}
    return {"remote": name}
