"""The results files that the report and refit read -- cells.json and fit.json (the fit stage),
selected.json (select) and calibration.json (calibration) -- each checked, row by row and key by key,
before anything reads it: a hand-edited or merged file is named with the row and key at fault and the
stage that rewrites it, instead of failing as an internal error deep in the report.

Only what every chemspec since the first fit stage (2026-11-28) wrote is required; what came later
(a fit row's `ci_profile`, the bootstrap's `on_bound`) is checked where present, so a run archived by an
older version still reads with `report --from`. The same checks serve archived objects (`problem`
functions return text; the caller says where the file came from and what to do).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chemspec.errors import InputError
from chemspec.runtime.io import read_json

Kind = tuple[Callable[[Any], bool], str]


def _of(*types: type) -> Callable[[Any], bool]:
    return lambda value: not isinstance(value, bool) and isinstance(value, types)


TEXT: Kind = (_of(str), "text")
WHOLE: Kind = (_of(int), "a whole number")
WHOLE_OR_NULL: Kind = (lambda v: v is None or _of(int)(v), "a whole number or null")
COUNT: Kind = (lambda v: _of(int)(v) and v > 0, "a whole number above 0")
NUMBER: Kind = (_of(int, float), "a number")
NUMBER_OR_NULL: Kind = (lambda v: v is None or _of(int, float)(v), "a number or null")
MAPPING: Kind = (_of(dict), "a mapping")
MAPPING_OR_NULL: Kind = (lambda v: v is None or isinstance(v, dict), "a mapping or null")
LIST: Kind = (_of(list), "a list")
INTERVAL: Kind = (lambda v: isinstance(v, list) and len(v) == 2 and all(NUMBER_OR_NULL[0](e) for e in v),
                  "a [low, high] pair of numbers (null: open)")

CELL = {"model": TEXT, "params": COUNT, "data_size": COUNT, "status": TEXT, "val_loss": NUMBER_OR_NULL,
        "wall_time_s": NUMBER, "hparams": MAPPING_OR_NULL}
CELL_STATUSES = ("ok", "diverged", "failed", "gated")
"""What a cell's training ended in: only `ok` cells are fitted."""
TEST_ERRORS = {"force_mae": ("force_mae_meV_per_A", "force MAE (meV/Å)"),
               "energy_mae": ("energy_mae_meV", "energy MAE (meV)")}
"""A force field's test errors in cells.json, by the metric name fit.json gives them: the key and its label."""
SPEED_KEYS = ("train_tokens_per_s", "train_structures_per_s", "peak_gpu_memory_mb")
"""A cell's training speed and memory (runtime.throughput), which cells.json carries since 2026-12-05."""
BASELINE: Kind = (lambda v: isinstance(v, dict) and "force_mae_meV_per_A" in v and all(
    key in ("force_mae_meV_per_A", "energy_mae_meV") and NUMBER[0](value) for key, value in v.items()),
                  "a mapping of force_mae_meV_per_A (and energy_mae_meV) to numbers")
CELL_OPTIONAL = {**dict.fromkeys(SPEED_KEYS, NUMBER_OR_NULL), "baseline": BASELINE}
"""Keys a cell may lack: its speed, and a force field's test errors of a model that learned nothing
(runtime.forcefield_train.baseline_errors; since 2026-12-07)."""
CHOICE = {"learning_rate": NUMBER, "batch_size": COUNT}
METRICS = {**{key: kind for key, kind in CELL.items() if key != "status"}, "params": WHOLE}
"""What the fit stage takes from a train cell's metrics.json (status: 'ok' where a run before it recorded none;
a rank select did not keep records 0 parameters)."""
METRICS_OPTIONAL = {"status": TEXT, **CELL_OPTIONAL}
FIT = {"fits": LIST, "confidence": NUMBER}
FIT_OPTIONAL = {"joint": MAPPING_OR_NULL, "bootstrap": MAPPING_OR_NULL, "noise": MAPPING_OR_NULL,
                "cost": MAPPING_OR_NULL, "statistics": MAPPING}
FIT_ROW = {"law": TEXT, "axis": TEXT, "group": TEXT, "status": TEXT, "n": WHOLE}
FITTED = {"exponent": NUMBER, "ci": INTERVAL, "r2": NUMBER}
FITTED_OPTIONAL = {"ci_profile": INTERVAL, "E": NUMBER, "ci_E": INTERVAL}
JOINT = {"status": TEXT, "n": WHOLE}
JOINT_FITTED = {"E": NUMBER, "A": NUMBER, "B": NUMBER, "alpha": NUMBER, "beta": NUMBER, "ci_alpha": INTERVAL,
                "ci_beta": INTERVAL, "ci_E": INTERVAL}
