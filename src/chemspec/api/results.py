"""The verbs that read results: report, diff, pull and refit (the archive's ls/show/verify: api.archive)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from chemspec.api.project import load_cells
from chemspec.archive.manifest import split_times
from chemspec.archive.store import Store, json_digest
from chemspec.compiler import Cells
from chemspec.compiler.render import stage_identities
from chemspec.errors import ArchiveError, ChemspecError, InputError, UsageError
from chemspec.relock import locked_identities
from chemspec.runtime.io import staged, write_bytes
from chemspec.runtime.result_files import (SPEED_KEYS, calibration_problem, cells_problem, fit_problem, read_checked,
                                          read_cells, read_results, selected_problem)
from chemspec.words import count


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

    def as_json(self) -> dict:
        """`ci` is the Wald (t) interval, `ci_profile` the profile (F) one where the law has it (see
        report.intervals_note, repeated under `intervals`); a null end is open."""
        from chemspec.report import intervals_note

        return {"study": self.study, "confidence": self.fit["confidence"],
                "intervals": intervals_note(self.fit["confidence"]),
                "cells": [{k: c[k] for k in ("model", "params", "data_size", "val_loss", "test_loss", "status",
                                             "force_mae_meV_per_A", "energy_mae_meV", "generation", "wall_time_s",
                                             *SPEED_KEYS)
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
                if self.calibration else None, "manifest": self.manifest, "provenance": self.provenance,
                "stale": self.stale}


def report(params: str | Path = "params.yaml", write: bool = True, source: str | None = None,
           study: str | None = None, out: str | Path | None = None) -> Report:
    """The study's cells and fits; also writes report/index.html and report/report.md beside them.

    With `source` (a git revision, or WORKTREE), the run archived there instead: nothing is read from
    the workspace or retrained, and the pages go to `out` (default reports/<study>/)."""
    from chemspec import report as pages

    if out is not None and not write:
        raise UsageError("--out names where the pages go, and --no-files writes none: drop one of them")
    if source is not None:
        return _archived_report(source, study, write, out)
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
        # A fresh clone of a project holds its archive but not its workspace results.
        archived = Store(root / cells.archive.root).ref_path(cells.archive.study).is_file()
        raise ChemspecError(f"no results yet for study {cells.fit.study!r} ({folder} is empty); "
                            + ("the archive holds a run of it: `chemspec report --from WORKTREE` shows that run "
                               "without training; or run `dvc repro`" if archived else "run `dvc repro`"))
    rows, fit = read_results(folder)
    selected = (read_checked(root / cells.select.out, "select", selected_problem)
                if (root / cells.select.out).is_file() else None)
    stale = stale_note(cells, root, params, rows, selected)
    manifest, provenance = _archived_as(root / cells.archive.root, cells.archive.study, rows)
    calibration = None
    if cells.calibration is not None and (root / cells.calibration.out_dir / "calibration.json").is_file():
        calibration = read_checked(root / cells.calibration.out_dir / "calibration.json", "calibration",
                                   calibration_problem)
    files = []
    if write:
        out = folder.parent / "report"
        link = Path(os.path.relpath(folder / "plots", out)).as_posix()
        ctx = pages.context(cells.fit.study, cells.archive.spec, rows, fit, selected, folder / "plots", manifest,
                            calibration, plots_link=link, stale=stale)
        with staged(out) as tmp:
            files = pages.write(tmp, ctx, out)
    return Report(study=cells.fit.study, cells=rows, fits=fit["fits"], fit=fit, cost=fit.get("cost"),
                  files=files, calibration=calibration, manifest=manifest, provenance=provenance, stale=stale)


def stale_note(cells: Cells, root: Path, params: str | Path, rows: list[dict] = (),
               selected: dict | None = None) -> str | None:
    """Why the results on disk are not those of the study as compiled now: the stages whose cell identity
    differs from the one their last run recorded in dvc.lock (or that never ran), which `dvc repro`
    will run (none known when no dvc.lock records any: stages run by hand), and the train cells of `rows`
    whose hyperparameters are not those `selected` (the selection on disk) keeps for them now; None when
    there are neither."""
    ran = locked_identities(root)
    stale = [name for name, ident in stage_identities(cells).items() if ran.get(name) != ident] if ran else []
    off = _off_selection(cells, rows, selected)
    if not stale and not off:
        return None
    reasons = []
    if stale:
        named = ", ".join(stale[:4]) + (", ..." if len(stale) > 4 else "")
        after = ("; the train cells run again where the selection changes"
                 if any(name == "select" or name.startswith("tpe@") for name in stale) else "")
        reasons.append(f"{count(len(stale), 'stage')} did not run as compiled ({named}){after}")
    if off:
        named = ", ".join(off[:4]) + (", ..." if len(off) > 4 else "")
        reasons.append(f"{count(len(off), 'train cell')} trained with hyperparameters that {cells.select.out} no "
                       f"longer keeps for {'it' if len(off) == 1 else 'them'} ({named})")
    return (f"these results predate {params} as compiled now: {'; '.join(reasons)}; they are shown as they were "
            "computed. Run `dvc repro` to bring them up to date")


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
        manifest = store.get_json(digest)
        if manifest["objects"]["cells"] not in (json_digest(split_times(rows)[0]), json_digest(rows)):
            return None, None  # archived without its times, or (before 2026-12-05) with them
        return digest, manifest["provenance"]
    except (ArchiveError, ValueError, KeyError, TypeError):
        return None, None


def _archived_report(source: str, study: str | None, write: bool, out: str | Path | None) -> Report:
    from chemspec import report as pages
    from chemspec.archive import Snapshot, summary

    snapshot = Snapshot(source)
    digest, manifest = snapshot.manifest(study)
    objects = manifest["objects"]

    def checked(role: str, problem):
        if role not in objects:
            return None
        return _archived_object(summary(manifest, role, snapshot.json), role, problem, source)

    rows, fit = checked("cells", cells_problem), checked("fit", fit_problem)
    selected, calibration = checked("selected", selected_problem), checked("calibration", calibration_problem)
    name, files = manifest["study"], []
    if write:
        out = Path("reports") / name if out is None else Path(out)
        with staged(out) as tmp:  # replaces the pages and plots/, keeps the user's own files beside them
            (tmp / "plots").mkdir()
            for plot, obj in objects.get("plots", {}).items():
                if plot.endswith(".png"):
                    write_bytes(tmp / "plots" / plot, snapshot.object(obj))
            ctx = pages.context(name, snapshot.json(objects["spec"]), rows, fit, selected, tmp / "plots", digest,
                                calibration)
            files = pages.write(tmp, ctx, out)
    return Report(study=name, cells=rows, fits=fit["fits"], fit=fit, cost=fit.get("cost"), files=files,
                  calibration=calibration, manifest=digest, provenance=manifest["provenance"])


def _archived_object(value, role: str, problem, source: str):
    """An archived summary object, checked like the file it was made from."""
    wrong = problem(value)
    if wrong:
        raise ArchiveError(f"the {role}.json archived at {source} cannot be read: {wrong}; `chemspec archive verify` "
                           "checks the archive's objects, or report that run with the chemspec that archived it")
    return value


def diff(rev_a: str = "HEAD", rev_b: str = "WORKTREE", study: str | None = None,
         params: str | Path = "params.yaml") -> dict:
    """The archived runs of two revisions compared; where `params` is compiled here, its study is the default
    among several, and `stale` says why the working tree's run (one side being WORKTREE) is not that of the
    study as compiled now."""
    from chemspec.archive import Snapshot
    from chemspec.archive import diff as archive_diff
    from chemspec.archive.history import WORKTREE

    try:
        cells = load_cells(params) if Path(params).is_file() else None
    except ChemspecError:  # a params.yaml that does not load says nothing about the archived runs
        cells = None
    compiled = cells.fit.study if cells is not None else None
    if study is None and compiled is not None and compiled in (found := Snapshot(rev_b).studies()) and len(found) > 1:
        study = compiled
    result = archive_diff(rev_a, rev_b, study)
    stale = None
    if WORKTREE in (rev_a, rev_b) and result["study"] == compiled:
        try:
            stale = stale_note(cells, Path(params).parent, params)
        except ChemspecError as exc:  # a dvc.lock mid-merge: the comparison stands without the note
            stale = f"whether they predate {params} as compiled now is unknown: {exc}"
    return {**result, "stale": stale}


def pull(target: str, to: str | Path | None = None, study: str | None = None) -> dict:
    from chemspec.archive import pull as archive_pull

    if not target.strip():
        raise UsageError("the run to pull is empty; give a git revision or a manifest id "
                         "(`chemspec archive ls` lists them)")
    if to is not None and not str(to).strip():
        raise UsageError("--to is empty; give the folder to create, or leave --to out for pulled/<study>-<manifest id>")
    return archive_pull(target, to, study=study)


def refit(source: str, laws: list[str] | None = None, confidence: float | None = None,
          study: str | None = None) -> dict:
    """Refit archived cell losses (a pulled directory, a git revision or a manifest id) without training;
    `fitted` says whether any law could be fitted anywhere, `edited` which files of a pulled directory differ
    from the run it was pulled from."""
    from chemspec.archive.history import WORKTREE, commit_of, elsewhere, in_repository
    from chemspec.archive.pull import archived_ids, edited, uncommitted_ids
    from chemspec.runtime.fit import finite_json, fits

    if not source.strip():
        raise UsageError("the source is empty; give a folder that `chemspec pull` made, or a git revision")
    if laws and len(set(laws)) != len(laws):
        raise UsageError(f"--law repeats a value ({', '.join(laws)}); give each law once")
    if confidence is not None and not 0 < confidence < 1:
        raise UsageError(f"--confidence {confidence} is not between 0 and 1; give a level such as 0.95")
    folder = Path(source)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{source} is a file; give the folder that holds cells.json and fit.json "
                         "(one that `chemspec pull` made) or a git revision")
    if not folder.is_dir() and source != WORKTREE and commit_of(source, ".") is None \
            and not (in_repository(".") and archived_ids(source, Path("."))) and not uncommitted_ids(source, Path(".")):
        outside = "" if in_repository(".") else " (this folder is in no git repository)"
        raise UsageError(f"{source} is neither a folder, a git revision nor an archived manifest id here{outside}; "
                         "give a folder that `chemspec pull` made, a commit, branch or tag, or a manifest id "
                         f"(`chemspec archive ls`){elsewhere('.')}")
    if folder.is_dir():
        if not (folder / "cells.json").is_file():
            raise ArchiveError(f"{folder} holds no cells.json; pull a run into it with `chemspec pull`")
        try:
            if laws and confidence is not None and not (folder / "fit.json").exists():  # it would give only these
                cells, old = read_cells(folder), {"study": _pulled_study(folder), "fits": [], "confidence": confidence}
            else:
                cells, old = read_results(folder, ("study",))
        except InputError as exc:
            alone = (", or fit cells.json alone: give both --law and --confidence"
                     if not (folder / "fit.json").exists() else "")
            if not (folder / "manifest.json").is_file():
                raise InputError(exc.problem, exc.fix + alone) from None
            raise ArchiveError(f"{exc.problem}; {folder} was pulled, so no stage rewrites it: pull the run again into "
                               f"an empty folder (`chemspec pull REV --to DIR`){alone}") from None
        if study is not None and old["study"] not in (None, study):
            raise ArchiveError(f"{folder} holds study {old['study']!r}, not {study!r}; drop --study or pull that study")
        name, changed = old["study"] or study, edited(folder)
    else:
        (cells, old, name), changed = _archived_summaries(source, study), []
    laws = laws or list(dict.fromkeys(f["law"] for f in old["fits"]))
    level = confidence if confidence is not None else old["confidence"]
    flat, joint = fits(cells, laws, level)
    fitted = any(f["status"] == "ok" for f in flat) or (joint or {}).get("status") == "ok"
    return finite_json({"study": name, "source": source, "confidence": level, "fits": flat, "joint": joint,
                        "fitted": fitted, "edited": changed})


def _pulled_study(folder: Path) -> str | None:
    """The study of the run a folder was pulled from, where its manifest.json says; None for one made by hand."""
    try:
        study = json.loads((folder / "manifest.json").read_bytes())["study"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return study if isinstance(study, str) else None


def _archived_summaries(source: str, study: str | None) -> tuple[list[dict], dict, str]:
    """The cells, fit and study of the run archived at `source`: WORKTREE, a git revision or a manifest id."""
    from chemspec.archive import Snapshot, summary
    from chemspec.archive.history import WORKTREE
    from chemspec.archive.pull import resolve

    if source == WORKTREE:
        snapshot = Snapshot(source)
        _, manifest = snapshot.manifest(study)
    else:
        rev, _, digest = resolve(source, study, Path("."), worktree=True)
        snapshot = Snapshot(rev)
        manifest = snapshot.json(digest)
    cells, fit = (_archived_object(summary(manifest, role, snapshot.json), role, problem, source)
                  for role, problem in (("cells", cells_problem), ("fit", fit_problem)))
    return cells, fit, manifest["study"]
