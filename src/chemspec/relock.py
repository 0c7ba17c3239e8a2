"""Keep DVC's record of finished stages when a recompiled study moves them to another dvc.yaml.

A grid of more than SPLIT_ABOVE train cells has one dvc.yaml per model size (pipelines/<size>/),
a smaller grid one dvc.yaml for everything. A study whose grid crosses that line moves its train
and sample stages between files, and DVC keeps each stage's record (its dvc.lock entry: command,
dependency and output hashes) beside the dvc.yaml that held it. Every stage runs from the project
root (`wdir`), so an entry means the same in either lock file: moving it keeps the trained cells
up to date instead of retraining them.

Until 2026-12-06 every train stage depended on the whole selected.json; it now depends on its own choice
file (selected/r1.json), which select writes. `carry_selection` records each such stage as depending on
the choice file that select will write from the selection it trained with, so that the stage retrains
only if select keeps another configuration for it: DVC compares the hash, and a wrong guess only costs
the retraining that would have happened anyway. Until then TPE and train cells also held the study's
estimator in their identity, which changed nothing they trained: their records take the new identity.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from chemspec.compiler.cells import RETIRED_ESTIMATOR, Cells, TrainCell, identity
from chemspec.compiler.render import PARAMS
from chemspec.lockfiles import IDENTITY, lock_path, read, read_yaml, recorded
from chemspec.runtime.io import load_yaml, to_json, write_bytes

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


def _dump(lock: dict) -> bytes:
    """A lock document as DVC writes it (YAML 1.2, which reads an md5 such as 1234e5678 as a number unless
    quoted, as PyYAML's YAML 1.1 writer leaves it)."""
    from dvc.utils.serialize import dumps_yaml

    return dumps_yaml(lock).encode()


def carry(root: Path, pipelines: dict[str, str], old: list[str], written: list[str]) -> list[str]:
    """Move dvc.lock entries so that each sits beside the dvc.yaml of `pipelines` ({path: new text})
    that now holds its stage. `old`: the dvc.yaml paths on disk, whose stages the entries describe.
    Returns the stages moved; appends each lock file to `written` as it is written, those that gain
    entries first, so an interruption leaves an entry in two locks rather than in none."""
    home = {name: path for path, text in pipelines.items() for name in stage_names(yaml.safe_load(text))}
    before = {name: path for path in old for name in stage_names(read_yaml(root / path))}
    locks = {path: read(root / lock_path(path)) for path in sorted(set(old) | set(pipelines))}
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
            write_bytes(root / lock_path(path), _dump(locks[path]))
            written.append(lock_path(path))
    return moved


def _selection(root: Path, selected: str, md5: str, seen: dict) -> dict | None:
    """The kept configurations by group of the selected.json whose md5 a lock entry recorded: the file in the
    workspace if it is that one, else DVC's cached copy; None when neither is (or cannot be read)."""
    if md5 not in seen:
        seen[md5] = None
        for path in (root / selected, root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]):
            try:
                data = path.read_bytes()
                kept = json.loads(data).get("kept") if hashlib.md5(data).hexdigest() == md5 else None
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(kept, dict) and all(isinstance(v, list) for v in kept.values()):
                seen[md5] = kept
                break
    return seen[md5]


def _choice(root: Path, cell: TrainCell, dep: dict, selected: str, seen: dict) -> dict | None:
    """The lock's record of `cell`'s choice file, as select writes it from the selection `dep` recorded."""
    kept = _selection(root, selected, str(dep.get("md5")), seen)
    if kept is None:
        return None
    chosen = kept.get(cell.group, [])
    body = to_json({"group": cell.group, "rank": cell.rank,
                    "hparams": chosen[cell.rank - 1] if cell.rank <= len(chosen) else None})
    return {"path": cell.selected, "hash": "md5", "md5": hashlib.md5(body).hexdigest(), "size": len(body)}


def _compiled_estimator(root: Path) -> dict | None:
    """The estimator options of the params.yaml on disk (compile reads it before replacing it): where the
    study changes its estimator as it moves to this version, cells carry the identity they ran with."""
    try:
        text = (root / PARAMS).read_text(encoding="utf-8")
        compiled = load_yaml(text)["cells"]
        found = [compiled["select"].get("estimator"), *(cell.get("estimator") for cell in compiled["tpe"].values())]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError, KeyError, AttributeError):
        return None
    return next((e for e in found if isinstance(e, dict) and set(e) == set(RETIRED_ESTIMATOR)), None)


def _identities(cells: Cells, estimators: list[dict]) -> dict[str, tuple[set[str], str]]:
    """{stage: (the identities it had with each of `estimators` in its training cell's identity, its identity
    now)} of the TPE, calibrate, train and sample stages, short as their commands carry them."""
    found = {}
    for stage in ("tpe", "calibrate", "train"):
        for key, cell in getattr(cells, stage).items():
            found[f"{stage}@{key}"] = ({identity(cell, e)[:16] for e in estimators}, identity(cell)[:16])
    for key, cell in cells.sample.items():
        olds = {identity(cell.model_copy(update={"train_identity": identity(cells.train[key], e)}))[:16]
                for e in estimators}
        found[f"sample@{key}"] = (olds, identity(cell)[:16])
    return found


