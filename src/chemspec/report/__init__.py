"""The study report: a self-contained HTML page (plots embedded) and a Markdown summary.

Everything shown is computed here from the fit stage's outputs; the jinja2 template only lays it out.
"""

from __future__ import annotations

import base64
from pathlib import Path

import jinja2

from chemspec.errors import ArchiveError
from chemspec.report.texts import (baseline_text, bootstrap_text, cost_text, data_text, errors_text, few_valid_text,
                                   interval_text, noise_text, provenance_text, unfinished_text, untimed_text,
                                   untrained_points)
from chemspec.runtime.io import write_bytes
from chemspec.runtime.plots import AXES
from chemspec.runtime.quality import COLUMNS, LABELS
from chemspec.specs.generation import Generation
from chemspec.words import shown

IMAGES = ("scaling", "joint", "residuals", "generation")


def intervals_note(confidence: float) -> str:
    """What the two interval columns are (runtime.laws computes both), and what an open end means."""
    from chemspec.runtime.laws import EXPONENT_MAX

    return (f"Intervals at {confidence:.0%}. Wald (t): estimate ± t·se, symmetric; exact for the power law (OLS on "
            "logs), approximate for the saturating and joint laws, where it can cross the fit's bounds "
            f"(0 ≤ exponent ≤ {EXPONENT_MAX:g}, E ≥ 0). Profile (F): the exponents at which the refit with the exponent "
            "held stays within the F(1, n − p) threshold of the best fit; it keeps to the bounds (a low end of 0 is "
            f"the bound) and is the one to quote. \"open\": up to the largest exponent the fit allows "
            f"({EXPONENT_MAX:g}) the losses fit within the threshold, so the data set no upper limit.")


def calibration_rows(calibration: dict | None) -> list[dict]:
    if not calibration:
        return []
    return [{"estimator": name, **{k: shown(s.get(k), 3) for k in ("r2", "spearman", "kendall", "regret")},
             "misranked": s.get("misranked_pairs", "-"), "n": s["n"], "note": s.get("reason", "")}
            for name, s in calibration["scores"].items()]


def generation_rows(cells: list[dict]) -> list[dict]:
    """Per-cell generation metrics as display text; cells without samples are left out."""
    rows = []
    for c in cells:
        g = c.get("generation")
        if g:
            texts = {k: shown(g.get(k), 3) for k in COLUMNS}
            rows.append({"model": c["model"], "params": c["params"], "data_size": c["data_size"], **texts,
                         "values": list(texts.values())})
    return rows


def _floor_text(joint: dict) -> str:
    """The joint law's floor E with its interval, which takes in no negative floor: at the bound 0 (the losses show
    no floor) none is given, and near it the Wald interval is cut at 0."""
    if joint["E"] <= 0:
        return "E at its bound 0: the losses show no floor, and no interval is given"
    low, high = joint["ci_E"]
    if low is not None and low < 0:
        return f"E Wald {interval_text([0.0, high])} (cut at the bound 0)"
    return f"E Wald {interval_text(joint['ci_E'])}"


def study_labels(spec: dict) -> dict:
    """How the pages name a study's data and samples, and whether they show force-field errors, from
    its validated spec (which every run, live or archived, holds)."""
    family = spec["model"]["family"]
    if family not in AXES:  # a run archived by a later chemspec
        raise ArchiveError(f"the run's spec names model family {family!r}, which this chemspec does not know "
                           f"(it knows {', '.join(AXES)}); upgrade chemspec to the version that archived it")
    data_axis, params_axis = AXES[family]
    selfies = spec["data"]["kind"] == "smiles" and (spec["data"].get("representation") or "selfies") == "selfies"
    force_field = spec["data"]["kind"] == "atoms"
    gen = spec.get("generation") or {}
    if gen:  # the archived spec as validated then: a setting it leaves out had the default it has now
        gen = {**{name: field.default for name, field in Generation.model_fields.items()}, **gen}
    drawn = (f", {gen['samples']:,} a cell at temperature {gen['temperature']:g}, from "
             + (f"the {gen['top_k']} likeliest tokens" if gen.get("top_k") else "all tokens")
             + (f" within top_p {gen['top_p']:g}" if gen["top_p"] < 1 else "")) if gen else ""
    return {"force_field": force_field, "data_axis": data_axis, "params_axis": params_axis,
            "samples": ("Samples are SELFIES decoded to SMILES" if selfies else "Samples are SMILES as the model "
                        "wrote them") + drawn,
            "loss_note": LOSS_NOTES[force_field]}


