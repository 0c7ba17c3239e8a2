"""The calibration stage: how well does each TPE estimator, at its budget, rank the converged losses?

For every configuration the TPE run gives a short loss log and the calibrate run the converged
validation loss of the same configuration. Each estimator is scored by the linear fit of converged
loss on estimate (slope, intercept, R²), Spearman ρ, Kendall τ, and the top-1 regret: the converged
loss of the configuration the estimator ranks first minus the best converged loss (none, and that pick
named, when its full run diverged). Compute saved is
TPE's cost plus one full run of each configuration the estimator would keep (hpo.tpe.keep), against
full runs of all of them; configurations that diverged count on both sides, as they cost compute.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from scipy import stats

from chemspec.compiler.cells import CalibrationCell
from chemspec.errors import RunError
from chemspec.runtime.io import read_json, write_bytes, write_json
from chemspec.runtime.tpe import estimate, read_loss_log

ESTIMATORS = ("tse", "tse_e", "tse_ema", "val")


def score(estimates: list[float], converged: list[float]) -> dict:
    x, y = np.asarray(estimates, float), np.asarray(converged, float)
    result: dict = {"n": len(x)}
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {**result, "status": "cannot score", "reason": "needs at least 3 configurations with distinct values"}
    line = stats.linregress(x, y)
    chosen = int(np.argmin(x))
    return {**result, "status": "ok", "slope": float(line.slope), "intercept": float(line.intercept),
            "r2": float(line.rvalue ** 2), "spearman": float(stats.spearmanr(x, y).statistic),
            "kendall": float(stats.kendalltau(x, y).statistic), "chosen": chosen,
            "regret": float(y[chosen] - y.min()),
            "misranked_pairs": int(sum((x[i] - x[j]) * (y[i] - y[j]) < 0
                                       for i in range(len(x)) for j in range(i + 1, len(x))))}


def run_calibration(cell: CalibrationCell) -> dict:
    rows = []
    for key in sorted(cell.tpe_dirs):
        tpe_dir, full_dir = Path(cell.tpe_dirs[key]), Path(cell.full_dirs[key])
        if not (tpe_dir / "estimate.json").is_file() or not (full_dir / "estimate.json").is_file():
            raise RunError(f"calibration: results of tpe@{key} or calibrate@{key} are missing; run `dvc repro`")
        short = read_json(tpe_dir / "estimate.json", ("hparams",))
        full = read_json(full_dir / "estimate.json")
        row = {"name": key, "hparams": short["hparams"], "status": "diverged",
               "tpe_cost_s": short["wall_time_s"], "full_cost_s": full["wall_time_s"]}
        if short.get("status") == "ok":  # TPE ranks it, whatever its full run did
            log = read_loss_log(tpe_dir / "loss.csv")
            row["estimates"] = {e: estimate(log, short["val_history"], {**cell.estimator, "estimator": e},
                                            short.get("steps_per_epoch"), short.get("span_epochs"))
                                for e in ESTIMATORS}
        if short.get("status") == "ok" and full.get("status") == "ok":
            row.update(status="ok", converged=full["val_loss"])
        rows.append(row)
    usable = [r for r in rows if r["status"] == "ok"]
    converged = [r["converged"] for r in usable]
    scores = {e: score([r["estimates"][e] for r in usable], converged) for e in ESTIMATORS}
    for e, result in scores.items():
        ranked = sorted((r for r in rows if "estimates" in r), key=lambda r: (r["estimates"][e], r["name"]))
        if ranked and ranked[0]["status"] != "ok":  # scored without it, the estimator would look better than it is
            picked = f"its first pick, {ranked[0]['name']}, diverged in full training"
            result.update(regret=None, chosen=None, chosen_diverged=ranked[0]["name"],
                          reason="; ".join(filter(None, (result.get("reason"), picked))))
    name = cell.estimator["estimator"]
    kept = sorted((r for r in rows if "estimates" in r), key=lambda r: (r["estimates"][name], r["name"]))[:cell.keep]
    tpe_cost = sum(r["tpe_cost_s"] for r in rows)
    full_cost = sum(r["full_cost_s"] for r in rows)
    spent = tpe_cost + sum(r["full_cost_s"] for r in kept)
    result = {"budget_fraction": cell.budget_fraction, "estimator": name, "configs": rows, "scores": scores,
              "cost": {"tpe_s": round(tpe_cost, 3), "exhaustive_s": round(full_cost, 3),
                       "kept": [r["name"] for r in kept], "tpe_then_best_s": round(spent, 3),
                       "saving": round(1 - spent / full_cost, 4) if full_cost else None}}
    out = Path(cell.out_dir)
    write_bytes(out / "scatter.png", _scatter(usable, scores, cell.budget_fraction))
    write_json(out / "calibration.json", result)
    return {"estimator": result["estimator"], **{f"{e}_spearman": s.get("spearman") for e, s in scores.items()}}


def _scatter(rows: list[dict], scores: dict, fraction: float) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ESTIMATORS), figsize=(4 * len(ESTIMATORS), 3.6), constrained_layout=True)
    for ax, name in zip(axes, ESTIMATORS):
        x = [r["estimates"][name] for r in rows]
        ax.scatter(x, [r["converged"] for r in rows])
        s = scores[name]
        if s["status"] == "ok":
            grid = np.linspace(min(x), max(x), 10)
            ax.plot(grid, s["slope"] * grid + s["intercept"], "k--", lw=1)
            ax.set_title(f"{name}: R²={s['r2']:.2f} ρ={s['spearman']:.2f} τ={s['kendall']:.2f}", fontsize=9)
        ax.set_xlabel(f"{name} estimate at {fraction:.0%} of the budget")
    axes[0].set_ylabel("converged validation loss")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()
