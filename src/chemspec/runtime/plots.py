"""Figures of a study, as PNG and SVG with fixed metadata (the same results give the same bytes):
loss vs data size per model size and loss vs parameters per data size, each with its fitted power law
and the band its exponent interval spans; the joint fit's iso-loss contours; residuals of every fit."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np

from chemspec.runtime.io import atomic_dir, write_bytes
from chemspec.specs.model import FORCE_FIELDS

_FORCE_FIELD = ("training structures", "parameters (embeddings included)")
AXES = {"chemgpt": ("training molecules", "non-embedding parameters"), **dict.fromkeys(FORCE_FIELDS, _FORCE_FIELD)}
"""(data axis, parameter axis) of each model family: ChemGPT trains on molecules and counts parameters
without its embeddings (runtime.chemgpt), the force fields on structures with every parameter
(runtime.forcefield_train counts them all: their atom embeddings are a small, fixed share)."""

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "chemspec"
    import matplotlib.pyplot as plt

    return plt


def _save(fig, folder: Path, name: str) -> None:
    for kind, meta in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=kind, dpi=100, metadata=meta)
        write_bytes(folder / f"{name}.{kind}", buffer.getvalue())


def _panel(ax, rows: list[dict], fits: list[dict], axis: str, x_key: str, group_key: str, label: str) -> None:
    for group in dict.fromkeys(str(r[group_key]) for r in rows):
        xs, ys = zip(*sorted((r[x_key], r["val_loss"]) for r in rows if str(r[group_key]) == group))
        line = ax.plot(xs, ys, "o", label=f"{label} {group}")[0]
        fit = next((f for f in fits if f["axis"] == axis and f["group"] == group and f["law"] == "power"
                    and f["status"] == "ok"), None)
        if fit is None:
            ax.plot(xs, ys, ":", color=line.get_color())
            continue
        grid = np.geomspace(min(xs), max(xs), 50)
        centre = float(np.exp(np.mean(np.log(xs))))
        anchor = fit["prefactor"] * centre ** -fit["exponent"]
        ax.plot(grid, anchor * (grid / centre) ** -fit["exponent"], "-", color=line.get_color(),
                label=f"  α = {fit['exponent']:.3f} [{fit['ci'][0]:.3f}, {fit['ci'][1]:.3f}]")
        band = [anchor * (grid / centre) ** -e for e in fit["ci"]]
        ax.fill_between(grid, np.minimum(*band), np.maximum(*band), color=line.get_color(), alpha=0.15)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def _scaling(plt, rows: list[dict], result: dict, title: str, axes: tuple[str, str]):
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    _panel(left, rows, result["fits"], "data", "data_size", "model", "model")
    left.set_xlabel(axes[0])
    left.set_ylabel("validation loss")
    _panel(right, rows, result["fits"], "params", "params", "data_size", "n =")
    right.set_xlabel(axes[1])
    fig.suptitle(f"{title}: power laws (effective exponents, {result['confidence']:.0%} bands)")
    return fig


def _joint(plt, rows: list[dict], joint: dict, title: str, axes: tuple[str, str]):
    fig, ax = plt.subplots(figsize=(5.5, 4.5), constrained_layout=True)
    n, d = [r["params"] for r in rows], [r["data_size"] for r in rows]
    ax.scatter(n, d, c=[r["val_loss"] for r in rows], cmap="viridis", edgecolors="k", zorder=3)
    if joint.get("status") == "ok":
        gn, gd = np.meshgrid(np.geomspace(min(n) / 2, max(n) * 2, 80), np.geomspace(min(d) / 2, max(d) * 2, 80))
        surface = joint["E"] + joint["A"] * gn ** -joint["alpha"] + joint["B"] * gd ** -joint["beta"]
        contours = ax.contour(gn, gd, surface, levels=8, cmap="viridis")
        ax.clabel(contours, fontsize=7, fmt="%.3g")
        ax.set_title(f"L = {joint['E']:.3g} + A/N^{joint['alpha']:.3f} + B/D^{joint['beta']:.3f}", fontsize=9)
    else:
        reason = joint.get("reason", "")
        ax.set_title(textwrap.fill(f"joint fit: {reason}", 70), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"{axes[1]} N")
    ax.set_ylabel(f"{axes[0]} D")
    fig.suptitle(f"{title}: iso-loss contours")
    return fig


def _residuals(plt, result: dict, title: str):
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    fitted = [f for f in result["fits"] if f["status"] == "ok" and f.get("residuals")]
    for index, fit in enumerate(fitted):
        ax.plot([index] * len(fit["residuals"]), fit["residuals"], "o", alpha=0.7)
    joint = result.get("joint") or {}
    if joint.get("status") == "ok":
        ax.plot([len(fitted)] * len(joint["residuals"]), joint["residuals"], "o", alpha=0.7)
    labels = [f"{f['law']}:{f['axis']}:{f['group']}" for f in fitted] + (["joint"] if joint.get("residuals") else [])
    ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=6, ha="right")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("log residual")
    fig.suptitle(f"{title}: residuals of each fit (log space)")
    return fig


def _generation(plt, rows: list[dict], title: str):
    from chemspec.runtime.quality import METRICS

    if not rows:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, "no cell finished with a sampled set of molecules to score", ha="center", va="center")
        ax.set_axis_off()
        fig.suptitle(f"{title}: generation quality of each cell")
        return fig
    fig, axes = plt.subplots(2, len(METRICS), figsize=(3 * len(METRICS), 6), constrained_layout=True)
    for row_axes, (x_key, group_key, label) in zip(axes, (("data_size", "model", "training molecules"),
                                                           ("params", "data_size", "non-embedding parameters"))):
        for ax, metric in zip(row_axes, METRICS):
            for group in dict.fromkeys(r[group_key] for r in rows):
                points = sorted((r[x_key], r["generation"][metric]) for r in rows if r[group_key] == group
                                and r["generation"][metric] is not None)
                if points:
                    ax.plot(*zip(*points), "o-", label=str(group))
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
            if metric == "fcd":
                ax.set_yscale("log")
            ax.set_title(metric.replace("_", " "), fontsize=9)
            ax.set_xlabel(label, fontsize=8)
            ax.grid(True, alpha=0.3)
        row_axes[0].legend(fontsize=7)
    fig.suptitle(f"{title}: generation quality of each cell")
    return fig


def write_plots(rows: list[dict], result: dict, folder: Path, title: str, family: str, names: tuple[str, ...]) -> None:
    """The figures `names` (specs.outputs.figures: those dvc.yaml declares) as `<name>.png` in `folder`."""
    plt = _pyplot()
    usable = [r for r in rows if r["status"] == "ok"]
    axes = AXES[family]
    draw = {"scaling": lambda: _scaling(plt, usable, result, title, axes),
            "joint": lambda: _joint(plt, usable, result["joint"], title, axes),
            "residuals": lambda: _residuals(plt, result, title),
            "generation": lambda: _generation(plt, [r for r in usable if r.get("generation")], title)}
    with atomic_dir(folder) as tmp:
        for name in names:
            fig = draw[name]()
            try:
                _save(fig, tmp, name)
            finally:
                plt.close(fig)