JOINT_OPTIONAL = {"ci_alpha_profile": INTERVAL, "ci_beta_profile": INTERVAL}
BOOTSTRAP_FITTED = {"resamples": WHOLE, "fitted": WHOLE, "ci_alpha": INTERVAL, "ci_beta": INTERVAL}
NOISE = {"std_log_loss": MAPPING, "median_std_log_loss": NUMBER_OR_NULL, "seeds_per_cell": MAPPING}
COST = {"tpe_s": NUMBER, "train_s": NUMBER, "spent_s": NUMBER, "exhaustive_s": NUMBER, "configs": NUMBER,
        "kept": NUMBER, "saving": NUMBER_OR_NULL}
SPEARMAN = {"n": WHOLE, "rho_params": NUMBER_OR_NULL, "rho_time": NUMBER_OR_NULL}
SELECTED = {"estimator": TEXT, "configs": LIST}
CONFIG = {"name": TEXT, "estimate": NUMBER_OR_NULL, "rank": WHOLE_OR_NULL, "reason": TEXT, "cost_s": NUMBER}
CALIBRATION = {"budget_fraction": NUMBER, "estimator": TEXT, "scores": MAPPING, "cost": MAPPING}
SCORE = {"n": WHOLE}
SCORE_OPTIONAL = {"r2": NUMBER_OR_NULL, "spearman": NUMBER_OR_NULL, "kendall": NUMBER_OR_NULL,
                  "regret": NUMBER_OR_NULL, "misranked_pairs": WHOLE, "reason": TEXT}


def keys_problem(value: Any, required: dict[str, Kind], optional: dict[str, Kind] | None = None) -> str | None:
    """What makes `value` not a mapping with the `required` keys (and any `optional` ones) of their kinds."""
    if not isinstance(value, dict):
        return f"a {type(value).__name__}, not a mapping"
    for key, (fits, expected) in {**required, **(optional or {})}.items():
        if key not in value:
            if key in required:
                return f"no {key!r}"
        elif not fits(value[key]):
            return f"{key!r} is {_shown(value[key])}, not {expected}"
    return None


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _rows_problem(rows: list, what: str, check: Callable[[Any], str | None]) -> str | None:
    return next((f"{what} {i}: {wrong}" for i, row in enumerate(rows) if (wrong := check(row))), None)


def _cell_problem(row: Any) -> str | None:
    wrong = keys_problem(row, CELL, CELL_OPTIONAL)
    if wrong is None and row["status"] not in CELL_STATUSES:
        return f"'status' is {json.dumps(row['status'])}, none of {', '.join(CELL_STATUSES)}"
    loss = row["val_loss"] if wrong is None else None
    if wrong is None and row["status"] == "ok" and not (loss is not None and math.isfinite(loss) and loss > 0):
        return f"status 'ok' with 'val_loss' {json.dumps(loss)}, not a positive finite number"
    return wrong


def choice_problem(choice: Any) -> str | None:
    """What makes `choice` unreadable as a choice file of select (selected/r<rank>.json): the configuration a
    train cell trains, or null for a rank select did not keep."""
    hparams = choice.get("hparams") if isinstance(choice, dict) else None
    if hparams is None:
        return None if isinstance(choice, dict) else keys_problem(choice, {})
    wrong = keys_problem(hparams, CHOICE) or (f"{sorted(set(hparams) - set(CHOICE))} are not values of hpo.grid"
                                              if set(hparams) - set(CHOICE) else None)
    if wrong is None and not (math.isfinite(hparams["learning_rate"]) and hparams["learning_rate"] > 0):
        wrong = f"'learning_rate' is {hparams['learning_rate']}, not a positive number"
    return wrong and f"hparams: {wrong}"


def metrics_problem(metrics: Any) -> str | None:
    """What makes `metrics` unreadable as a train cell's metrics.json; None if it reads. A loss that is not
    finite marks the cell failed (runtime.fit); one at or below 0 no training writes."""
    wrong = keys_problem(metrics, METRICS, METRICS_OPTIONAL)
    if wrong is None and metrics.get("status", "ok") not in CELL_STATUSES:
        return f"'status' is {json.dumps(metrics['status'])}, none of {', '.join(CELL_STATUSES)}"
    if wrong or metrics.get("status", "ok") != "ok":
        return wrong
    if metrics["params"] <= 0:
        return f"status 'ok' with 'params' {metrics['params']}, not a whole number above 0"
    if metrics["val_loss"] is not None and metrics["val_loss"] <= 0:
        return f"status 'ok' with 'val_loss' {json.dumps(metrics['val_loss'])}, not a positive number"
    return None


def cells_problem(rows: Any) -> str | None:
    """What makes `rows` unreadable as cells.json, naming the record and key at fault; None if it reads."""
    if not isinstance(rows, list):
        return f"it holds a {type(rows).__name__}"
    if wrong := _rows_problem(rows, "record", _cell_problem):
        return wrong
    seen: dict[tuple, int] = {}
    for i, row in enumerate(rows):
        if (first := seen.setdefault((row["model"], row["data_size"]), i)) != i:
            return f"records {first} and {i} are both cell {row['model']}-{row['data_size']}"
    return None


