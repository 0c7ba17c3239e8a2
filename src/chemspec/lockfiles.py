"""What a project's dvc.lock files record of the last run of each stage: the identity its command carried, the
bytes of its outputs and the inputs it read. The root dvc.lock and each pipelines/<size>/ one are read."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import yaml

from chemspec.compiler.render import PIPELINES
from chemspec.errors import CompileError

LOCK = "dvc.lock"
IDENTITY = re.compile(r"--identity ([0-9a-f]+)")


def lock_path(pipeline: str) -> str:
    return (Path(pipeline).parent / LOCK).as_posix()


def read_yaml(path: Path) -> object:
    """The YAML document in `path`, None when there is no such file."""
    try:
        # libyaml's loader where PyYAML has it: a 200-cell study's dvc.lock reads in a tenth of the time
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        return yaml.load(path.read_text(encoding="utf-8"), Loader=loader) if path.is_file() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CompileError(f"{path} cannot be read ({exc.__class__.__name__}); restore it with "
                           f"`git checkout -- {path}` or delete it to rerun its stages") from None


HASH = re.compile(r"[0-9a-f]{32}(\.dir)?")


def read(path: Path) -> dict | None:
    """The lock document in `path`, None when there is no such file. One whose last entry is cut short (a dvc
    killed while it wrote the file) is refused: its outputs would read as missing."""
    document = read_yaml(path)
    if document is not None and not isinstance(document.get("stages") if isinstance(document, dict) else None, dict):
        raise CompileError(f"{path} is not a DVC lock file; restore it with `git checkout -- {path}` "
                           "or delete it to rerun its stages")
    for name, stage in (document or {}).get("stages", {}).items():
        files = [*(stage.get("deps") or []), *(stage.get("outs") or [])] if isinstance(stage, dict) else None
        if files is None or not isinstance(stage.get("cmd"), str) or not all(
                isinstance(f, dict) and isinstance(f.get("path"), str) and HASH.fullmatch(str(f.get("md5")))
                for f in files):
            raise CompileError(f"{path} is cut short at stage {name} (a dvc stopped while writing it); restore it "
                               f"with `git checkout -- {path}`, or delete it and run `dvc repro`, which takes the "
                               "stages it has run before from its run cache")
    return document


def recorded(root: Path) -> dict[Path, dict | None]:
    """The project's dvc.lock files that exist, each as read."""
    return {path: read(path) for path in [root / LOCK, *sorted(root.glob(f"{PIPELINES}/*/{LOCK}"))]
            if path.is_file()}


class Ran:
    """The last run as the project's dvc.lock files record it, read once: every stage entry by stage name."""

    def __init__(self, root: Path):
        locks = recorded(root)
        self.root = root
        self.stages, self.addresses = {}, {}
        for path, document in locks.items():
            for name, stage in ((document or {}).get("stages") or {}).items():
                if isinstance(stage, dict):
                    self.stages[name] = stage
                    self.addresses[name] = (name if path.parent == root else
                                            f"{path.parent.relative_to(root).as_posix()}/dvc.yaml:{name}")
        self.written = max((path.stat().st_mtime for path in locks), default=0.0)
        self.made = {out["path"]: out.get("md5") for stage in self.stages.values() for out in stage.get("outs") or []
                     if isinstance(out, dict) and isinstance(out.get("path"), str)}

    def identities(self) -> dict[str, str]:
        """The cell identity each stage last ran with, from the command recorded, by stage name."""
        found = {}
        for name, stage in self.stages.items():
            command = stage.get("cmd")
            if isinstance(command, str) and (match := IDENTITY.search(command)):
                found[name] = match.group(1)
        return found

    def unlike(self, files: list[str]) -> list[str]:
        """Those of `files` (paths from the project root) whose bytes are not the ones recorded for them as a
        stage's output: a `git checkout` without `dvc checkout` mixes runs so. Files that no lock records, or that
        are not there, are left out."""
        unlike = []
        for name in files:
            md5 = self.made.get(name)
            try:
                if isinstance(md5, str) and _md5(self.root / name) != md5:
                    unlike.append(name)
            except OSError:
                continue
        return unlike

    def missing(self) -> list[str]:
        """The stages some of whose recorded outputs (paths from the project root: per-size pipelines run there)
        are not on disk: deleted, or removed by DVC for a run that was stopped before it recorded any."""
        return [name for name, stage in self.stages.items()
                if any(isinstance(out, dict) and isinstance(out.get("path"), str)
                       and not (self.root / out["path"]).exists() for out in stage.get("outs") or [])]

    def resized(self) -> list[str]:
        """The stages some of whose recorded output files are on disk at another size than recorded: cut short
        or edited since (a folder, or a file of the recorded size, is left to `dvc status`)."""
        def other(out: object) -> bool:
            if not (isinstance(out, dict) and isinstance(out.get("size"), int) and isinstance(out.get("path"), str)
                    and not str(out.get("md5")).endswith(".dir")):
                return False
            try:
                return (self.root / out["path"]).stat().st_size != out["size"]
            except OSError:  # not there: missing() names it
                return False
        return [name for name, stage in self.stages.items() if any(other(out) for out in stage.get("outs") or [])]

    def behind(self) -> list[str]:
        """The stages whose entry records an input other than the one its producing stage's entry records as
        output: they ran before it last changed (a `dvc repro` stopped between the two)."""
        made = self.made
        return [name for name, stage in self.stages.items()
                if any(isinstance(dep, dict) and dep.get("path") in made and dep.get("md5") != made[dep["path"]]
                       for dep in stage.get("deps") or [])]

    def changed_inputs(self) -> dict[str, list[str]]:
        """{stage: its input files that no stage writes (a data file) and whose bytes are not the ones recorded as
        read}: the next `dvc repro` runs it again. A file of the recorded size last modified before the lock
        files were written is not read again (a data file can be gigabytes). A file that is not here, or a
        folder, is left to `dvc status`."""
        changed: dict[str, list[str]] = {}
        for name, stage in self.stages.items():
            for dep in stage.get("deps") or []:
                if not isinstance(dep, dict) or not isinstance(dep.get("path"), str) or dep["path"] in self.made:
                    continue
                md5, path = dep.get("md5"), self.root / dep["path"]
                if not isinstance(md5, str) or md5.endswith(".dir"):
                    continue
                try:  # not here: a clone before `dvc pull`, or a data file on another machine
                    status = path.stat()
                    differs = status.st_size != dep.get("size", status.st_size) or (
                        status.st_mtime >= self.written and _md5(path) != md5)
                except OSError:
                    continue
                if differs:
                    changed.setdefault(name, []).append(dep["path"])
        return changed


def _md5(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()
