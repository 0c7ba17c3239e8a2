"""Keep DVC's record of finished stages when a recompiled study moves them to another dvc.yaml.

A grid of more than SPLIT_ABOVE train cells has one dvc.yaml per model size (pipelines/<size>/),
a smaller grid one dvc.yaml for everything. A study whose grid crosses that line moves its train
and sample stages between files, and DVC keeps each stage's record (its dvc.lock entry: command,
dependency and output hashes) beside the dvc.yaml that held it. Every stage runs from the project
root (`wdir`), so an entry means the same in either lock file: moving it keeps the trained cells
up to date instead of retraining them.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from chemspec.errors import CompileError
from chemspec.runtime.io import write_bytes

LOCK = "dvc.lock"


def stage_names(pipeline: str) -> set[str]:
    """The names DVC gives the stages of a dvc.yaml text: `name`, or `name@key` for each foreach key."""
    names = set()
    for name, stage in (yaml.safe_load(pipeline).get("stages") or {}).items():
        keys = stage.get("foreach") if isinstance(stage, dict) else None
        if isinstance(keys, dict):
            names.update(f"{name}@{key}" for key in keys)
        else:
            names.add(name)
    return names


def _read(path: Path) -> dict:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CompileError(f"{path} cannot be read ({exc.__class__.__name__}); restore it with "
                           f"`git checkout -- {path}` or delete it to rerun its stages") from None
    if document is not None and not isinstance(document.get("stages") if isinstance(document, dict) else None, dict):
        raise CompileError(f"{path} is not a DVC lock file; restore it with `git checkout -- {path}` "
                           "or delete it to rerun its stages")
    return document or {"schema": "2.0", "stages": {}}


def carry(root: Path, pipelines: dict[str, str], old: list[str]) -> list[str]:
    """Move dvc.lock entries so that each sits beside the dvc.yaml of `pipelines` ({path: text}) that
    now holds its stage; `old`: the dvc.yaml paths written before. Returns the stages moved."""
    home = {name: path for path, text in pipelines.items() for name in stage_names(text)}
    locks = {path: _read(root / Path(path).with_name(LOCK)) for path in sorted(set(old) | set(pipelines))}
    moved = []
    for path, lock in locks.items():
        for name in sorted(lock["stages"]):
            target = home.get(name)
            if target and target != path and name not in locks[target]["stages"]:
                locks[target]["stages"][name] = lock["stages"].pop(name)
                moved.append(name)
    if moved:
        for path, lock in locks.items():
            if path in pipelines:
                write_bytes(root / Path(path).with_name(LOCK), yaml.safe_dump(lock, sort_keys=False).encode())
    return moved
