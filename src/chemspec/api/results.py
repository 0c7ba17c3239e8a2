"""`chemspec report`: a study's results as compiled here, or a run archived at a revision (diff: api.diffing;
pull, refit and the archive's ls/show/verify: api.archive)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from chemspec.api.archive import archived_object
from chemspec.api.changes import finished_checkpoints
from chemspec.api.compiled import changed_study, compiled_from, unarchived
from chemspec.api.folders import pages_folder
from chemspec.api.stages import load_cells
from chemspec.archive.manifest import split_times
from chemspec.archive.shape import checked
from chemspec.archive.snapshot import given_study
from chemspec.archive.store import Store, json_digest
from chemspec.compiler import Cells
from chemspec.compiler.render import stage_identities
from chemspec.errors import ArchiveError, ChemspecError, InputError, UsageError
from chemspec.lockfiles import Ran
from chemspec.runtime.io import read_json, staged, write_bytes
from chemspec.runtime.result_files import (SPEED_KEYS, calibration_problem, cells_problem, fit_problem, read_checked,
                                          read_results, selected_problem)
from chemspec.words import count, listed


@dataclass
class Report:
    study: str
    cells: list[dict]
    fits: list[dict]
    fit: dict
    cost: dict | None
    files: list[str]
    calibration: dict | None = None
    manifest: str | None = None
    provenance: dict | None = None
    stale: str | None = None
    """Why the results are not those of the study as compiled now (stale_note); None when they are."""
    selected: dict | None = None
    """The select stage's selected.json: each configuration TPE ranked, and what it decided for it."""
    data: dict | None = None
    """The data stage's data.json: what it read, kept and left out."""
    model: str = ""
    """The family the study trains, as a sentence (report.model_text)."""
    family: str = ""
    """model.family of the study: chemgpt, schnet, painn or spookynet."""
    pages: str | None = None
    """Why the pages a report without files leaves on disk show another run; None where they do not."""
    checkpoints: str | None = None
    """The checkpoints of stopped runs that no run will resume (changes.finished_checkpoints)."""

    def as_json(self) -> dict:
        """`ci` is the Wald (t) interval, `ci_profile` the profile (F) one where the law has it (see
        report.intervals_note, repeated under `intervals`); a null end is open."""
        from chemspec.report import intervals_note

        return {"study": self.study, "family": self.family, "confidence": self.fit["confidence"],
                "intervals": intervals_note(self.fit["confidence"]),
                "cells": [{k: c[k] for k in ("model", "params", "data_size", "val_loss", "test_loss", "status",
                                             "force_mae_meV_per_A", "energy_mae_meV", "baseline", "generation",
                                             "wall_time_s", *SPEED_KEYS)
                           if k in c}
                          for c in self.cells],
                "fits": [{"axis": f["axis"], "group": f["group"], "law": f["law"],
                          "exponent": f.get("exponent"), "ci": f.get("ci"), "ci_profile": f.get("ci_profile"),
                          "n": f["n"],
                          "status": f["status"], **({"reason": f["reason"]} if "reason" in f else {})}
                         for f in self.fits],
                "joint": self.fit.get("joint"), "bootstrap": self.fit.get("bootstrap"), "noise": self.fit.get("noise"),
                "statistics": self.fit.get("statistics"), "cost": self.cost,
                "calibration": {k: self.calibration[k] for k in ("budget_fraction", "estimator", "scores", "cost")}
                if self.calibration else None, "selected": self.selected, "data": self.data, "manifest": self.manifest,
                "provenance": self.provenance, "stale": self.stale}


