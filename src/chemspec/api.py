"""One function per CLI verb. Each returns data and raises ChemspecError; none prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from chemspec.compiler import Cells, compile_study
from chemspec.compiler.render import PIPELINES
from chemspec.errors import ArchiveError, ChemspecError, CompileError, RunError
from chemspec.runtime.io import read_json, write_bytes
from chemspec.specs import Study, json_schema, load_study
from chemspec.specs.data import AtomsFileSource, SmilesFileSource

__all__ = ["validate", "schema", "compile", "run", "launch", "report", "archive_verify"]


def validate(spec: str | Path) -> Study:
    return load_study(spec)


def schema() -> dict:
    return json_schema()


def _project_path(path: Path, root: Path) -> str:
    """A path as DVC should see it: relative to the project root when inside it, absolute otherwise."""
    absolute = path.resolve()
    try:
        return absolute.relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(absolute)


def _with_project_paths(study: Study, spec: Path, root: Path) -> tuple[Study, str | None]:
    source = study.data.source
    if not isinstance(source, (SmilesFileSource, AtomsFileSource)):
        return study, None
    file = Path(source.file)
    located = _project_path(file if file.is_absolute() else spec.parent / file, root)
    data = study.data.model_copy(update={"source": source.model_copy(update={"file": located})})
    return study.model_copy(update={"data": data}), located


@dataclass
class CompileResult:
    study: str
    files: dict[str, str]
    stale: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    """Per-size pipeline files of an earlier compile that this grid no longer has."""
    notes: list[str] = field(default_factory=list)


def compile(spec: str | Path, root: str | Path = ".", check: bool = False) -> CompileResult:
    """Compile a study into dvc.yaml + params.yaml under `root`; with `check`, only report staleness."""
    spec, root = Path(spec), Path(root)
    study = load_study(spec)
    study, source_file = _with_project_paths(study, spec, root)
    files = compile_study(study, _project_path(spec, root), source_file)
    result = CompileResult(study=study.study, files=files)
    for name, text in files.items():
        path = root / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            result.stale.append(name)
    obsolete = [p.relative_to(root).as_posix() for p in sorted((root / PIPELINES).glob("*/dvc.yaml"))
                if p.relative_to(root).as_posix() not in files]
    result.stale.extend(obsolete)
    if check:
        return result
    for name in obsolete:
        for leftover in ("dvc.yaml", "dvc.lock"):
            (root / name).with_name(leftover).unlink(missing_ok=True)
        if not any((root / name).parent.iterdir()):
            (root / name).parent.rmdir()
        result.removed.append(name)
    for name in result.stale:
        if name in files:
            write_bytes(root / name, files[name].encode())
            result.written.append(name)
    if not (root / ".dvc").is_dir():
        result.notes.append(f"{root} is not a DVC project yet: run `git init && dvc init` there before `dvc repro`")
        return result
    from chemspec.archive import ensure_remote

    try:
        result.notes.append(f"DVC remote {ensure_remote(root, study.archive.remote)}")
    except ArchiveError as exc:
        result.notes.append(str(exc))
    return result


def load_cells(params: str | Path) -> Cells:
    path = Path(params)
    if not path.is_file():
        raise RunError(f"{path} not found; run `chemspec compile <study.yaml>` first")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Cells.model_validate(document["cells"])
    except (yaml.YAMLError, TypeError, KeyError, ValidationError):
        raise RunError(f"{path} is not a params file written by `chemspec compile`; recompile the study") from None


def run(stage: str, params: str | Path = "params.yaml", cell: str | None = None,
        expected_identity: str | None = None) -> dict:
    from chemspec.runtime import run_stage

    return run_stage(stage, load_cells(params), cell, expected_identity)


def launch(params: str | Path = "params.yaml", kind: str | None = None, jobs: int | None = None,
           dry_run: bool = False, sbatch: dict[str, str] | None = None, say=lambda _: None):
    """Run the compiled pipeline with stale cells as submitit jobs; defaults come from the study's executor."""
    from chemspec.launch import Settings, launch as run_launch
    from chemspec.specs.study import Executor

    cells = load_cells(params)
    executor = Executor.model_validate(cells.archive.spec.get("executor") or {})
    settings = Settings(kind=kind or executor.kind, jobs=jobs or executor.jobs, study=cells.archive.study,
                        partition=executor.slurm.partition, account=executor.slurm.account,
                        gpus_per_job=executor.slurm.gpus_per_job, time_min=executor.slurm.time_min,
                        sbatch=dict(sbatch or {}))
    return run_launch(settings, Path(params).resolve().parent, dry_run=dry_run, say=say)