FAMILY_NAMES = {"chemgpt": "ChemGPT (GPT-Neo)", "schnet": "SchNet", "painn": "PaiNN", "spookynet": "SpookyNet"}


def model_text(spec: dict) -> str:
    """The family the study trains, in one sentence: two reports of other families otherwise read alike."""
    model, data = spec["model"], spec["data"]
    name = FAMILY_NAMES.get(model["family"], model["family"])
    if data["kind"] == "smiles":
        return f"Model: {name} on {(data.get('representation') or 'selfies').upper()} strings."
    electronic = ", with charge and spin embeddings" if model.get("charge_spin") else ""
    return f"Model: {name} force field{electronic}."


LOSS_NOTES = {
    False: "Val and test loss: the mean cross-entropy of the next token, in nats.",
    True: "Val and test loss: the training objective on that split, energy_weight·L(E) + forces_weight·L(F) with "
          "L the loss of training.loss (l1 or mse), in no one physical unit; the MAE columns are the test errors."}
"""What the loss columns measure, by whether the study trains a force field."""


def _whole(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _in_cell_order(by_model: dict, rows: list[dict]) -> list[tuple]:
    """(model, value) in the order the cells table lists the models (the spec's), not fit.json's sorted keys."""
    order = list(dict.fromkeys(str(r["model"]) for r in rows))
    return sorted(by_model.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order))


def speed_text(cell: dict) -> str:
    """A cell's steady-state training speed, `12,345 tokens/s` or `9,150 structures/s`; '-' where it has
    none (a resumed or stopped run, or results archived before cells carried it)."""
    for key, unit in (("train_tokens_per_s", "tokens/s"), ("train_structures_per_s", "structures/s")):
        if cell.get(key) is not None:
            return f"{cell[key]:,.0f} {unit}"
    return "-"


def _status_text(cell: dict) -> str:
    if "divergence" in cell:
        return (f"diverged at step {cell['divergence']['step']} (last finite loss "
                f"{shown(cell['divergence']['last_finite_loss'])}); left out of the fits")
    if "reason" in cell:
        return f"{cell['status']}: {cell['reason']}; left out of the fits"
    others = "; ".join(f"{name} {status}" for name, status in cell.get("ranks_left_out", {}).items())
    return f"{cell['status']} (another kept configuration: {others})" if others else cell["status"]


