"""Keep DVC's record of finished stages when a recompiled study moves them to another dvc.yaml.

A grid of more than SPLIT_ABOVE train cells has one dvc.yaml per model size (pipelines/<size>/),
a smaller grid one dvc.yaml for everything. A study whose grid crosses that line moves its train
and sample stages between files, and DVC keeps each stage's record (its dvc.lock entry: command,
dependency and output hashes) beside the dvc.yaml that held it. Every stage runs from the project
root (`wdir`), so an entry means the same in either lock file: moving it keeps the trained cells
up to date instead of retraining them.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from chemspec.compiler.render import PIPELINES
from chemspec.errors import CompileError
from chemspec.runtime.io import write_bytes

LOCK = "dvc.lock"
IDENTITY = re.compile(r"--identity ([0-9a-f]+)")


def lock_path(pipeline: str) -> str:
    return (Path(pipeline).parent / LOCK).as_posix()


def stage_names(document: object) -> set[str]:
    """The names DVC gives the stages of a dvc.yaml document: `name`, or `name@key` per foreach key."""
    stages = document.get("stages") if isinstance(document, dict) else None
    names = set()
    for name, stage in (stages if isinstance(stages, dict) else {}).items():
        keys = stage.get("foreach") if isinstance(stage, dict) else None
        if isinstance(keys, dict):
            names.update(f"{name}@{key}" for key in keys)
        else:
            names.add(name)
    return names


def _load(path: Path) -> object:
    """The YAML document in `path`, None when there is no such file."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CompileError(f"{path} cannot be read ({exc.__class__.__name__}); restore it with "
                           f"`git checkout -- {path}` or delete it to rerun its stages") from None


def _lock(path: Path) -> dict | None:
    document = _load(path)
    if document is not None and not isinstance(document.get("stages") if isinstance(document, dict) else None, dict):
        raise CompileError(f"{path} is not a DVC lock file; restore it with `git checkout -- {path}` "
                           "or delete it to rerun its stages")
    return document


def carry(root: Path, pipelines: dict[str, str], old: list[str], written: list[str]) -> list[str]:
    """Move dvc.lock entries so that each sits beside the dvc.yaml of `pipelines` ({path: new text})
    that now holds its stage. `old`: the dvc.yaml paths on disk, whose stages the entries describe.
    Returns the stages moved; appends each lock file to `written` as it is written, those that gain
    entries first, so an interruption leaves an entry in two locks rather than in none."""
    home = {name: path for path, text in pipelines.items() for name in stage_names(yaml.safe_load(text))}
    before = {name: path for path in old for name in stage_names(_load(root / path))}
    locks = {path: _lock(root / lock_path(path)) for path in sorted(set(old) | set(pipelines))}
    gained, lost, moved = set(), set(), []
    for name, source in sorted(before.items()):
        target, entries = home.get(name), (locks[source] or {}).get("stages", {})
        if target is None or target == source or name not in entries:
            continue
        if locks[target] is None:
            locks[target] = {"schema": "2.0", "stages": {}}
        locks[target]["stages"][name] = entries.pop(name)  # the source describes the stage that ran
        gained.add(target)
        lost.add(source)
        moved.append(name)
    for path in [*sorted(gained), *sorted(lost - gained)]:
        if path in pipelines:
            write_bytes(root / lock_path(path), yaml.safe_dump(locks[path], sort_keys=False).encode())
            written.append(lock_path(path))
    return moved


def locked_identities(root: Path) -> dict[str, str]:
    """The cell identity each stage last ran with, from the commands that the project's dvc.lock files
    record (the root one and each pipelines/<size>/ one), by stage name."""
    found = {}
    for path in [root / LOCK, *sorted(root.glob(f"{PIPELINES}/*/{LOCK}"))]:
        stages = (_lock(path) or {}).get("stages") if path.is_file() else None
        for name, stage in (stages if isinstance(stages, dict) else {}).items():
            command = stage.get("cmd") if isinstance(stage, dict) else None
            if isinstance(command, str) and (match := IDENTITY.search(command)):
                found[name] = match.group(1)
    return found
