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


def project_root(path: str | Path) -> Path | None:
    """The DVC project that `path` belongs to: the nearest folder with .dvc, not looking past the
    first git repository's top (a nested repository is a project of its own)."""
    for folder in [Path(path).absolute(), *Path(path).absolute().parents]:
        if (folder / ".dvc").is_dir():
            return folder
        if (folder / ".git").exists():
            return None
    return None


def _remote_config(remotes: dict, name: str) -> dict | None:
    """The configuration of remote `name`: the project's, or the default directory's; None if neither."""
    if name in remotes:
        return dict(remotes[name])
    return {"url": str(default_url())} if name == DEFAULT else None


def ensure_remote(root: str | Path, name: str = DEFAULT) -> str:
    """Make sure the DVC project at `root` has the remote `name` (create the default one if needed),
    and make it the target of a plain `dvc push` unless the user chose another default."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        remotes, current = repo.config["remote"], repo.config["core"].get("remote")
        known, remote = name in remotes, _remote_config(remotes, name)
        if remote is None:
            raise ArchiveError(f"archive.remote {name!r} is not a DVC remote of this project; add it with "
                               f"`dvc remote add {name} <url>` (s3://, gs://, ssh://, or a directory)")
        url = remote.get("url")
        take_default = current in (None, DEFAULT) and current != name
        if not known:
            Path(url).mkdir(parents=True, exist_ok=True)
        if not known or take_default:
            with repo.config.edit("local") as config:
                if not known:
                    config["remote"][DEFAULT] = remote
                if take_default:
                    config["core"]["remote"] = name
    if take_default:
        said = f"{name} -> {url} (now the default of `dvc push`)"
    elif current != name:
        said = (f"{name} -> {url}; `dvc push` goes to {current!r}, this project's default: push with "
                f"`dvc push -r {name}`, or `dvc remote default --local {name}`")
    else:
        said = f"{name} -> {url}"
    wanted = str(default_url())
    if known and name == DEFAULT and os.environ.get("CHEMSPEC_REMOTE") and url != wanted:
        said += (f"; CHEMSPEC_REMOTE names {wanted}, but this project keeps the remote it was set up with: to "
                 f"move it, copy what was pushed there and run `dvc remote modify --local {DEFAULT} url {wanted}`")
    return said


def remote_options(root: str | Path, name: str = DEFAULT) -> dict:
    """DVCFileSystem arguments that reach the remote `name` as this checkout configures it, even at a
    revision whose config lacks it (or configured it elsewhere)."""
    remote = _remote_config({}, name)
    if (Path(root) / ".dvc").is_dir():
        from dvc.repo import Repo

        with Repo(str(root)) as repo:
            remote = _remote_config(repo.config["remote"], name)
    if remote is not None:
        return {"remote": name, "remote_config": remote}
    raise ArchiveError(f"archive.remote {name!r} of this run is not a DVC remote of this project; add it with "
                       f"`dvc remote add {name} <url>` and pull again")


def dvc_index(cwd: Path) -> str:
    """The folder of DVC's index of the project at `cwd`, which DVC keeps outside it (in its site cache)."""
    from dvc.repo import Repo

    with Repo(str(cwd)) as repo:
        return str(Path(repo.site_cache_dir) / "index")