def context(study: str, spec: dict, cells: list[dict], fit: dict, selected: dict | None, plots: Path | None,
            manifest: str | None = None, calibration: dict | None = None, plots_link: str = "plots",
            stale: str | None = None, provenance: dict | None = None, data: dict | None = None) -> dict:
    """What the pages show. `spec` is the study as validated (for its family and representation);
    `plots` is where the PNGs are read from (to embed them in the HTML); `plots_link` is that folder
    as report.md links it, relative to the report's own folder; `stale` says why the results are not
    those of the study as compiled now; `provenance` is the archived run's (None: not archived)."""
    fits = [{**f, "ci_text": interval_text(f.get("ci")), "profile_text": interval_text(f.get("ci_profile"))}
            for f in fit["fits"]]
    rows = [{**c, "val_text": shown(c["val_loss"]), "test_text": shown(c.get("test_loss")),
             "force_text": shown(c.get("force_mae_meV_per_A")), "energy_text": shown(c.get("energy_mae_meV")),
             "hp_text": ", ".join(f"{k}={v}" for k, v in (c["hparams"] or {}).items()),
             "speed_text": speed_text(c), "memory_text": _whole(c.get("peak_gpu_memory_mb")),
             "status_text": _status_text(c)} for c in cells]
    stats = fit.get("statistics", {})
    spearman = [(size, {**s, "rho_params_text": shown(s["rho_params"], 3), "rho_time_text": shown(s["rho_time"], 3)})
                for size, s in sorted(stats.get("spearman", {}).items(), key=lambda item: float(item[0]))]
    joint = fit.get("joint") or {}
    joint_text = (f"L = {joint['E']:.4g} + {joint['A']:.4g}/N^{joint['alpha']:.3f} + {joint['B']:.4g}/D^{joint['beta']:.3f}"
                  f" (α Wald {interval_text(joint['ci_alpha'])}, profile {interval_text(joint.get('ci_alpha_profile'))};"
                  f" β Wald {interval_text(joint['ci_beta'])}, profile {interval_text(joint.get('ci_beta_profile'))};"
                  f" {_floor_text(joint)}; {joint['n']} cells)" if joint.get("status") == "ok" else
                  (f"cannot fit: {joint['reason']}" if joint else ""))
    tpe = None
    if selected:
        tpe = {"estimator": selected["estimator"], "ranked": not all(c.get("unranked") for c in selected["configs"]),
               "configs": [{**c, "estimate_text": shown(c["estimate"])} for c in selected["configs"]],
               "cost_text": cost_text(fit["cost"]) if fit.get("cost") else ""}
    images = [(name, base64.b64encode((plots / f"{name}.png").read_bytes()).decode())
              for name in IMAGES if plots is not None and (plots / f"{name}.png").is_file()]
    return {"study": study, "stale": stale, "labels": study_labels(spec), "cells": rows, "fits": fits,
            "laws": fit.get("laws", []), "confidence": fit["confidence"],
            "intervals_note": intervals_note(fit["confidence"]),
            "bootstrap_text": bootstrap_text(fit.get("bootstrap"), fit["confidence"]),
            "noise_text": noise_text(fit.get("noise"), fit.get("joint")),
            "joint_text": joint_text, "spearman": spearman,
            "monotone": _in_cell_order(stats.get("loss_falls_with_data", {}), rows),
            "tpe": tpe, "images": images, "figure_links": [(name, f"{plots_link}/{name}.png") for name, _ in images],
            "manifest": manifest, "provenance_text": provenance_text(provenance),
            "calibration": calibration_rows(calibration),
            "untimed_text": untimed_text(cells), "baseline_text": baseline_text(cells), "data_text": data_text(data),
            "model_text": model_text(spec),
            "generation": generation_rows(cells), "generation_labels": [LABELS[k] for k in COLUMNS],
            "unfinished_text": unfinished_text(cells),
            "few_valid_text": few_valid_text(cells),
            "generation_fits": [{**f, "ci_text": interval_text(f.get("ci")), "quantity": _fcd_quantity(f)}
                                for f in fit.get("generation") or []],
            "error_fits": [{**f, "ci_text": interval_text(f.get("ci")), "untrained_text": untrained_points(f)}
                           for f in fit.get("errors") or []],
            "errors_text": errors_text(cells, fit, study, manifest)}