@dataclass
class Report:
    study: str
    cells: list[dict]
    fits: list[dict]
    fit: dict
    cost: dict | None
    files: list[str]

    def as_json(self) -> dict:
        return {"study": self.study,
                "cells": [{k: c[k] for k in ("model", "params", "data_size", "val_loss", "status",
                                             "force_mae_meV_per_A", "energy_mae_meV", "generation") if k in c}
                          for c in self.cells],
                "fits": [{"axis": f["axis"], "group": f["group"], "law": f["law"],
                          "exponent": f.get("exponent"), "ci": f.get("ci"), "n": f["n"],
                          "status": f["status"], **({"reason": f["reason"]} if "reason" in f else {})}
                         for f in self.fits],
                "statistics": self.fit.get("statistics"), "cost": self.cost}


def report(params: str | Path = "params.yaml", write: bool = True) -> Report:
    """The study's cells and fits; also writes report/index.html and report/report.md beside them."""
    from chemspec import report as pages

    cells = load_cells(params)
    folder = Path(cells.fit.out_dir)
    table, fit_path = folder / "cells.json", folder / "fit.json"
    if not (table.is_file() and fit_path.is_file()):
        raise ChemspecError(f"no results yet for study {cells.fit.study!r} ({folder} is empty); run `dvc repro`")
    rows, fit = read_json(table), read_json(fit_path)
    selected = read_json(cells.select.out) if Path(cells.select.out).is_file() else None
    files = []
    if write:
        manifest = None
        ref = Path(cells.archive.root) / "refs" / f"{cells.archive.study}.json"
        if ref.is_file():
            manifest = read_json(ref)["manifest"]
        calibration = None
        if cells.calibration is not None and (Path(cells.calibration.out_dir) / "calibration.json").is_file():
            calibration = read_json(Path(cells.calibration.out_dir) / "calibration.json")
        ctx = pages.context(cells.fit.study, rows, fit, selected, folder / "plots", manifest, calibration)
        out = folder.parent / "report"
        write_bytes(out / "index.html", pages.html(ctx).encode())
        write_bytes(out / "report.md", pages.markdown(ctx).encode())
        files = [(out / "index.html").as_posix(), (out / "report.md").as_posix()]
    return Report(study=cells.fit.study, cells=rows, fits=fit["fits"], fit=fit, cost=pages.cost(selected, rows),
                  files=files)


def archive_ls(root: str | Path = "archive") -> list[dict]:
    from chemspec.archive import Store, manifests

    current = {}
    store = Store(root)
    for study in store.studies():
        current[store.ref(study)] = study
    return [{"manifest": digest, "study": m["study"], "cells": len(m["objects"].get("train", {})),
             "commit": (m["provenance"]["git"].get("commit") or "")[:12], "current": digest in current,
             "compute_hours": m["provenance"].get("compute_hours")} for digest, m in manifests(root)]


def archive_show(prefix: str, root: str | Path = "archive") -> dict:
    from chemspec.archive import find

    digest, manifest = find(root, prefix)
    return {"manifest": digest, **manifest}


def diff(rev_a: str = "HEAD", rev_b: str = "WORKTREE", study: str | None = None) -> dict:
    from chemspec.archive import diff as archive_diff

    return archive_diff(rev_a, rev_b, study)


def pull(target: str, to: str | Path | None = None, study: str | None = None) -> dict:
    from chemspec.archive import ensure_remote, pull as archive_pull

    to = Path(to) if to is not None else Path("pulled") / target.replace("/", "_").replace("~", "-")
    remote = "default"
    if Path(".dvc").is_dir():
        ensure_remote(".", remote)
    return archive_pull(target, to, study=study, remote=remote)


def refit(source: str, laws: list[str] | None = None, confidence: float | None = None,
          study: str | None = None) -> dict:
    """Refit archived cell losses (a pulled directory or a git revision) without training anything."""
    from chemspec.archive import Snapshot
    from chemspec.runtime.fit import finite_json, fits

    folder = Path(source)
    if folder.is_dir():
        if not (folder / "cells.json").is_file():
            raise ArchiveError(f"{folder} holds no cells.json; pull a run into it with `chemspec pull`")
        cells, old = read_json(folder / "cells.json"), read_json(folder / "fit.json")
    else:
        snapshot = Snapshot(source)
        _, manifest = snapshot.manifest(study)
        cells, old = snapshot.json(manifest["objects"]["cells"]), snapshot.json(manifest["objects"]["fit"])
    laws = laws or list(dict.fromkeys(f["law"] for f in old["fits"]))
    level = confidence if confidence is not None else old["confidence"]
    flat, joint = fits(cells, laws, level)
    return finite_json({"study": old["study"], "source": source, "confidence": level, "fits": flat, "joint": joint})


def archive_verify(root: str | Path = "archive") -> int:
    """Re-hash every archived object; return how many were checked, or raise listing each problem."""
    from chemspec.archive import verify

    checked, problems = verify(root)
    if problems:
        raise ArchiveError("archive verify found problems:\n" + "\n".join(f"  {p}" for p in problems))
    return checked
