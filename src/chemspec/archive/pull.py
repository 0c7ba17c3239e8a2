"""Bring an archived run back into a directory for reanalysis, from git plus the DVC remote alone.

Small objects are read from the committed archive at the run's revision; checkpoints are fetched
through DVC at that revision (from the local cache, or the remote in a fresh clone). The directory
is assembled under a temporary name and renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from chemspec.archive.manifest import SUMMARIES, split_times, summary, walk
from chemspec.archive.remote import dvc_index, remote_options
from chemspec.archive.repository import from_top
from chemspec.archive.snapshot import WORKTREE, Snapshot
from chemspec.archive.stopping import stoppable
from chemspec.archive.store import json_digest
from chemspec.archive.targets import resolve
from chemspec.errors import ArchiveError, UsageError
from chemspec.runtime.io import atomic_dir, ignored_folder, sha256_tree, write_bytes, write_json

PULLED = "pulled.json"
"""The sha256 of each file of a pulled folder as the pull wrote it, by which refit names the files edited since."""
NAMES = {"spec": "spec.json", "data": "data.json", "split": "split.json", "selected": "selected.json",
         "fit": "fit.json", "cells": "cells.json", "timing": "timing.json"}


PULLED_DIR = "pulled"
"""Where a pull without --to writes (<study>-<manifest id>): a folder git ignores."""


def pull(target: str, to: str | Path | None, study: str | None = None, cwd: str | Path = ".") -> dict:
    """The run archived at `target` into `to` (default pulled/<study>-<manifest id>, a name that stays true
    when later commits come); checkpoints come from the remote its study named, into a folder git ignores."""
    cwd = Path(cwd)
    if target == WORKTREE:
        raise UsageError("a pull reads a committed run (its checkpoints come through DVC at that commit), and "
                         f"{WORKTREE}'s results are already on disk: read them with `chemspec report` or "
                         f"`chemspec refit {WORKTREE}`, or commit the run and pull that commit")
    rev, name, digest = resolve(target, study, cwd)
    to = Path(to) if to is not None else Path(PULLED_DIR) / f"{name}-{digest[:12]}"
    if to.exists() and any(to.iterdir()):
        if _holds(to, digest):
            return {"rev": rev, "manifest": digest, "study": name, "to": str(to), "already": True}
        if _pulled_digest(to) == digest:
            changed = edited(to)
            what = (f"edited since ({', '.join(changed)}); `chemspec refit {to}` reads it as edited" if changed else
                    "its checkpoints missing or other than the archived ones (refit needs none)")
            raise ArchiveError(f"{to} holds this run's pull, {what}. Give another --to DIR for a fresh copy, or "
                               "remove it")
        raise ArchiveError(f"{to} is not empty, and a pull writes a new directory; remove it, or give another "
                           "with --to DIR")
    snapshot = Snapshot(rev, cwd=cwd)
    manifest = snapshot.manifest_at(digest)
    with stoppable() as check, atomic_dir(to) as tmp:
        write_bytes(tmp / "manifest.json", snapshot.object(digest))
        for role, obj in walk(manifest):
            name = file_name(role)
            if role in SUMMARIES:  # with the times the archive keeps apart
                write_json(tmp / name, summary(manifest, role, snapshot.json))
            else:
                write_bytes(tmp / name, snapshot.object(obj))
        checkpoints = manifest.get("checkpoints", {})
        if checkpoints:
            remote = snapshot.json(manifest["objects"]["spec"])["archive"]["remote"]
            _fetch(checkpoints, manifest.get("checkpoint_sha256", {}), ignored_folder(tmp / "checkpoints"),
                   list(dict.fromkeys([archived_at(rev, manifest["study"], cwd), rev])), remote, cwd, check)
        check()
        write_json(tmp / PULLED, {"sha256": {name: hashlib.sha256((tmp / name).read_bytes()).hexdigest()
                                             for name in ["manifest.json", *map(file_name, dict(walk(manifest)))]}})
    if to.parent == Path(PULLED_DIR):  # chemspec's own folder of pulled runs, copies never to commit
        ignored_folder(to.parent)
    unchecked = sorted(set(checkpoints) - set(manifest.get("checkpoint_sha256", {})))
    return {"rev": rev, "manifest": digest, "study": manifest["study"], "to": str(to),
            "objects": len(walk(manifest)) + 1, "checkpoints": len(checkpoints), "unchecked": len(unchecked)}


def _pulled_digest(folder: Path) -> str | None:
    """The manifest id of the run a pull wrote into `folder`, as its record says (None where it holds no pull)."""
    try:
        digest = json.loads((folder / PULLED).read_bytes())["sha256"]["manifest.json"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return digest if isinstance(digest, str) else None


def _holds(folder: Path, digest: str) -> bool:
    """Whether `folder` holds the run `digest` as a pull wrote it: every file unedited, and every checkpoint there
    with the sha256 the archive recorded for it (where it recorded one)."""
    try:
        written = (folder / "manifest.json").read_bytes()
        if hashlib.sha256(written).hexdigest() != digest:
            return False
        manifest = json.loads(written)
    except (OSError, ValueError):
        return False
    hashes = manifest.get("checkpoint_sha256", {})
    return (folder / PULLED).is_file() and not edited(folder) and all(
        (folder / "checkpoints" / cell).exists() and (cell not in hashes or sha256_tree(folder / "checkpoints" / cell)
                                                      == hashes[cell]) for cell in manifest.get("checkpoints", {}))


def file_name(role: str) -> str:
    """The file of a pulled folder that holds the archived object `role`."""
    return NAMES.get(role) or (role if role.startswith("plots/") else f"{role}.json")


def edited(folder: Path) -> list[str]:
    """The files of a pulled folder that no longer hold what the pull wrote, as PULLED records it; in a folder
    pulled before that record, those that no longer hold what its manifest.json archived (a summary that held
    NaN, which the pull wrote as null, among them). In the manifest's order; none where there is no manifest.json."""
    try:
        written = json.loads((folder / PULLED).read_bytes())["sha256"]
        return [name for name, digest in written.items()
                if not (folder / name).is_file() or hashlib.sha256((folder / name).read_bytes()).hexdigest() != digest]
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return [PULLED]
    try:
        manifest = json.loads((folder / "manifest.json").read_bytes())
        objects = walk(manifest)
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ["manifest.json"]
    changed = []
    for role, digest in objects:
        try:
            data = (folder / file_name(role)).read_bytes()
            if role.startswith("plots/"):
                found = hashlib.sha256(data).hexdigest()
            else:
                value = json.loads(data)
                found = json_digest(split_times(value)[0] if role in SUMMARIES and "timing" in manifest["objects"]
                                    else value)
        except (OSError, ValueError):
            found = None
        if found != digest:
            changed.append(file_name(role))
    return changed


