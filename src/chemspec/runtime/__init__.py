"""Stage commands run by `dvc repro`: each receives a resolved cell and never opens the study file."""

from __future__ import annotations

from collections.abc import Callable

from chemspec.compiler.cells import Cells, identity
from chemspec.errors import RunError, UsageError

STAGES = ("data", "split", "tpe", "select", "calibrate", "calibration", "train", "reference", "sample", "fit",
          "archive")
PER_CELL = ("tpe", "calibrate", "train", "sample")
EMPTY = {"sample": "add a `generation` section to the study (ChemGPT studies only)",
         "calibrate": "set hpo.tpe.calibrate: true (with more than one configuration in hpo.grid)",
         "tpe": "hpo.grid holds one configuration, which trains without a TPE run (there is nothing to rank); give "
                "hpo.grid more values", "train": "give model.sizes and data.sizes"}


def run_stage(stage: str, cells: Cells, key: str | None, expected_identity: str | None = None,
              source: str = "params.yaml") -> dict:
    """Run one stage of a compiled study; `key` names the cell of per-cell stages, `source` the params file.

    `expected_identity` (a prefix of the cell's identity, from dvc.yaml) guards against a params.yaml
    that changed after dvc.yaml was compiled: the stage would otherwise train something else than
    DVC records."""
    if stage not in STAGES:
        raise RunError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    if stage in PER_CELL:
        table = getattr(cells, stage)
        if not table:
            raise UsageError(f"{stage}: this study has no {stage} cells; {EMPTY[stage]}, then recompile")
        if key is None:
            raise UsageError(f"{stage} runs one cell: add --cell KEY; cells are {', '.join(table)}")
        if key not in table:
            raise UsageError(f"{stage}: no cell {key!r} in {source}; cells are {', '.join(table)} "
                           "(recompile with `chemspec compile` if the spec changed)")
    elif key is not None:
        raise UsageError(f"stage {stage} takes no --cell")
    if expected_identity is not None:
        cell = getattr(cells, stage)[key] if stage in PER_CELL else getattr(cells, stage)
        if cell is not None and not identity(cell).startswith(expected_identity):
            raise RunError(f"{stage}{'@' + key if key else ''}: {source} does not match dvc.yaml (identity "
                           f"{identity(cell)[:16]}, dvc.yaml expects {expected_identity}); "
                           "run `chemspec compile <study.yaml>` to rewrite both, and where a compile ran while this "
                           "`dvc repro` did (which had read dvc.yaml before it), run `dvc repro` again")
    return _RUNNERS[stage](cells, key)


def _data(cells: Cells, key: str | None) -> dict:
    if cells.data.kind == "atoms":
        from chemspec.runtime.atoms_stage import run_atoms_data

        return run_atoms_data(cells.data)
    from chemspec.runtime.molecules import run_data

    return run_data(cells.data)


def _split(cells: Cells, key: str | None) -> dict:
    from chemspec.runtime.split import run_split

    return run_split(cells.split)


def _train(cells: Cells, key: str | None, table: str) -> dict:
    from chemspec.runtime.train import run_training

    return run_training(getattr(cells, table)[key])


def _reference(cells: Cells, key: str | None) -> dict:
    if cells.reference is None:
        raise UsageError(f"reference: this study has no sample cells; {EMPTY['sample']}, then recompile")
    from chemspec.runtime.sample import run_reference

    return run_reference(cells.reference)


def _sample(cells: Cells, key: str | None) -> dict:
    from chemspec.runtime.sample import run_sample

    return run_sample(cells.sample[key])


def _select(cells: Cells, key: str | None) -> dict:
    from chemspec.runtime.tpe import run_select

    return run_select(cells.select)


def _calibration(cells: Cells, key: str | None) -> dict:
    if cells.calibration is None:
        raise RunError("calibration: hpo.tpe.calibrate is off in this study; set it to true (with more than one "
                       "configuration in hpo.grid) and recompile")
    from chemspec.runtime.calibration import run_calibration

    return run_calibration(cells.calibration)


def _fit(cells: Cells, key: str | None) -> dict:
    from chemspec.runtime.fit import run_fit

    return run_fit(cells.fit)


def _archive(cells: Cells, key: str | None) -> dict:
    from chemspec.archive.manifest import run_archive

    return run_archive(cells.archive, cells.fit.metrics, cells.select.tpe_dirs, cells.fit.generation)


_RUNNERS: dict[str, Callable[[Cells, str | None], dict]] = {
    "data": _data, "split": _split, "tpe": lambda c, k: _train(c, k, "tpe"), "select": _select,
    "calibrate": lambda c, k: _train(c, k, "calibrate"), "calibration": _calibration,
    "train": lambda c, k: _train(c, k, "train"), "reference": _reference, "sample": _sample, "fit": _fit, "archive": _archive,
}