@given_study
def report(params: str | Path = "params.yaml", write: bool = True, source: str | None = None,
           study: str | None = None, out: str | Path | None = None) -> Report:
    """The study's cells and fits; also writes report/index.html and report/report.md beside them.

    With `source` (a git revision, or WORKTREE), the run archived there instead: nothing is read from
    the workspace or retrained, and the pages go to `out` (default reports/<study>/)."""
    from chemspec import report as pages

    if out is not None and not write:
        raise UsageError("--out names where the pages go, and --no-files writes none: drop one of them")
    if source is not None:
        return _archived_report(source, study, write, out, Path(params))
    if out is not None:
        raise UsageError("--out applies with --from only; without it the pages go beside the study's results "
                         "(the report/ folder next to its fit/): drop --out, or add --from")
    cells = load_cells(params)
    if study is not None and study != cells.fit.study:
        raise UsageError(f"--study {study!r}: {params} compiles study {cells.fit.study!r}, whose results are reported "
                         f"without --from; for the run of {study!r} archived at a revision add --from (e.g. `--from "
                         f"HEAD --study {study}`), or drop --study")
    root = Path(params).parent  # the compiled paths are relative to the project root, where params.yaml is
    folder = root / cells.fit.out_dir
    table, fit_path = folder / "cells.json", folder / "fit.json"
    if not (table.is_file() and fit_path.is_file()):
        # A fresh clone of a project holds its archive and git's files (fit.json), not DVC's (cells.json).
        archived = Store(root / cells.archive.root).ref_path(cells.archive.study).is_file()
        missing = " and ".join(path.name for path in (table, fit_path) if not path.is_file())
        spec = compiled_from(Path(params))
        pull = (f"; where `dvc repro` ran and pushed them (as in a clone), `chemspec compile "
                f"{os.path.relpath(spec)}` sets this copy's DVC remote and `dvc pull` then fetches them"
                if spec is not None and (root / "dvc.lock").is_file() else "")
        raise ChemspecError(f"no results yet for study {cells.fit.study!r} ({folder} holds no {missing}){pull}; "
                            + ("the archive holds a run of it: `chemspec report --from WORKTREE` shows that run "
                               "without training; or run `dvc repro`" if archived else "run `dvc repro`"))
    rows, fit = read_results(folder)
    selected = (read_checked(root / cells.select.out, "select", selected_problem)
                if (root / cells.select.out).is_file() else None)
    record = Ran(root)
    stale = with_study_change(stale_note(cells, root, params, rows, selected, record=record), params)
    manifest, provenance = _archived_as(root / cells.archive.root, cells.archive.study, rows)
    calibration = None
    if cells.calibration is not None and (root / cells.calibration.out_dir / "calibration.json").is_file():
        calibration = read_checked(root / cells.calibration.out_dir / "calibration.json", "calibration",
                                   calibration_problem)
    data = _data_summary(root / cells.data.out_dir / "data.json")
    files, out = [], folder.parent / "report"
    if write:
        link = Path(os.path.relpath(folder / "plots", out)).as_posix()
        ctx = pages.context(cells.fit.study, cells.archive.spec, rows, fit, selected, folder / "plots", manifest,
                            calibration, plots_link=link, stale=stale, provenance=provenance, data=data)
        with staged(out) as tmp:
            files = pages.write(tmp, ctx, out)
    return Report(study=cells.fit.study, cells=rows, fits=fit["fits"], fit=fit, cost=fit.get("cost"),
                  files=files, calibration=calibration, manifest=manifest, provenance=provenance, stale=stale,
                  selected=selected, data=data, model=pages.model_text(cells.archive.spec),
                  family=cells.archive.spec["model"]["family"], pages=None if write else _older_pages(out, manifest),
                  checkpoints=finished_checkpoints(cells, root, record))


def _older_pages(out: Path, manifest: str | None) -> str | None:
    """Where the pages in `out` were written for an archived run other than `manifest`, a note saying so."""
    try:
        shown = re.search(r"^Archived as manifest ([0-9a-f]{64})\.", (out / "report.md").read_text(), re.M)
    except (OSError, UnicodeDecodeError):
        return None
    if manifest is None or shown is None or shown[1] == manifest:
        return None
    return (f"{os.path.relpath(out)}/ holds the pages of an earlier run (manifest {shown[1][:12]}; this one is "
            f"{manifest[:12]}): run `chemspec report` without --no-files to rewrite them before you commit them")


