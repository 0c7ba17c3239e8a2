"""Atomic file output: every stage writes to a temporary sibling and renames, so an interrupted stage
leaves either the old result or none -- never a half-written file that DVC would take for a result."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from chemspec.errors import InputError


# mkstemp/mkdtemp create owner-only files; outputs get the modes that open() and mkdir() would give.
_UMASK = os.umask(0)
os.umask(_UMASK)
_IGNORE_ALL = b"# written by chemspec: nothing here belongs in git\n*\n"
LEFT_AFTER_S = 600
"""How long a temporary name stands untouched before a write of the same name takes it for a dead one's."""
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.(?P<kind>tmp|old)$")  # see final_path


def write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = _temporary(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _temporary(path: Path, data: bytes) -> Path:
    """`data` written and synced to a new temporary sibling of `path` (.NAME.XXXXXXXX.tmp)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return Path(tmp)


@contextlib.contextmanager
def written_together(files: dict[Path, bytes]) -> Iterator[None]:
    """Write every file to a temporary sibling, run the block, then rename them all into place (the old
    files put back if a rename fails): a failed write, or a failure in the block, leaves every file as it
    was and no temporary behind. The OSError of a failed write names the file it was for."""
    folders = {folder for path in files for folder in (path.parent, *path.parent.parents) if not folder.exists()}
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            try:
                staged.append((_temporary(path, data), path))
            except OSError as exc:
                exc.filename = str(path)  # a failed write() leaves it None, a failed open names the temporary
                raise
        yield
        _swap_in(staged)
        folders = set()
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()


def finite_json(value: Any) -> Any:
    """JSON has no NaN or infinity: a non-finite number (an open interval's end, a diverged loss) becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def to_json(value: Any) -> bytes:
    return (json.dumps(finite_json(value), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
            + "\n").encode()


def ignored_folder(path: str | Path) -> Path:
    """Make `path` a folder that git ignores whole (a `.gitignore` of `*` inside it, as pytest's cache has), for
    what a project must not commit: resume checkpoints, launch logs."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / ".gitignore").exists():
        write_bytes(folder / ".gitignore", _IGNORE_ALL)
    return folder


def write_json(path: str | Path, value: Any) -> None:
    write_bytes(path, to_json(value))


@contextlib.contextmanager
def reading(path: Path, what: str) -> Iterator[None]:
    """A failed read of a file that a stage wrote (users may edit or merge them) as InputError naming it."""
    try:
        yield
    except FileNotFoundError:
        raise InputError(f"{path} is missing", "run the stage that writes it first (`dvc repro`)") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # ValueError: JSON, UnicodeDecodeError
        raise InputError(f"{path} is not {what} ({exc.__class__.__name__}: {exc})", restore_hint(path)) from None


def restore_hint(path: Path) -> str:
    """The fix for a stage-written file that is damaged or edited."""
    return f"restore it (`dvc checkout {path}` or `git checkout -- {path}`) or rerun the stage that writes it"


def load_yaml(text: str | bytes) -> Any:
    """A YAML document (safe) through libyaml where PyYAML was built with it: a params.yaml or dvc.lock of
    hundreds of cells parses several times faster than in pure Python."""
    import yaml

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def read_json(path: str | Path, require: tuple[str, ...] = ()) -> Any:
    """A JSON file's value; InputError when it is missing or malformed, or is not a mapping with the
    keys in `require`."""
    path = Path(path)
    with reading(path, "readable JSON"):
        value = json.loads(path.read_text(encoding="utf-8"))
    missing = [key for key in require if not isinstance(value, dict) or key not in value]
    if missing:
        raise InputError(f"{path} has no {', '.join(map(repr, missing))}", restore_hint(path))
    return value


def read_array(path: str | Path) -> np.ndarray:
    """A .npy file's array; InputError when it is missing or malformed."""
    path = Path(path)
    with reading(path, "a readable array"):
        return np.load(path, allow_pickle=False)


def read_npz(path: str | Path, require: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The arrays of an .npz file; InputError when it is missing, malformed or lacks a `require`d array."""
    path = Path(path)
    with reading(path, "a readable .npz archive"), np.load(path, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    missing = [name for name in require if name not in arrays]
    if missing:
        raise InputError(f"{path} has no {', '.join(map(repr, missing))}", restore_hint(path))
    return arrays


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `path` only if the block succeeds."""
    path = Path(path)
    with _scratch(path.parent, path.name) as tmp:
        yield tmp
        _swap_in([(tmp, path)])


@contextlib.contextmanager
def staged(folder: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory; what the block writes there replaces the entries of the same
    names in `folder` together, and only if the block succeeds."""
    folder = Path(folder)
    with _scratch(folder, "staged") as tmp:
        (tmp / ".gitignore").write_bytes(_IGNORE_ALL)  # what a killed process leaves here stays out of git
        yield tmp
        _swap_in([(item, folder / item.name) for item in sorted(tmp.iterdir()) if item.name != ".gitignore"])


@contextlib.contextmanager
def _scratch(parent: Path, name: str) -> Iterator[Path]:
    """A temporary folder in `parent`, removed afterwards; the folders made for it are removed too where the
    block fails (a failed pull leaves no empty pulled/)."""
    made = [folder for folder in (parent, *parent.parents) if not folder.exists()]
    parent.mkdir(parents=True, exist_ok=True)
    _sweep(parent, {name})
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=".tmp"))
    done = False
    try:
        tmp.chmod(0o777 & ~_UMASK)
        yield tmp
        done = True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        for folder in [] if done else made:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()


def final_path(path: str | Path) -> Path:
    """`path` with this module's temporary names (.NAME.XXXXXXXX.tmp or .old, .staged.XXXXXXXX.tmp) read
    as the output they become, so that an error names the file the user knows."""
    parts = []
    for part in Path(path).parts:
        temporary = TEMPORARY.match(part)
        if not temporary:
            parts.append(part)
        elif temporary["name"] != "staged":
            parts.append(temporary["name"])
    return Path(*parts)


def _swap_in(pairs: list[tuple[Path, Path]]) -> None:
    """Rename each new path to its target. What stands at the targets is first moved aside (as a hidden
    .NAME.XXXXXXXX.old beside it), put back if any rename fails, and deleted once every new one stands;
    only a process killed in between leaves it there."""
    aside: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    for parent in {path.parent for _, path in pairs}:  # the new paths may be .tmp siblings: only .old goes
        _sweep(parent, {path.name for _, path in pairs if path.parent == parent}, ("old",))
    try:
        for _, path in pairs:
            if path.exists() or path.is_symlink():
                old = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old")
                os.replace(path, old)
                aside.append((path, old))
        for new, path in pairs:
            os.replace(new, path)
            placed.append(path)
    except BaseException:
        for path in placed:
            _delete(path)
        for path, old in aside:
            os.replace(old, path)
        raise
    for _, old in aside:
        with contextlib.suppress(OSError):
            _delete(old)
        if old.exists() or old.is_symlink():
            print(f"warning: could not delete the replaced {old}; delete it by hand", file=sys.stderr)


def _sweep(parent: Path, names: set[str], kinds: tuple[str, ...] = ("tmp", "old")) -> None:
    """Delete what killed processes left in `parent` of earlier writes of `names` (their .NAME.XXXXXXXX.tmp
    or .old, untouched for LEFT_AFTER_S): a SIGKILL skips every clean-up. Other names are left alone, and
    younger ones: another stage, or another command, may be writing beside these, into the same folder, now."""
    with contextlib.suppress(OSError):
        for entry in list(parent.iterdir()):
            if ((left := TEMPORARY.match(entry.name)) and left["name"] in names and left["kind"] in kinds
                    and time.time() - entry.lstat().st_mtime > LEFT_AFTER_S):
                _delete(entry)


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(path: str | Path) -> str:
    """Hash of a file, or of a directory's relative names and file contents in sorted order."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + sha256_file(file).encode())
    return digest.hexdigest()
