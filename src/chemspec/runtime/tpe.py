"""Training Performance Estimation: estimators over a per-step loss log, the select stage, and what TPE
cost against training every configuration (the fit stage records it, the report words it).

The log is a list of epochs, each the list of that epoch's per-step training losses. Estimators work
on per-epoch means so that configurations with different batch sizes (and so different numbers of
steps per epoch) are comparable. A window that ends a few steps into an epoch counts that epoch by the
share of its steps trained: a small batch size crosses into the next epoch where a large one does not,
and one step must not weigh as a whole epoch. An estimate ranks configurations; it is never a predicted loss and
never enters a scaling fit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chemspec.compiler.cells import SelectCell
from chemspec.errors import InputError, RunError
from chemspec.runtime.io import read_json, reading, write_json


def epoch_means(log: list[list[float]]) -> np.ndarray:
    return np.array([np.mean(epoch) for epoch in log if len(epoch)], dtype=np.float64)


def epoch_shares(log: list[list[float]], steps_per_epoch: int | None = None) -> np.ndarray:
    """The share of each (non-empty) epoch that the log covers; every epoch counts whole without
    `steps_per_epoch` (runs from before 2026-12-05 recorded none), as select then ranked them."""
    return np.array([min(1.0, len(epoch) / steps_per_epoch) if steps_per_epoch else 1.0
                     for epoch in log if len(epoch)], dtype=np.float64)


def read_loss_log(path: str | Path) -> list[list[float]]:
    """A loss.csv (columns epoch, step, loss; read by name) back into per-epoch lists of step losses."""
    import csv

    epochs: dict[int, list[float]] = {}
    with reading(Path(path), "a loss log (columns epoch, step, loss)"), open(path, newline="") as handle:
        rows = csv.DictReader(handle)
        for row in rows:
            if row.get("epoch") is None or row.get("loss") is None:
                raise ValueError(f"line {rows.line_num} has no epoch or no loss")
            epochs.setdefault(int(row["epoch"]), []).append(float(row["loss"]))
    return [epochs[e] for e in sorted(epochs)]


def tpe_log(folder: Path, key: str) -> list[list[float]]:
    """The loss log of the TPE run tpe@`key` (in `folder`), refused when it holds no step: an empty log's
    sum would rank first."""
    path = folder / "loss.csv"
    log = read_loss_log(path)
    if not any(log):
        raise InputError(f"{path} holds no training step", f"run tpe@{key} again (`dvc repro -f -s tpe@{key}`)")
    return log


def _spanned(means: np.ndarray, weights: np.ndarray, span: float | None) -> float:
    """The weighted sum of epoch means, rescaled to `span` epochs when given."""
    covered = weights.sum()
    if not covered:
        return 0.0
    return float((weights * means).sum() / covered * (span if span else covered))


def tse(log: list[list[float]], window: int | None = None, steps_per_epoch: int | None = None,
        span: float | None = None) -> float:
    """Sum over the first `window` epochs (all by default) of the per-epoch mean training loss. With
    `steps_per_epoch`, an epoch trained in part weighs by its share; with `span` (the epochs the window was
    meant to cover, budget_fraction × max_epochs) the sum is that many epochs of the share-weighted mean,
    so that rounding each window to whole steps favours no batch size."""
    log = log[:window] if window else log
    return _spanned(epoch_means(log), epoch_shares(log, steps_per_epoch), span)


def tse_e(log: list[list[float]], last_epochs: int, steps_per_epoch: int | None = None,
          span: float | None = None) -> float:
    """TSE over the last E epochs' worth of the window only: a last epoch trained in part takes the rest of
    its weight from the epoch before it."""
    shares, left = epoch_shares(log, steps_per_epoch), float(last_epochs)
    taken = np.zeros_like(shares)
    for i in reversed(range(len(shares))):
        taken[i] = min(shares[i], left)
        left -= taken[i]
        if left <= 0:
            break
    return _spanned(epoch_means(log), taken, min(last_epochs, span) if span else None)


def tse_ema(log: list[list[float]], decay: float, steps_per_epoch: int | None = None) -> float:
    """Exponentially weighted mean of per-epoch means (recent epochs weigh most, a partly trained epoch by
    its share), normalised by its weights."""
    means = epoch_means(log)
    weights = decay ** np.arange(len(means))[::-1] * epoch_shares(log, steps_per_epoch)
    return float((weights * means).sum() / weights.sum())


def estimate(log: list[list[float]], val_history: list[float], estimator: dict,
             steps_per_epoch: int | None = None, span: float | None = None) -> float:
    """`steps_per_epoch` and `span` as in `tse`; runs from before 2026-12-05 recorded neither."""
    kind = estimator["estimator"]
    if kind == "tse":
        return tse(log, steps_per_epoch=steps_per_epoch, span=span)
    if kind == "tse_e":
        return tse_e(log, estimator["last_epochs"], steps_per_epoch, span)
    if kind == "tse_ema":
        return tse_ema(log, estimator["ema_decay"], steps_per_epoch)
    if kind == "val":
        return float(val_history[-1])
    raise RunError(f"hpo.tpe.estimator {kind!r} is unknown; choose one of tse, tse_e, tse_ema, val")


def rank_group(rows: list[dict], keep: int, margin: float | None, estimator: str) -> list[dict]:
    """Rank one search's configurations (lower estimate is better) and decide which are kept: each row
    gains rank, kept and reason; the kept rows' hparams are returned, best first."""
    finite = sorted((r for r in rows if r["status"] == "ok" and r["estimate"] is not None
                     and np.isfinite(r["estimate"])), key=lambda r: (r["estimate"], r["name"]))
    best = finite[0]["estimate"] if finite else None
    for rank, row in enumerate(finite, start=1):
        within = margin is None or rank == 1 or row["estimate"] <= best + margin * abs(best)
        row.update(rank=rank, kept=rank <= keep and within,
                   reason=f"rank {rank} of {len(finite)} by {estimator}" + (
                       "" if rank <= keep and within else
                       f"; only the best {keep} are trained (hpo.tpe.keep)" if rank > keep else
                       f"; estimate more than {margin:.0%} above the best (hpo.tpe.margin)"))
    for row in rows:
        if row not in finite:
            row.update(rank=None, kept=False, reason="diverged during TPE")
    return [r["hparams"] for r in finite if r["kept"]]