def stale_note(cells: Cells, root: Path, params: str | Path, rows: list[dict] = (),
               selected: dict | None = None, on_disk: bool = True, record: Ran | None = None) -> str | None:
    """Why the results on disk are not those of the study as compiled now: the stages whose cell identity
    differs from the one their last run recorded in dvc.lock (or that never ran), which `dvc repro`
    will run (none known when no dvc.lock records any: stages run by hand), those whose input files (a data
    file) changed since they read them, and the train cells of `rows`
    whose hyperparameters are not those `selected` (the selection on disk) keeps for them now, led (with
    `on_disk`, where the results on disk are read) by the result files whose bytes are not those dvc.lock
    records; None when there are none of these. `record`: the dvc.lock files, where the caller has read them."""
    record, compiled = record or Ran(root), stage_identities(cells)
    ran = record.identities()
    stale = [name for name, ident in compiled.items() if ran.get(name) != ident] if ran else []
    behind = [name for name in record.behind() if name in compiled and name not in stale]
    inputs = {name: paths for name, paths in record.changed_inputs().items() if name in compiled and name not in stale}
    off = _off_selection(cells, rows, selected)
    read = [f"{cells.fit.out_dir}/cells.json", f"{cells.fit.out_dir}/fit.json", cells.select.out]
    unlike = record.unlike(read) if on_disk else []
    mixed = (f"{', '.join(unlike)} {'is' if len(unlike) == 1 else 'are'} not what dvc.lock records, so these "
             "results may mix two runs (a `git checkout` without `dvc checkout` does this): run `dvc checkout` to "
             "restore the run that dvc.lock records, or, where the files on disk are the results you mean (stages "
             "run by hand), `dvc commit` to record them") if unlike else None
    gone = [name for name in record.missing() if name in compiled and name not in stale] if on_disk else []
    if gone:
        named = listed(gone)
        mixed = "\n".join(filter(None, [mixed, (
            f"the outputs that dvc.lock records of {count(len(gone), 'stage')} are not on disk ({named}); the report "
            "shows their results as the fit stage recorded them: `dvc checkout` restores them from DVC's cache (`dvc "
            "pull` from the remote, in a clone), and `dvc repro` runs the stages whose outputs neither holds")]))
    resized = [name for name in record.resized() if name in compiled and name not in stale] if on_disk else []
    if resized:
        mixed = "\n".join(filter(None, [mixed, (
            f"outputs of {count(len(resized), 'stage')} are on disk at another size than dvc.lock records "
            f"({listed(resized)}): cut short or edited since; `dvc status` lists them, and `dvc repro` puts back a run "
            "it has cached or runs the stage again")]))
    if not stale and not behind and not off and not inputs:
        return mixed
    reasons = []
    if stale:
        named = listed(stale)
        after = ("; the train cells run again where the selection changes"
                 if any(name == "select" or name.startswith("tpe@") for name in stale) else "")
        reasons.append(f"{count(len(stale), 'stage')} did not run as compiled ({named}){after}")
    if behind:
        named = listed(behind)
        reasons.append(f"{count(len(behind), 'stage')} ran before {'its' if len(behind) == 1 else 'their'} inputs "
                       f"last changed ({named})")
    reasons += [f"{', '.join(paths)} changed since the {name} stage last read {'it' if len(paths) == 1 else 'them'}"
                for name, paths in inputs.items()]
    if off:
        named = listed(off)
        reasons.append(f"{count(len(off), 'train cell')} trained with hyperparameters that {cells.select.out} no "
                       f"longer keeps for {'it' if len(off) == 1 else 'them'} ({named})")
    what = [f"{params} as compiled now" if stale or behind or off else "", "their data files" if inputs else ""]
    note = (f"these results predate {' and '.join(filter(None, what))}: {'; '.join(reasons)}; they are shown as they "
            "were computed. Run `dvc repro` to bring them up to date")
    return note if mixed is None else f"{mixed}\n{note}"