def _fit_row_problem(row: Any) -> str | None:
    wrong = keys_problem(row, FIT_ROW, {"untrained": WHOLE})  # a test-error fit's points of untrained cells
    if wrong is None:
        ok = row["status"] == "ok"
        wrong = keys_problem(row, FITTED if ok else {"reason": TEXT}, FITTED_OPTIONAL if ok else None)
        if wrong:
            return f"({row['law']} law, {row['axis']} axis, group {row['group']}, status {row['status']!r}) {wrong}"
    return wrong


def _outcome_problem(value: Any, fitted: dict[str, Kind], optional: dict[str, Kind] | None = None) -> str | None:
    """A joint fit or bootstrap: its fitted keys when its status is 'ok', else the reason."""
    wrong = keys_problem(value, {"status": TEXT})
    if wrong:
        return wrong
    ok = value["status"] == "ok"
    return keys_problem(value, fitted if ok else {"reason": TEXT}, optional if ok else None)


def _statistics_problem(statistics: Any) -> str | None:
    return keys_problem(statistics, {"spearman": MAPPING, "loss_falls_with_data": MAPPING}) or next(
        (f"spearman[{size!r}]: {wrong}" for size, entry in statistics["spearman"].items()
         if (wrong := keys_problem(entry, SPEARMAN))), None)


SECTIONS: dict[str, Callable[[Any], str | None]] = {
    "joint": lambda v: keys_problem(v, JOINT) or _outcome_problem(v, JOINT_FITTED, JOINT_OPTIONAL),
    "bootstrap": lambda v: _outcome_problem(v, BOOTSTRAP_FITTED, {"on_bound": WHOLE}),
    "noise": lambda v: keys_problem(v, NOISE),
    "cost": lambda v: keys_problem(v, COST),
    "statistics": _statistics_problem,
    "errors": lambda v: _rows_problem(v, "error fit", _fit_row_problem) if isinstance(v, list) else "not a list"}


def fit_problem(fit: Any) -> str | None:
    """What makes `fit` unreadable as fit.json, naming the entry and key at fault; None if it reads."""
    wrong = keys_problem(fit, FIT, FIT_OPTIONAL) or _rows_problem(fit["fits"], "fit row", _fit_row_problem)
    return wrong or next((f"{key}: {wrong}" for key, check in SECTIONS.items()
                          if fit.get(key) is not None and (wrong := check(fit[key]))), None)


def selected_problem(selected: Any) -> str | None:
    return keys_problem(selected, SELECTED) or _rows_problem(selected["configs"], "config",
                                                              lambda row: keys_problem(row, CONFIG))


def calibration_problem(calibration: Any) -> str | None:
    return keys_problem(calibration, CALIBRATION) or next(
        (f"scores[{name!r}]: {wrong}" for name, score in calibration["scores"].items()
         if (wrong := keys_problem(score, SCORE, SCORE_OPTIONAL))), None)


def _fix(path: Path, stage: str) -> str:
    return (f"restore it (`dvc checkout {path}` or `git checkout -- {path}`) or rerun the {stage} stage to "
            "rewrite it (`dvc repro`)")


def read_checked(path: str | Path, stage: str, problem: Callable[[Any], str | None],
                 require: tuple[str, ...] = ()) -> Any:
    """The JSON file at `path` that `stage` writes, with the keys in `require`, checked by `problem`;
    InputError naming the file, the entry and the key at fault."""
    path = Path(path)
    value = read_json(path, require)
    wrong = problem(value)
    if wrong:
        raise InputError(f"{path}: {wrong}", _fix(path, stage))
    return value


def read_cells(folder: str | Path) -> list[dict]:
    """The fit stage's cells.json: one record a cell."""
    cells = Path(folder) / "cells.json"
    rows = read_json(cells)
    problem = cells_problem(rows)
    if problem:
        raise InputError(f"{cells} is not a list of cell records ({problem})", _fix(cells, "fit"))
    return rows


def read_results(folder: str | Path, require: tuple[str, ...] = ()) -> tuple[list[dict], dict]:
    """The fit stage's cells.json and fit.json (with the keys in `require`)."""
    return read_cells(folder), read_checked(Path(folder) / "fit.json", "fit", fit_problem, require)


def untrained(cell: dict, key: str) -> bool:
    """Whether a finished cell's test error `key` is no better than that of a model that learned nothing."""
    value, baseline = cell.get(key), cell.get("baseline")
    return (cell.get("status", "ok") == "ok" and isinstance(value, (int, float)) and isinstance(baseline, dict)
            and key in baseline and value >= baseline[key])