def _local_folder(url: str, cwd: Path) -> Path | None:
    """The folder a local remote's `url` names; None for any other remote."""
    if "://" in url and not url.startswith("file://"):
        return None
    folder = Path(url.removeprefix("file://")).expanduser()
    return folder if folder.is_absolute() else cwd / ".dvc" / folder  # DVC reads it beside its config


def _missing_folder(url: str, cwd: Path) -> Path | None:
    """The folder a local remote's `url` names, when it does not exist; None for any other remote."""
    folder = _local_folder(url, cwd)
    return None if folder is None or folder.exists() else folder


def archived_at(commit: str, study: str, cwd: Path) -> str:
    """The commit, `commit` or one before it, that last changed `study`'s archive ref: the run's own, whose
    dvc.lock records the checkpoints it archived where the ref and dvc.lock were committed together. A later
    commit's may record cells trained since by a partial `dvc repro` that did not archive them."""
    ref = from_top(f"archive/refs/{study}.json", cwd)
    log = subprocess.run(["git", "log", "-n1", "--format=%H", commit, "--", f":(top){ref}"],
                         cwd=cwd, capture_output=True, text=True)
    return log.stdout.strip() or commit


def _fetch(checkpoints: dict[str, str], hashes: dict[str, str], into: Path, revs: list[str], remote: str,
           cwd: Path, check: Callable[[], None]) -> None:
    """Each checkpoint into `into`/<key> through DVC, as the first of `revs` whose dvc.lock gives the one archived
    (checked against the hash archived with it; manifests written before hashes were recorded have none, and
    their checkpoints are taken as the first revision gives them); the first revision's error where none does."""
    from dvc.api import DVCFileSystem

    options = remote_options(cwd, remote)
    url = str(options["remote_config"].get("url", "?"))
    systems: dict[str, DVCFileSystem] = {}
    for key, path in sorted(checkpoints.items()):
        errors = []
        for rev in revs:
            fs = systems[rev] = systems.get(rev) or DVCFileSystem(str(cwd), rev=rev, **options)
            try:
                _fetch_one(fs, key, path, into, rev, hashes, remote, url, cwd)
                check()
                break
            except ArchiveError as exc:
                errors.append(exc)
                shutil.rmtree(into / key, ignore_errors=True)
        else:
            raise errors[0]