def carry_ranks(root: Path, cells: Cells, pipelines: dict[str, str], written: list[str], moved: list[str]) -> None:
    """Carry the lock entries of the rank-1 train and sample stages that studies with hpo.tpe.keep above 1 named
    <cell>-r1 until 2026-12-06 to <cell>, their name now, into the dvc.lock beside the dvc.yaml of `pipelines`
    that holds them now, and move their folders (and a train cell's checkpoints) with them: DVC keys a stage's
    record and run cache by its name, command and paths, so they would retrain. A stage whose new name has a
    record or a folder already (a leftover of an earlier keep 1) is left to run again. Appends each stage to
    `moved` as its folder moves and each lock file to `written` as it is written, the one gaining the entry
    first, so an interruption costs at most that stage's retraining."""
    locks = recorded(root)
    names = {name for lock in locks.values() for name in (lock or {}).get("stages", {})}
    folders = {**{f"train@{key}": cell.out_dir for key, cell in cells.train.items()},
               **{f"sample@{key}": cell.out_dir for key, cell in cells.sample.items()}}
    candidates = {name for name in names if name.endswith("-r1") and name not in folders
                  and name.removesuffix("-r1") in folders and name.removesuffix("-r1") not in names}
    if not candidates:  # the usual case: spare hashing every cell's identity and reading params.yaml
        return
    home = {name: root / lock_path(path)
            for path, text in pipelines.items() for name in stage_names(yaml.safe_load(text))}
    current = {root / lock_path(path) for path in pipelines}
    identities = _identities(cells, [cells.select.estimator, *filter(None, [_compiled_estimator(root)])])
    for path, lock in list(locks.items()):
        stages = (lock or {}).get("stages", {})
        for old in [name for name in stages if name in candidates]:
            new, stage = old.removesuffix("-r1"), stages[old]
            if new not in home or not isinstance(stage, dict):
                continue
            (olds, now), command = identities[new], stage.get("cmd")
            match = IDENTITY.search(command) if isinstance(command, str) else None
            target = root / folders[new]
            source = target.with_name(f"{target.name}-r1")
            if match is None or match.group(1) not in olds | {now} or target.exists() or not source.is_dir():
                continue
            source.rename(target)
            if (train := cells.train.get(new.removeprefix("train@"))) is not None:
                resume = root / train.resume_dir
                if resume.with_name(f"{resume.name}-r1").is_dir() and not resume.exists():
                    resume.with_name(f"{resume.name}-r1").rename(resume)
            moved.append(new)
            if locks.get(home[new]) is None:
                locks[home[new]] = {"schema": "2.0", "stages": {}}
            locks[home[new]]["stages"][new] = _renamed(stages.pop(old), old.split("@", 1)[1], new.split("@", 1)[1])
            for changed in [file for file in dict.fromkeys([home[new], path]) if file in current]:  # obsolete: deleted
                _save(root, changed, locks[changed], written)


def _renamed(stage: dict, old: str, new: str) -> dict:
    """A lock entry of cell `old` as that of cell `new`: its command, and every path with a folder named `old`."""
    stage["cmd"] = stage["cmd"].replace(f"--cell {old} ", f"--cell {new} ")
    for kind in ("deps", "outs", "metrics"):
        for entry in stage.get(kind) or []:
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                entry["path"] = "/".join(new if part == old else part for part in entry["path"].split("/"))
    return stage


def _save(root: Path, path: Path, lock: dict, written: list[str]) -> None:
    """Write `lock` to `path` and name it once in `written`, relative to `root`."""
    write_bytes(path, _dump(lock))
    if path.relative_to(root).as_posix() not in written:
        written.append(path.relative_to(root).as_posix())


def carry_selection(root: Path, cells: Cells, written: list[str]) -> list[str]:
    """Carry the lock entries of cells recorded before 2026-12-06 (see the module's docstring): a TPE, calibrate,
    train or sample stage whose command holds the identity computed with the study's estimator (as compiled
    now, or as params.yaml on disk has it) gets its identity now, and a train stage's selected.json dependency
    becomes its choice file. Returns the stages changed."""
    locks = recorded(root)
    if not any(locks.values()):  # nothing ran yet: no record to carry, and no params.yaml to read
        return []
    estimators = [cells.select.estimator, *filter(None, [_compiled_estimator(root)])]
    identities, moved, seen = _identities(cells, estimators), [], {}
    for path, lock in locks.items():
        changed = set()
        for name, stage in (lock or {}).get("stages", {}).items():
            if name not in identities or not isinstance(stage, dict):
                continue
            (olds, new), command = identities[name], stage.get("cmd")
            match = IDENTITY.search(command) if isinstance(command, str) else None
            if match and match.end() == len(command) and match.group(1) in olds - {new}:
                stage["cmd"] = command[:match.start(1)] + new
                changed.add(name)
            cell = cells.train.get(name.removeprefix("train@")) if name.startswith("train@") else None
            deps = stage.get("deps") if cell is not None else None
            for i, dep in enumerate(deps if isinstance(deps, list) else []):
                if isinstance(dep, dict) and dep.get("path") == cells.select.out:
                    if (choice := _choice(root, cell, dep, cells.select.out, seen)) is not None:
                        deps[i] = choice
                        changed.add(name)
        if changed:
            moved += sorted(changed)
            _save(root, path, lock, written)
    return moved