def html(ctx: dict) -> str:
    env = jinja2.Environment(loader=jinja2.PackageLoader("chemspec", "report"), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template("template.html.j2").render(**ctx)


def _fcd_quantity(fit: dict) -> str:
    """What a generation fit fits, and which cells of its group it had to leave out."""
    quantity = fit.get("quantity", "FCD")
    if fit.get("left_out"):
        quantity += (f" (left out, with fewer than {fit['molecules']} valid molecules to score: "
                     + ", ".join(fit["left_out"]) + ")")
    return quantity


def markdown(ctx: dict) -> str:
    stale = ctx["stale"].replace("\n", "  \n") if ctx["stale"] else None  # Markdown's line break
    lines = [f"# {ctx['study']}", "", ctx["model_text"], "", *([f"**Stale:** {stale}.", ""] if stale else []),
             "| law | axis | group | exponent | Wald (t) | profile (F) | R² | n |", "|---|---|---|---|---|---|---|---|"]
    for f in ctx["fits"]:
        if f["status"] == "ok":
            lines.append(f"| {f['law']} | {f['axis']} | {f['group']} | {f['exponent']:.3f} | {f['ci_text']} "
                         f"| {f['profile_text']} | {f['r2']:.3f} | {f['n']} |")
        else:
            lines.append(f"| {f['law']} | {f['axis']} | {f['group']} | cannot fit: {f['reason']} | | | | {f['n']} |")
    lines += ["", ctx["intervals_note"]]
    if ctx["joint_text"]:
        lines += ["", f"Joint fit: {ctx['joint_text']}"]
    lines += [line for text in (ctx["bootstrap_text"], ctx["noise_text"]) if text for line in ("", text)]
    force_field = ctx["labels"]["force_field"]
    lines += ["", ctx["data_text"]] if ctx["data_text"] else []
    lines += ["", f"| model | {ctx['labels']['params_axis']} | {ctx['labels']['data_axis']} | val loss | test loss | "
              + ("force MAE (meV/Å) | energy MAE (meV) | " if force_field else "") + "speed | status |",
              "|---|---|---|---|---|" + ("---|---|" if force_field else "") + "---|---|"]
    lines += [f"| {c['model']} | {c['params']:,} | {c['data_size']:,} | {c['val_text']} | {c['test_text']} | "
              + (f"{c['force_text']} | {c['energy_text']} | " if force_field else "")
              + f"{c['speed_text']} | {c['status_text']} |" for c in ctx["cells"]]
    lines += ["", " ".join(filter(None, [ctx["labels"]["loss_note"], ctx["untimed_text"]]))]
    lines += ["", ctx["baseline_text"]] if ctx["baseline_text"] else []
    if ctx["error_fits"]:
        lines += ["", "Test errors, power laws (OLS of log error on log size, Wald (t) intervals):", ""]
        lines += [f"- {f['quantity']}, {f['axis']} axis, {f['group']}: " + (
            f"{f['exponent']:.3f} {f['ci_text']}, R² {f['r2']:.3f}, n {f['n']}" if f["status"] == "ok"
            else f"cannot fit: {f['reason']}") + (f" ({f['untrained_text']})" if f["untrained_text"] else "")
            for f in ctx["error_fits"]]
    lines += ["", ctx["errors_text"]] if ctx["errors_text"] else []
    if ctx["generation"]:
        lines += ["", "Generation quality:", "",
                  "| model | data size | " + " | ".join(LABELS[k] for k in COLUMNS) + " |",
                  "|---|---|" + "---|" * len(COLUMNS)]
        lines += [f"| {g['model']} | {g['data_size']:,} | " + " | ".join(g[k] for k in COLUMNS) + " |"
                  for g in ctx["generation"]]
        notes = (ctx["unfinished_text"], ctx["few_valid_text"])
        lines += ["", f"{ctx['labels']['samples']}.", *[note for note in notes if note]]
        for f in ctx["generation_fits"]:
            value = f"{f['exponent']:.3f}, Wald (t) {f['ci_text']}" if f["status"] == "ok" else f"cannot fit: {f['reason']}"
            lines.append(f"- {f['axis']} axis, {f['group']}: power law of {f['quantity']}: {value}")
    if ctx["monotone"]:
        lines += ["", "Loss falls with data size: " + ", ".join(f"{m} {'yes' if ok else 'no'}" for m, ok in ctx["monotone"])]
    if ctx["spearman"]:
        lines += ["", "| data size | Spearman ρ (loss, parameters) | Spearman ρ (loss, training time) | n |",
                  "|---|---|---|---|"]
        lines += [f"| {size} | {s['rho_params_text']} | {s['rho_time_text']} | {s['n']} |" for size, s in ctx["spearman"]]
    if ctx["calibration"]:
        lines += ["", "TPE calibration (estimate at the TPE budget against the converged loss):", "",
                  "| estimator | R² | Spearman ρ | Kendall τ | regret | misranked pairs | n |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {c['estimator']} | {c['r2']} | {c['spearman']} | {c['kendall']} | {c['regret']} "
                  f"| {c['misranked']} | {c['n']} |" for c in ctx["calibration"]]
    if ctx["tpe"] and ctx["tpe"]["ranked"]:
        lines += ["", f"Training Performance Estimation (estimate: {ctx['tpe']['estimator']}):", "",
                  "| configuration | estimate | rank | decision | cost s |", "|---|---|---|---|---|"]
        lines += [f"| {c['name']} | {c['estimate_text']} | {c['rank'] or '-'} | {c['reason']} | {c['cost_s']:.1f} |"
                  for c in ctx["tpe"]["configs"]]
    if ctx["tpe"]:
        lines += ["", ctx["tpe"]["cost_text"]]
    if ctx["manifest"]:
        lines += ["", " ".join(filter(None, [f"Archived as manifest {ctx['manifest']}.", ctx["provenance_text"]]))]
    if ctx["figure_links"]:
        outside = ctx["figure_links"][0][1].startswith("../")
        lines += ["", "Figures (the fit stage's, which DVC keeps: a clone shows them after `dvc pull`; index.html "
                  "holds them):" if outside else "Figures:", ""]
        lines += [f"![{name}]({link})" for name, link in ctx["figure_links"]]
    return "\n".join(lines) + "\n"


def write(folder: Path, ctx: dict, final: Path) -> list[str]:
    """Write index.html and report.md into `folder`; return their paths as they will stand in `final`."""
    write_bytes(folder / "index.html", html(ctx).encode())
    write_bytes(folder / "report.md", markdown(ctx).encode())
    return [(final / "index.html").as_posix(), (final / "report.md").as_posix()]
