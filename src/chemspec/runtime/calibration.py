"""The calibration stage: how well does each TPE estimator, at its budget, rank the converged losses?

For every configuration the TPE run gives a short loss log and the calibrate run the converged
validation loss of the same configuration. Each estimator is scored by the linear fit of converged
loss on estimate (slope, intercept, R²), Spearman ρ, Kendall τ, and the top-1 regret: the converged
loss of the configuration the estimator ranks first minus the best converged loss (none, and that pick
named, when its full run diverged). Under hpo.tpe.scope model_size each size's search ranks only its
own configurations, so each is scored apart (a score per estimator and size). Compute saved is TPE's
cost plus one full run of each configuration select would keep (hpo.tpe.keep and margin, per search),
against full runs of all of them; configurations that diverged count on both sides, as they cost compute.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from scipy import stats

from chemspec.compiler.cells import CalibrationCell
from chemspec.errors import RunError
from chemspec.runtime.io import read_json, write_bytes, write_json
from chemspec.runtime.tpe import estimate, rank_group, tpe_log

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
            log = tpe_log(tpe_dir, key)
            row["estimates"] = {e: estimate(log, short["val_history"], {**cell.estimator, "estimator": e},
                                            short.get("steps_per_epoch"), short.get("span_epochs"))
                                for e in ESTIMATORS}
        if short.get("status") == "ok" and full.get("status") == "ok":
            row.update(status="ok", converged=full["val_loss"])
        rows.append(row)
    by_name, scores = {r["name"]: r for r in rows}, {}
    for group, keys in sorted(cell.groups.items()):
        members = [by_name[key] for key in keys]
        for e in ESTIMATORS:
            scores[e if len(cell.groups) == 1 else f"{e} ({group})"] = _scored(members, e)
    name = cell.estimator["estimator"]
    kept = [row for _, keys in sorted(cell.groups.items()) for row in _kept([by_name[k] for k in keys], cell, name)]
    tpe_cost = sum(r["tpe_cost_s"] for r in rows)
    full_cost = sum(r["full_cost_s"] for r in rows)
    spent = tpe_cost + sum(r["full_cost_s"] for r in kept)
    result = {"budget_fraction": cell.budget_fraction, "estimator": name, "configs": rows, "scores": scores,
              "cost": {"tpe_s": round(tpe_cost, 3), "exhaustive_s": round(full_cost, 3),
                       "kept": [r["name"] for r in kept], "tpe_then_best_s": round(spent, 3),
                       "saving": round(1 - spent / full_cost, 4) if full_cost else None}}
    out = Path(cell.out_dir)
    write_bytes(out / "scatter.png", _scatter(rows, cell.groups, scores, cell.budget_fraction))
    write_json(out / "calibration.json", result)
    return {"estimator": result["estimator"], **{f"{e}_spearman": s.get("spearman") for e, s in scores.items()}}


def _scored(rows: list[dict], estimator: str) -> dict:
    """`estimator`'s score over one search's configurations; no regret where its first pick diverged in
    full training (scored without it, the estimator would look better than it is)."""
    usable = [r for r in rows if r["status"] == "ok"]
    result = score([r["estimates"][estimator] for r in usable], [r["converged"] for r in usable])
    ranked = sorted((r for r in rows if "estimates" in r), key=lambda r: (r["estimates"][estimator], r["name"]))
    if ranked and ranked[0]["status"] != "ok":
        picked = f"its first pick, {ranked[0]['name']}, diverged in full training"
        result.update(regret=None, chosen=None, chosen_diverged=ranked[0]["name"],
                      reason="; ".join(filter(None, (result.get("reason"), picked))))
    return result


def _kept(rows: list[dict], cell: CalibrationCell, estimator: str) -> list[dict]:
    """The configurations of one search that select keeps by `estimator` (keep and margin, as it ranks)."""
    ranked = [{"name": r["name"], "hparams": r["hparams"], "status": "ok" if "estimates" in r else "diverged",
               "estimate": r["estimates"][estimator] if "estimates" in r else None} for r in rows]
    rank_group(ranked, cell.keep, cell.margin, estimator)
    kept = sorted((verdict["rank"], row) for row, verdict in zip(rows, ranked) if verdict.get("kept"))
    return [row for _, row in kept]


def _scatter(rows: list[dict], groups: dict[str, list[str]], scores: dict, fraction: float) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ESTIMATORS), figsize=(4 * len(ESTIMATORS), 3.6), constrained_layout=True)
    for ax, name in zip(axes, ESTIMATORS):
        for group, keys in sorted(groups.items()):
            usable = [r for r in rows if r["name"] in keys and r["status"] == "ok"]
            ax.scatter([r["estimates"][name] for r in usable], [r["converged"] for r in usable],
                       label=None if len(groups) == 1 else group)
        x, s = [r["estimates"][name] for r in rows if r["status"] == "ok"], scores.get(name)
        if len(groups) > 1:  # a score per size: the table says them
            ax.set_title(name, fontsize=9)
            ax.legend(fontsize=7, title="model size", title_fontsize=7)
        elif s["status"] == "ok":
            grid = np.linspace(min(x), max(x), 10)
            ax.plot(grid, s["slope"] * grid + s["intercept"], "k--", lw=1)
            ax.set_title(f"{name}: R²={s['r2']:.2f} ρ={s['spearman']:.2f} τ={s['kendall']:.2f}", fontsize=9)
        ax.set_xlabel(f"{name} estimate at {fraction:.0%} of the budget")
    axes[0].set_ylabel("converged validation loss")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()
