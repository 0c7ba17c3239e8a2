"""What a compile changes for a project that ran before: the stages the next `dvc repro` runs, folders no stage
writes now, data drawn again, and DVC records carried to this version's layout, each said as a note."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from chemspec.compiler import Cells
from chemspec.compiler.render import short_identity, stage_identities
from chemspec.lockfiles import Ran
from chemspec.runtime.io import TEMPORARY, load_yaml
from chemspec.words import count, listed


def carried(result, root: Path) -> list[str]:
    """The notes on what compile moved or left for `result` (a CompileResult): DVC records carried to this
    version's layout, rank-1 stages renamed, and folders of stages the grid no longer has."""
    notes = []
    if result.rechosen:
        notes.append(f"carried the DVC records of {count(len(result.rechosen), 'finished stage')} to this version's "
                     "layout (a train stage depends on its own choice file in selected/, not on all of selected.json; "
                     "no identity holds the estimator): a cell retrains only if select keeps another configuration "
                     "for it")
    if result.renamed:
        notes.append(f"{count(len(result.renamed), 'rank-1 stage')} named <cell>-r1 before now "
                     f"({listed(result.renamed, 3)}) keep their DVC "
                     "records and folders under their names now, without -r1: a cell's name no longer depends on "
                     "hpo.tpe.keep, so they do not retrain (commit the .gitignore files that moved with them)")
    if result.leftovers:
        one = len(result.leftovers) == 1
        shown = listed((os.path.join(root, f) if str(root) != "." else f for f in result.leftovers), 3)
        notes.append(f"{count(len(result.leftovers), 'folder')} of stages this grid no longer has "
                     f"{'stays' if one else 'stay'} on disk ({shown}), "
                     f"tracked by no stage now; delete {'it' if one else 'them'} when you no longer need "
                     f"{'it' if one else 'them'}")
    return notes


def previous(params: str | None, cells: Cells) -> dict | None:
    """The cells of the same study that the params file compiled before held; None where it held none (a first
    compile, another study, or a params file of another layout)."""
    try:
        old = (load_yaml(params or "") or {})["cells"]
        return old if old["archive"]["study"] == cells.archive.study else None
    except (yaml.YAMLError, KeyError, TypeError, AttributeError):
        return None


CELL_FOLDERS = ("tpe", "calibrate", "train", "sample", ".resume")
"""The folders under results/<study>/ that hold a folder for each cell of a per-cell stage (compiler.expand)."""


def leftovers(cells: Cells, root: Path) -> list[str]:
    """The folders in the study's per-cell stage folders that no stage writes now (a model or data size, rank,
    configuration or stage gone from the grid, at this compile or an earlier one): on disk, tracked by no stage.
    A stage's temporary folders and the checkpoints that resume set aside as damaged are not leftovers."""
    now = {getattr(cell, key, None) for stage in (cells.tpe, cells.calibrate, cells.train, cells.sample)
           for cell in stage.values() for key in ("out_dir", "resume_dir")}
    results = Path(cells.fit.out_dir).parent
    found = set()
    for parent in (results / name for name in CELL_FOLDERS):
        try:
            found.update(f"{parent.as_posix()}/{child.name}" for child in (root / parent).iterdir()
                         if child.is_dir() and not TEMPORARY.match(child.name) and child.suffix != ".damaged")
        except OSError:  # not there, or not readable: nothing to name
            continue
    return sorted(found - now)


def finished_checkpoints(cells: Cells, root: Path, record: Ran | None = None) -> str | None:
    """A note on the checkpoints that stopped runs left for cells which dvc.lock now records as done with their
    identity and outputs (DVC restored them from its cache, so no run resumed from the checkpoint and removed it);
    None where there are none. `record`: the project's dvc.lock files, where the caller has read them."""
    record = record or Ran(root)
    ran, gone = record.identities(), set(record.missing())
    stages = {f"{name}@{key}": cell for name, group in (("tpe", cells.tpe), ("calibrate", cells.calibrate),
                                                         ("train", cells.train)) for key, cell in group.items()}
    done = [(name, cell.resume_dir) for name, cell in stages.items()
            if ran.get(name) == short_identity(cell) and name not in gone and (root / cell.resume_dir).is_dir()]
    if not done:
        return None
    size = sum(f.stat().st_size for _, folder in done for f in (root / folder).rglob("*") if f.is_file())
    one = len(done) == 1
    return (f"{listed(folder for _, folder in done)} "
            f"{'holds the checkpoint' if one else 'hold the checkpoints'} of a stopped run of "
            f"{listed(name for name, _ in done)}, which dvc.lock records "
            f"as done since (restored from DVC's run cache), so only a forced run (`dvc repro -f --no-run-cache -s "
            f"{record.addresses[done[0][0]] if one else '<stage>'}`) would resume from {'it' if one else 'them'}: "
            f"delete {'it' if one else 'them'} to free {size / 1e6:,.1f} MB")


def other_studies(cells: Cells, root: Path) -> list[str]:
    """A note for each study this project ran before whose results or data folders stay (compiling another study
    into the project replaces its pipeline)."""
    results, data = Path(cells.fit.out_dir).parent.parent, Path(cells.data.out_dir).parent
    names = {p.parent.parent.name for p in (root / results).glob("*/fit/fit.json")}
    names |= {p.parent.name for p in (root / data).glob("*/data.json")}
    notes = []
    for name in sorted(names - {cells.archive.study}):
        kept = [os.path.join(root, f) if str(root) != "." else f for f in (f"{results.as_posix()}/{name}",
                                                                           f"{data.as_posix()}/{name}")
                if (root / f).is_dir()]
        one = len(kept) == 1
        notes.append(f"study {name!r}, which this project ran before, left {' and '.join(kept)} on disk, tracked by "
                     f"no stage now (its archived runs stay in archive/): remove {'it' if one else 'them'} when you "
                     f"no longer need {'it' if one else 'them'} (`git rm -r` what git tracks, such as fit/fit.json)")
    return notes