def with_study_change(stale: str | None, params: str | Path) -> str | None:
    """`stale`, led by why the results are not those of the study file as it compiles now (edited and not
    compiled again), where they are not; the study file is not validated against its data file."""
    try:
        changed = changed_study(Path(params), data=False)
    except ChemspecError as exc:  # a study that compiles to nothing here, as where a file blocks an output
        note = f"whether the study file compiles to other files than {params} now is unknown: {exc}"
    else:
        if changed is None:
            return stale
        why, again, errors = changed
        note = f"{why}; these results are of the study as last compiled: run `{again}`, then `dvc repro`{errors}"
    return note if stale is None else f"{note}\n{stale}"


def _off_selection(cells: Cells, rows: list[dict], selected: dict | None) -> list[str]:
    """The train cells among `rows` that trained with other hyperparameters than the selection keeps for
    their search and rank now (a selection rerun after they trained)."""
    kept = (selected or {}).get("kept", {})
    off = []
    for row in rows:
        key = str(row.get("cell", "")).removeprefix("train@")
        cell = cells.train.get(key)
        if row.get("status") != "ok" or cell is None or cell.group not in kept:
            continue
        configs = kept[cell.group]  # a rank beyond them: the selection now gates it
        if cell.rank > len(configs) or row.get("hparams") != configs[cell.rank - 1]:
            off.append(key)
    return off



def _archived_as(archive: Path, study: str, rows: list[dict]) -> tuple[str | None, dict | None]:
    """The manifest id and provenance of the archived run made from these results; (None, None) when
    the archive holds no such run (not archived yet, archived before a rerun, or unreadable)."""
    store = Store(archive)
    try:
        digest = store.ref(study)
        manifest = checked(store.get_json(digest), digest, "in the working tree")
        if manifest["objects"]["cells"] not in (json_digest(split_times(rows)[0]), json_digest(rows)):
            return None, None  # archived without its times, or (before 2026-12-05) with them
        return digest, manifest["provenance"]
    except (ArchiveError, ValueError, KeyError, TypeError):
        return None, None


def _data_summary(path: Path) -> dict | None:
    """The data stage's data.json where it is on disk and readable; None otherwise (the report then says nothing
    of the data)."""
    try:
        return read_json(path) if path.is_file() else None
    except InputError:
        return None


def _archived_report(source: str, study: str | None, write: bool, out: str | Path | None, params: Path) -> Report:
    from chemspec import report as pages
    from chemspec.archive import Snapshot, summary
    from chemspec.archive.snapshot import WORKTREE
    from chemspec.archive.targets import revision

    # a manifest id, as pull, refit and diff take it, names the commit whose archive holds it as its study's run
    rev, study = revision(source, study, Path(".")) if source.strip() else (source, study)
    snapshot = Snapshot(rev)
    digest, manifest = snapshot.manifest(study)
    note = unarchived(rev, manifest, params) if rev != WORKTREE else None
    objects = manifest["objects"]

    def checked(role: str, problem):
        if role not in objects:
            return None
        return archived_object(summary(manifest, role, snapshot.json), role, problem, source)

    rows, fit = checked("cells", cells_problem), checked("fit", fit_problem)
    selected, calibration = checked("selected", selected_problem), checked("calibration", calibration_problem)
    name, files = manifest["study"], []
    data = snapshot.json(objects["data"]) if "data" in objects else None
    spec = snapshot.json(objects["spec"])
    if write:
        out = pages_folder(Path("reports") / name, given=False) if out is None else pages_folder(Path(out))
        with staged(out) as tmp:  # replaces the pages and plots/, keeps the user's own files beside them
            (tmp / "plots").mkdir()
            for plot, obj in objects.get("plots", {}).items():
                if plot.endswith(".png"):
                    write_bytes(tmp / "plots" / plot, snapshot.object(obj))
            ctx = pages.context(name, spec, rows, fit, selected, tmp / "plots", digest,
                                calibration, stale=note, provenance=manifest["provenance"], data=data)
            files = pages.write(tmp, ctx, out)
    return Report(study=name, cells=rows, fits=fit["fits"], fit=fit, cost=fit.get("cost"), files=files,
                  calibration=calibration, manifest=digest, provenance=manifest["provenance"], stale=note,
                  selected=selected, data=data, model=pages.model_text(spec), family=spec["model"]["family"])
