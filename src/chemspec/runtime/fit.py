"""The fit stage: the table of converged cells and power-law fits of loss along each axis.

`power` is log L = log a − α log x fitted by OLS (statsmodels) per group: loss vs data size for each
model size, and loss vs non-embedding parameters for each data size. With a loss floor this slope
underestimates the true exponent, so it is reported as an effective exponent. A group with too few
points, or losses that cannot be logged, says "cannot fit" with the reason instead of a number.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from chemspec.compiler.cells import FitCell
from chemspec.errors import RunError
from chemspec.runtime.io import read_json, write_json

MIN_POINTS = 3


def power_law(x: list[float], y: list[float], confidence: float) -> dict:
    """Fit log y = log a − α log x; exponent α with a t-interval at `confidence`."""
    n = len(x)
    result: dict = {"law": "power", "n": n, "x": list(x), "y": list(y)}
    bad = [v for v in y if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0)]
    if bad:
        return {**result, "status": "cannot fit", "reason": f"losses must be finite and positive; got {bad[:3]}"}
    if n < MIN_POINTS:
        return {**result, "status": "cannot fit",
                "reason": f"{n} point{'s' if n != 1 else ''}; a power law with an interval needs at least {MIN_POINTS}"}
    if len(set(x)) < 2:
        return {**result, "status": "cannot fit", "reason": "all points share one x value"}
    if max(y) - min(y) <= 1e-12 * max(y):
        return {**result, "status": "cannot fit", "reason": "losses are constant: no slope to fit"}
    import statsmodels.api as sm

    design = sm.add_constant(np.log(np.asarray(x, dtype=float)))
    fitted = sm.OLS(np.log(np.asarray(y, dtype=float)), design).fit()
    low, high = fitted.conf_int(alpha=1 - confidence)[1]
    return {**result, "status": "ok", "exponent": float(-fitted.params[1]), "ci": [float(-high), float(-low)],
            "prefactor": float(math.exp(fitted.params[0])), "r2": float(fitted.rsquared),
            "residuals": [float(r) for r in fitted.resid], "confidence": confidence,
            "note": "effective exponent: OLS slope of log loss on log x"}


def _better(row: dict, other: dict) -> bool:
    if (row["status"] == "ok") != (other["status"] == "ok"):
        return row["status"] == "ok"
    return row["status"] == "ok" and row["val_loss"] < other["val_loss"]


def cells_table(metrics: dict[str, str]) -> list[dict]:
    """One row per (model size, data size): the best of its kept configurations."""
    best: dict[tuple, dict] = {}
    for key, path in sorted(metrics.items()):
        if not Path(path).is_file():
            raise RunError(f"fit: {path} is missing; run `dvc repro` so that train@{key} runs first")
        m = read_json(path)
        row = {"cell": m["cell"], "model": m["model"], "params": m["params"], "data_size": m["data_size"],
               "val_loss": m["val_loss"], "test_loss": m.get("test_loss"), "hparams": m["hparams"],
               "epochs": m["epochs"], "tokens_seen": m.get("tokens_seen"), "wall_time_s": m["wall_time_s"],
               "status": m.get("status", "ok")}
        group = (m["model"], m["data_size"])
        if group not in best or _better(row, best[group]):
            best[group] = row
    return sorted(best.values(), key=lambda r: (r["params"], r["model"], r["data_size"]))


def fits(rows: list[dict], laws: list[str], confidence: float) -> list[dict]:
    results = []
    usable = [r for r in rows if r["status"] == "ok"]
    for law in laws:
        for model in dict.fromkeys(r["model"] for r in usable):
            points = sorted((r["data_size"], r["val_loss"]) for r in usable if r["model"] == model)
            results.append({"axis": "data", "group": model, **power_law(*map(list, zip(*points)), confidence)})
        for size in sorted({r["data_size"] for r in usable}):
            points = sorted((r["params"], r["val_loss"]) for r in usable if r["data_size"] == size)
            results.append({"axis": "params", "group": str(size),
                            **power_law(*map(list, zip(*points)), confidence)})
    return results


def run_fit(cell: FitCell) -> dict:
    from chemspec.runtime.plots import scaling_plot

    rows = cells_table(cell.metrics)
    result = {"study": cell.study, "confidence": cell.confidence, "fits": fits(rows, cell.laws, cell.confidence)}
    out = Path(cell.out_dir)
    write_json(out / "cells.json", rows)
    scaling_plot(rows, result["fits"], out / "scaling.png", cell.study, cell.confidence)
    write_json(out / "fit.json", result)
    return result