def _fetch_one(fs, key: str, path: str, into: Path, rev: str, hashes: dict[str, str], remote: str, url: str,
               cwd: Path) -> None:
    """One checkpoint at the filesystem's revision `rev` into `into`/<key>, checked against its archived hash."""
    try:
        fs.get(path, str(into / key), recursive=True)
    except Exception as exc:  # DVC raises many kinds; each means the same to the user
        if (folder := _missing_folder(url, cwd)) is not None:
            raise ArchiveError(f"checkpoint {key} ({path}) at {rev[:12]} could not be fetched: remote "
                               f"{remote!r} is the folder {folder}, which does not exist; point it at the "
                               "folder `dvc push` filled ($CHEMSPEC_REMOTE for the default remote, else "
                               f"`dvc remote modify {remote} url DIR`)") from None
        raise ArchiveError(f"checkpoint {key} ({path}) at {rev[:12]} could not be fetched from remote "
                           f"{remote!r} ({url}): {exc}; was `dvc push` run to it after that `dvc repro`? Where it "
                           "was (a fresh clone pulls it), a pull killed earlier left DVC's index of this project "
                           f"half-built: remove {dvc_index(cwd)} and pull again") from None
    if key in hashes and (found := sha256_tree(into / key)) != hashes[key]:
        if damaged := _damaged_in_cache(fs, path):
            raise ArchiveError(f"checkpoint {key} ({path}) at {rev[:12]} is damaged in this project's DVC cache: "
                               f"{', '.join(map(str, damaged))} no longer hold{'s' if len(damaged) == 1 else ''} "
                               f"the bytes DVC named {'it' if len(damaged) == 1 else 'them'} by, so nothing was "
                               "pulled; delete "
                               f"{'it' if len(damaged) == 1 else 'them'} and pull again, which fetches the "
                               f"checkpoint from remote {remote!r} ({url})")
        if damaged := [md5 for name, md5 in _file_md5s(fs, path) if _md5(into / key / name) != md5]:
            one = len(damaged) == 1
            where = str(_local_folder(url, cwd) or url).rstrip("/")
            files = ", ".join(f"{where}/files/md5/{md5[:2]}/{md5[2:]}" for md5 in damaged)
            it = "it" if one else "them"
            raise ArchiveError(f"checkpoint {key} ({path}) at {rev[:12]} is damaged on remote {remote!r} ({url}): "
                               f"{files} no longer hold{'s' if one else ''} the bytes DVC named {it} by, so "
                               f"nothing was pulled; delete {it} there, then push the "
                               f"checkpoint again from a project that holds it intact (`dvc push -r {remote}`): "
                               "DVC uploads no file the remote already has, so a push alone mends nothing")
        raise ArchiveError(f"checkpoint {key} ({path}) at {rev[:12]}, as DVC fetched it from remote {remote!r} "
                           f"({url}) or this project's cache, is not the one archived (sha256 {found[:16]}, "
                           f"archived {hashes[key][:16]}): that copy is damaged or was replaced, so nothing "
                           f"was pulled; push it again with `dvc push -r {remote}` from a project that holds it")


def _file_md5s(fs, path: str) -> list[tuple[str, str]]:
    """(file relative to `path`, the md5 DVC records for it) of each file of `path` at the filesystem's revision."""
    try:
        found = fs.find(path, detail=True)
    except Exception:  # noqa: BLE001 -- DVC raises many kinds; the caller then blames the copy it fetched
        return []
    files = []
    for name, info in sorted(found.items()):
        md5 = info.get("md5") or info.get("dvc_info", {}).get("md5")
        if md5:
            files.append((Path(name).relative_to(path).as_posix() if name != path else "", md5))
    return files


def _md5(file: Path) -> str | None:
    if not file.is_file():
        return None
    with open(file, "rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def _damaged_in_cache(fs, path: str) -> list[Path]:
    """The files of `path` in this project's DVC cache whose bytes no longer hash to their name."""
    objects = [(Path(fs.repo.cache.local.oid_to_path(md5)), md5) for _, md5 in _file_md5s(fs, path)]
    return [obj for obj, md5 in objects if obj.is_file() and _md5(obj) != md5]