def run_select(cell: SelectCell) -> dict:
    """Estimate each configuration from its TPE run's loss log, rank them within each group and keep the best
    (see rank_group), or keep a group's only configuration, which no TPE run ranks; write the ranking and, per
    group and rank, the configuration its train cells read."""
    rows = {}
    for key, folder in sorted(cell.tpe_dirs.items()):
        path, log = Path(folder) / "estimate.json", Path(folder) / "loss.csv"
        for needed in (path, log):
            if not needed.is_file():
                raise RunError(f"select: {needed} is missing; run `dvc repro` so that tpe@{key} runs first")
        result = read_json(path, ("hparams", "wall_time_s", "val_history"))
        status = result.get("status", "ok")
        losses = tpe_log(Path(folder), key) if status == "ok" else []
        rows[key] = {"name": key, "hparams": result["hparams"], "cost_s": result["wall_time_s"], "status": status,
                     "estimate": None if status != "ok" else estimate(
                         losses, result["val_history"], cell.estimator,
                         result.get("steps_per_epoch"), result.get("span_epochs"))}
    for key, hparams in sorted(cell.unranked.items()):
        rows[key] = {"name": key, "hparams": hparams, "cost_s": 0.0, "status": "ok", "estimate": None, "rank": 1,
                     "kept": True, "unranked": True,
                     "reason": "the only configuration of hpo.grid: trained without a TPE run"}
    kept = {}
    for group, keys in sorted(cell.groups.items()):
        if set(keys) <= set(cell.unranked):
            kept[group] = [rows[k]["hparams"] for k in keys]
            continue
        kept[group] = rank_group([rows[k] for k in keys], cell.keep, cell.margin, cell.estimator["estimator"])
        if not kept[group]:
            raise RunError(f"select: every TPE configuration{'' if group == '*' else ' of ' + group} diverged; "
                           "lower hpo.grid.learning_rate")
    for group, paths in sorted(cell.choices.items()):
        for rank, path in enumerate(paths, start=1):
            chosen = kept[group][rank - 1] if rank <= len(kept[group]) else None
            write_json(path, {"group": group, "rank": rank, "hparams": chosen})
    result = {"estimator": cell.estimator["estimator"], "keep": cell.keep, "margin": cell.margin, "kept": kept,
              "configs": sorted(rows.values(), key=lambda r: (r["rank"] is None, r["rank"] or 0, r["name"])),
              "tpe_cost_s": round(sum(r["cost_s"] for r in rows.values()), 3)}
    write_json(cell.out, result)
    return result


def cost(selected: dict | None, wall_times: list[float]) -> dict | None:
    """Compute spent by TPE plus full training (`wall_times`: every run of the grid, each kept rank of
    each cell), against training every configuration in every cell."""
    if not selected:
        return None
    train = sum(wall_times)
    groups = max(1, len(selected["kept"]))
    configs = len(selected["configs"]) // groups
    kept = sum(len(chosen) for chosen in selected["kept"].values()) / groups  # what select kept, not hpo.tpe.keep
    spent = selected["tpe_cost_s"] + train
    exhaustive = train / kept * configs
    return {"tpe_s": selected["tpe_cost_s"], "train_s": round(train, 3), "spent_s": round(spent, 3),
            "exhaustive_s": round(exhaustive, 3), "configs": configs, "kept": round(kept, 3),
            "saving": round(1 - spent / exhaustive, 4) if exhaustive and kept < configs else None}


def window_steps(window: float, total_steps: int) -> int:
    """Lightning's max_steps for a run that stops at `window` of `total_steps` (-1: no step limit)."""
    return max(1, round(window * total_steps)) if window < 1 else -1
