"""Log-log scaling plots: loss vs data size per model size, and loss vs parameters per data size."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from chemspec.runtime.io import write_bytes


def _panel(ax, rows: list[dict], fits: list[dict], axis: str, x_key: str, group_key: str, label: str) -> None:
    groups = dict.fromkeys(str(r[group_key]) for r in rows)
    for group in groups:
        points = sorted((r[x_key], r["val_loss"]) for r in rows if str(r[group_key]) == group)
        xs, ys = zip(*points)
        line = ax.plot(xs, ys, "o", label=f"{label} {group}")[0]
        fit = next((f for f in fits if f["axis"] == axis and f["group"] == group and f["status"] == "ok"), None)
        if fit:
            grid = np.geomspace(min(xs), max(xs), 50)
            ax.plot(grid, fit["prefactor"] * grid ** -fit["exponent"], "-", color=line.get_color(),
                    label=f"  α = {fit['exponent']:.3f} [{fit['ci'][0]:.3f}, {fit['ci'][1]:.3f}]")
        else:
            ax.plot(xs, ys, ":", color=line.get_color())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def scaling_plot(rows: list[dict], fits: list[dict], path: Path, title: str, confidence: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    usable = [r for r in rows if r["status"] == "ok"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    _panel(left, usable, fits, "data", "data_size", "model", "model")
    left.set_xlabel("training molecules")
    left.set_ylabel("validation loss (nats/token)")
    _panel(right, usable, fits, "params", "params", "data_size", "n =")
    right.set_xlabel("non-embedding parameters")
    fig.suptitle(f"{title}: power-law fits (effective exponents, {confidence:.0%} intervals)")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    write_bytes(path, buffer.getvalue())