REDRAWN = {("data", "seed"): "seed", ("data", "representation"): "data.representation",
           ("data", "max_length"): "model.sizes' largest max_length", ("split", "validation"): "data.validation",
           ("split", "test"): "data.test"}
"""Fields of the data and split cells, besides data.source's, whose change draws every set again."""
SPLIT = ("data.validation", "data.test")
"""Those of REDRAWN that the split stage alone reads."""
VALUES = ("data.source.units",)
"""Fields of data.source that change the values read from each structure, not which structures are read (another
energy_key may: ANI-1x keeps the structures with a finite energy at its level)."""


def redrawn(old: dict | None, cells: Cells, root: Path) -> list[str]:
    """A note where the study's data has been read before (`old`: previous) and this compile changes which
    molecules or structures it holds, or how they are split: every cell then trains on other data."""
    try:
        if old is None or not (root / old["data"]["out_dir"]).is_dir():
            return []
        was = {(stage, key): old[stage][key] for stage, key in REDRAWN}
        was.update((("source", key), value) for key, value in old["data"]["source"].items())
    except (KeyError, TypeError, AttributeError):  # a params file of another layout: nothing to say
        return []
    now = {(stage, key): getattr(getattr(cells, stage), key) for stage, key in REDRAWN}
    now.update((("source", key), value) for key, value in cells.data.source.items())
    changed = [REDRAWN.get(key, f"data.source.{key[1]}") for key in dict.fromkeys([*was, *now])
               if was.get(key) != now.get(key) and key[1] not in ("sample", "smiles", "stores")]
    if not changed:
        return []
    if changed == ["data.source.file"]:
        return ["data.source.file changed since the last compile, so the data stage reads the file again: where it "
                "holds what the last one did (a file renamed or moved), no cell retrains; where it holds other "
                "molecules or structures, the split draws other sets and every cell retrains on them"]
    if all(name in VALUES for name in changed):
        return [f"{', '.join(changed)} changed since the last compile, so the data stage reads the file's "
                "structures again with other values (energies, forces or positions); the split keeps the same "
                "structures in the same sets, and every cell retrains on the new values"]
    source = cells.data.source  # read whole, without a sample, a file or package draws nothing by the seed
    whole = ("file" in source or "package" in source) and not source.get("max_molecules")
    stages = ("the split stage draws other" if all(name in SPLIT or (whole and name == "seed") for name in changed)
              else "the data and split stages draw other molecules or structures and other")
    grow = ("; data.source.max_molecules draws a new sample of the file, not one that holds the last: a study "
            "that will grow can set it for its largest size from the start"
            if "data.source.max_molecules" in changed else "")
    return [f"{', '.join(changed)} changed since the last compile, so {stages} validation and test sets, and every "
            f"cell retrains on them{grow}"]


PER_CELL = {"train": "train cell", "tpe": "TPE run", "calibrate": "calibration run", "sample": "sample stage"}


def rerun(cells: Cells, root: Path, redrawn: list[str]) -> list[str]:
    """The notes on what the next `dvc repro` runs, where the project ran before (dvc.lock records stages), led by
    `redrawn` (the notes on data drawn again, which name the fields that changed): the per-cell stages that never
    ran or whose identity is not the one dvc.lock records, and the stages whose input files changed since. Judged
    against what ran, not against the last compile: an edit undone runs nothing."""
    record = Ran(root)
    ran = record.identities()
    if not ran:  # nothing ran under dvc (stages run by hand read the data, which `redrawn` knows)
        return list(redrawn)
    compiled = stage_identities(cells)
    changed = {name for name, ident in compiled.items() if name in ran and ran[name] != ident}
    new = {name for name in compiled if name not in ran}
    if "data" not in changed and "split" not in changed:
        redrawn = []  # a field changed since the last compile, and back to what ran
    parts = []
    for group, noun in PER_CELL.items():
        fresh = sum(name.startswith(f"{group}@") for name in new)
        edited = sum(name.startswith(f"{group}@") for name in changed)
        if fresh or edited:
            why = [f"{fresh} new" if fresh else "", f"{edited} whose settings changed" if edited else ""]
            parts.append(f"{count(fresh + edited, noun)} ({', '.join(filter(None, why))})")
    notes = list(redrawn)
    if parts:
        notes.append(f"against their last run as dvc.lock records it, the next `dvc repro` runs {', '.join(parts)}")
    if {"select"} & (changed | new) or any(name.startswith("tpe@") for name in changed | new):
        notes.append("select runs again: a train cell retrains where it keeps another configuration")
    for stage in ("data", "split"):
        if stage in changed and not redrawn:
            notes.append(f"the {stage} stage's settings changed since it last ran: it runs again, and a cell "
                         "retrains where the data or sets it trains on change")
    for stage, paths in record.changed_inputs().items():
        if stage in compiled and stage not in changed:
            notes.append(f"{', '.join(paths)} changed since the {stage} stage last read "
                         f"{'it' if len(paths) == 1 else 'them'}: it runs again, and a cell retrains where the data "
                         "or sets it trains on change")
    return notes
