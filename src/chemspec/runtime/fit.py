"""The fit stage: the table of converged cells, scaling-law fits, and the statistics the paper reports.

fit.json repeats every fitted exponent in a flat `exponents` map (`power.data.xs: 0.21`), which is
what `dvc metrics diff` shows (DVC does not look inside lists); it also records the compute TPE saved.

Laws (chosen in the spec):
* `power`: log L = log a − α log x by OLS (statsmodels) per group: loss vs data size for each model
  size, loss vs non-embedding parameters for each data size. With a loss floor this slope
  underestimates the true exponent, so it is labelled an effective exponent.
* `saturating`: L = E + a·x^−α per group (runtime.laws).
* `joint`: L(N, D) = E + A/N^α + B/D^β over the whole grid, the primary result (runtime.laws); it is
  reported as two rows, α on the params axis and β on the data axis, plus its raw fit.
A group with too few points, or losses that cannot be logged, says "cannot fit" with the reason.
Diverged cells are left out of every fit and listed.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from chemspec.compiler.cells import FitCell
from chemspec.errors import RunError
from chemspec.runtime.io import finite_json, read_json, staged, write_json
from chemspec.runtime.laws import EXPONENT_MAX, joint_law, saturating_law
from chemspec.runtime.result_files import SPEED_KEYS, TEST_ERRORS, metrics_problem, read_checked, untrained
from chemspec.specs.outputs import AXIS_LAWS, BOOTSTRAP_CELLS, figures

MIN_POINTS, MIN_DISTINCT = AXIS_LAWS["power"]


def power_law(x: list[float], y: list[float], confidence: float, what: str = "losses") -> dict:
    """Fit log y = log a − α log x; exponent α with a t-interval at `confidence`; `what` names y in reasons."""
    n = len(x)
    result: dict = {"law": "power", "n": n, "x": list(x), "y": list(y)}
    bad = [v for v in y if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0)]
    if bad:
        return {**result, "status": "cannot fit", "reason": f"{what} must be finite and positive; got {bad[:3]}"}
    if n < MIN_POINTS:
        return {**result, "status": "cannot fit",
                "reason": f"{n} point{'s' if n != 1 else ''}; a power law with an interval needs at least {MIN_POINTS}"}
    if len(set(x)) < MIN_DISTINCT:
        return {**result, "status": "cannot fit",
                "reason": f"all points share one x value; a slope needs {MIN_DISTINCT} distinct ones"}
    if max(y) - min(y) <= 1e-12 * max(y):
        return {**result, "status": "cannot fit", "reason": f"{what} are constant: no slope to fit"}
    import statsmodels.api as sm

    design = sm.add_constant(np.log(np.asarray(x, dtype=float)))
    fitted = sm.OLS(np.log(np.asarray(y, dtype=float)), design).fit()
    low, high = fitted.conf_int(alpha=1 - confidence)[1]
    return {**result, "status": "ok", "exponent": float(-fitted.params[1]), "ci": [float(-high), float(-low)],
            "prefactor": float(math.exp(fitted.params[0])), "r2": float(fitted.rsquared),
            "residuals": [float(r) for r in fitted.resid], "confidence": confidence, "dof": int(fitted.df_resid),
            "note": "effective exponent: OLS slope of log loss on log x"}


def _better(row: dict, other: dict) -> bool:
    if (row["status"] == "ok") != (other["status"] == "ok"):
        return row["status"] == "ok"
    return row["status"] == "ok" and row["val_loss"] < other["val_loss"]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _read_rows(metrics: dict[str, str]) -> dict[str, dict]:
    rows = {}
    for key, path in sorted(metrics.items()):
        if not Path(path).is_file():
            raise RunError(f"fit: {path} is missing; run `dvc repro` so that train@{key} runs first")
        m = read_checked(path, f"train@{key}", metrics_problem, ("epochs",))
        row = {"cell": f"train@{key}", "model": m["model"], "params": m["params"], "data_size": m["data_size"],
               "val_loss": m["val_loss"], "test_loss": m.get("test_loss"), "hparams": m["hparams"],
               "epochs": m["epochs"], "tokens_seen": m.get("tokens_seen"), "wall_time_s": m["wall_time_s"],
               "status": m.get("status", "ok"),
               **{k: m[k] for k in ("divergence", *(key for key, _ in TEST_ERRORS.values()), "capacity",
                                    "stop_reason", "baseline", *SPEED_KEYS) if k in m}}
        if row["status"] == "ok" and not _finite(row["val_loss"]):
            row.update(status="failed", reason=f"its validation loss is {row['val_loss']}, not a finite number")
        rows[key] = row
    return rows


def _is_replicate(key: str) -> bool:
    return key.rsplit("-", 1)[-1].startswith("seed")


def read_runs(metrics: dict[str, str]) -> tuple[dict[str, dict], dict[str, dict]]:
    """Every train run by key: the runs of the grid (every kept rank), and the replicate seeds."""
    rows = _read_rows(metrics)
    return ({k: r for k, r in rows.items() if not _is_replicate(k)},
            {k: r for k, r in rows.items() if _is_replicate(k)})


def cells_table(runs: dict[str, dict]) -> list[dict]:
    """One row per (model size, data size): the best of its kept configurations, naming under
    `ranks_left_out` the others of them that diverged or failed (which the row stands in for)."""
    groups: dict[tuple, list[dict]] = {}
    for row in runs.values():
        groups.setdefault((row["model"], row["data_size"]), []).append(row)
    table = []
    for rows in groups.values():
        best = functools.reduce(lambda kept, row: row if _better(row, kept) else kept, rows)
        failed = {row["cell"]: row["status"] for row in rows if row["status"] != "ok"}
        table.append({**best, "ranks_left_out": failed} if failed and best["status"] == "ok" else best)
    return sorted(table, key=lambda r: (r["params"], r["model"], r["data_size"]))


def seed_noise(replicates: dict[str, dict], runs: dict[str, dict]) -> dict | None:
    """Spread of log loss over the seeds of each replicated cell, each with the run it repeats (the
    cell's rank-1 configuration, whichever rank the table shows): the noise the intervals assume."""
    if not replicates:
        return None
    cells = {}
    for key, row in sorted(replicates.items()):
        repeated = key.rsplit("-seed", 1)[0]
        base = runs.get(repeated, runs.get(f"{repeated}-r1"))
        if base is not None and row["status"] == "ok" and base["status"] == "ok":
            cells.setdefault(f"{row['model']}-{row['data_size']}", [math.log(base["val_loss"])]).append(
                math.log(row["val_loss"]))
    spread = {k: float(np.std(v, ddof=1)) for k, v in sorted(cells.items()) if len(v) > 1}
    return {"std_log_loss": spread, "median_std_log_loss": float(np.median(list(spread.values()))) if spread else None,
            "seeds_per_cell": {k: len(v) for k, v in sorted(cells.items())},
            "note": "compare with the residual spread of the fits: residuals much larger than the seed noise "
                    "mean the law does not describe the grid"}


def _percentiles(values: np.ndarray, confidence: float) -> list[float]:
    """The central interval of bootstrap draws; an upper end among draws stuck at EXPONENT_MAX is
    open (inf), as the profile interval's is."""
    low, high = np.percentile(values, [50 * (1 - confidence), 50 * (1 + confidence)])
    return [float(low), math.inf if high >= EXPONENT_MAX else float(high)]


def bootstrap(rows: list[dict], resamples: int, confidence: float, seed: int = 0) -> dict | None:
    """Percentile intervals of the joint law's α and β from fits to resampled cells (a cross-check).

    A resample whose best fit puts an exponent on a bound (0 or EXPONENT_MAX) is kept at that bound:
    dropping it would cut off the very tail that makes an interval open."""
    if resamples == 0:
        return None
    usable = [r for r in rows if r["status"] == "ok"]
    if len(usable) < BOOTSTRAP_CELLS:  # validation refuses smaller grids; cells that failed can leave fewer
        return {"status": "cannot bootstrap",
                "reason": f"{len(usable)} cells; a bootstrap over cells needs at least {BOOTSTRAP_CELLS}"}
    rng = np.random.default_rng(seed)
    draws, on_bound = [], 0
    for _ in range(resamples):
        sample = [usable[i] for i in rng.integers(0, len(usable), len(usable))]
        fit = joint_law([r["params"] for r in sample], [r["data_size"] for r in sample],
                        [r["val_loss"] for r in sample], confidence, profile=False)
        if fit["status"] == "ok":
            draws.append((fit["alpha"], fit["beta"]))
        elif "exponents_on_bound" in fit:
            draws.append(tuple(fit["exponents_on_bound"]))
            on_bound += 1
    if len(draws) < resamples / 2:
        return {"status": "cannot bootstrap", "reason": f"only {len(draws)} of {resamples} resamples could be fitted"}
    alphas, betas = np.array(draws).T
    return {"status": "ok", "resamples": resamples, "fitted": len(draws), "on_bound": on_bound,
            "ci_alpha": _percentiles(alphas, confidence), "ci_beta": _percentiles(betas, confidence)}


def axis_groups(rows: list[dict], value=lambda r: r["val_loss"]) -> list[tuple[str, str, list[float], list[float]]]:
    """(axis, group, x, y) of each fit: `value` against data size per model size, and against
    non-embedding parameters per data size."""
    groups = []
    for model in dict.fromkeys(r["model"] for r in rows):
        points = sorted((r["data_size"], value(r)) for r in rows if r["model"] == model)
        groups.append(("data", model, *map(list, zip(*points))))
    for size in sorted({r["data_size"] for r in rows}):
        points = sorted((r["params"], value(r)) for r in rows if r["data_size"] == size)
        groups.append(("params", str(size), *map(list, zip(*points))))
    return groups


def _joint_rows(rows: list[dict], confidence: float) -> tuple[list[dict], dict]:
    raw = joint_law([r["params"] for r in rows], [r["data_size"] for r in rows], [r["val_loss"] for r in rows],
                    confidence)
    base = {"group": "joint", "law": "joint", "n": raw["n"], "status": raw["status"], "confidence": confidence}
    if raw["status"] != "ok":
        return [{"axis": axis, **base, "reason": raw["reason"]} for axis in ("params", "data")], raw
    return [{"axis": axis, **base, "exponent": raw[name], "ci": raw[f"ci_{name}"],
             "ci_profile": raw[f"ci_{name}_profile"], "E": raw["E"], "ci_E": raw["ci_E"], "r2": raw["r2"],
             "dof": raw["dof"]}
            for axis, name in (("params", "alpha"), ("data", "beta"))], raw


def fits(rows: list[dict], laws: list[str], confidence: float) -> tuple[list[dict], dict | None]:
    """Every requested law on the usable cells: flat rows per (axis, group, law), and the raw joint fit.
    A row with a non-finite loss is not usable, whatever its status (archives written before such rows
    were marked failed hold some)."""
    usable = [r for r in rows if r["status"] == "ok" and _finite(r["val_loss"])]
    results, joint = [], None
    for law in laws:
        if law == "joint":
            flat, joint = _joint_rows(usable, confidence)
            results.extend(flat)
            continue
        fit = power_law if law == "power" else saturating_law
        for axis, group, x, y in axis_groups(usable):
            results.append({"axis": axis, "group": group, **fit(x, y, confidence)})
    return results, joint


def error_fits(rows: list[dict], confidence: float) -> list[dict] | None:
    """Power laws of each test error against data size (per model) and parameters (per data size), over the
    cells that finished with one; None where no cell records a test error (a language model's). Fitted beside
    the loss, which weighs energy and forces in no one physical unit."""
    if not any(key in row for row in rows for key, _ in TEST_ERRORS.values()):
        return None
    results = []
    for metric, (key, label) in TEST_ERRORS.items():
        usable = [r for r in rows if r["status"] == "ok" and _finite(r.get(key))]
        weak_cells = {(r["model"], str(r["data_size"])) for r in usable if untrained(r, key)}
        for axis, group, x, y in axis_groups(usable, lambda r: r[key]):
            fitted = {"metric": metric, "quantity": f"test {label}", "axis": axis, "group": group,
                      **power_law(x, y, confidence, "errors")}
            if weak := sum(group == (model if axis == "data" else size) for model, size in weak_cells):
                fitted["untrained"] = weak
            results.append(fitted)
    return results


def statistics(rows: list[dict]) -> dict:
    """Spearman ρ of loss with capacity and with training time per data size; monotonicity in data size."""
    from scipy.stats import spearmanr

    usable = [r for r in rows if r["status"] == "ok"]
    per_size = {}
    for size in sorted({r["data_size"] for r in usable}):
        group = [r for r in usable if r["data_size"] == size]
        entry: dict = {"n": len(group)}
        for name, key in (("rho_params", "params"), ("rho_time", "wall_time_s")):
            values = [r[key] for r in group]
            entry[name] = (None if len(group) < 3 or len(set(values)) < 2 else
                           float(spearmanr(values, [r["val_loss"] for r in group]).statistic))
        per_size[str(size)] = entry
    monotone = {}
    for model in dict.fromkeys(r["model"] for r in usable):
        losses = [r["val_loss"] for r in sorted(usable, key=lambda r: r["data_size"]) if r["model"] == model]
        monotone[model] = all(b < a for a, b in zip(losses, losses[1:]))
    return {"spearman": per_size, "loss_falls_with_data": monotone,
            "diverged": [r["cell"] for r in rows if r["status"] != "ok"],
            "note": "rho < 0: loss falls as capacity (or training time) grows"}


def run_fit(cell: FitCell) -> dict:
    from chemspec.runtime import quality
    from chemspec.runtime.plots import write_plots
    from chemspec.runtime.tpe import cost

    runs, replicates = read_runs(cell.metrics)
    rows = quality.attach(cells_table(runs), cell.generation)
    flat, joint = fits(rows, cell.laws, cell.confidence)
    generation = quality.fits(rows, cell.confidence) if cell.generation else None
    errors = error_fits(rows, cell.confidence)
    selected = read_json(cell.selected) if Path(cell.selected).is_file() else None
    exponents = {f"{f['law']}.{f['axis']}.{f['group']}": f["exponent"] for f in flat if f["status"] == "ok"}
    exponents.update(quality.exponents([*(generation or []), *(errors or [])]))
    result = finite_json({"study": cell.study, "confidence": cell.confidence, "laws": cell.laws, "fits": flat,
                          "exponents": exponents, "joint": joint, "statistics": statistics(rows),
                          "noise": seed_noise(replicates, runs),
                          "cost": cost(selected, [r["wall_time_s"] for r in runs.values()]),
                          "bootstrap": bootstrap(rows, cell.bootstrap, cell.confidence),
                          "generation": generation, "errors": errors})
    with staged(cell.out_dir) as tmp:  # the report reads cells.json, fit.json and plots as one set
        write_json(tmp / "cells.json", rows)
        write_plots(rows, result, tmp / "plots", cell.study, cell.family, figures(cell.laws, bool(cell.generation)))
        write_json(tmp / "fit.json", result)
    return result
