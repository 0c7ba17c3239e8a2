"""The report's sentences: each turns one part of a run's results into the words that the terminal, the HTML page
and the Markdown summary show alike."""

from __future__ import annotations

import math

from chemspec.runtime.result_files import untrained
from chemspec.words import count


def interval_text(ci: list | None) -> str:
    """[low, high] to 3 decimals; an end that is null (infinite in the fit) is "open"."""
    if not ci:
        return "-"
    return "[" + ", ".join("open" if v is None else f"{v:.3f}" for v in ci) + "]"


def cost_text(spent: dict) -> str:
    """What TPE cost and saved, in one sentence; where TPE dropped no configuration, it claims no saving."""
    if spent["configs"] == 1 and not spent["tpe_s"]:
        return (f"Training {spent['train_s']:.1f} s, with no TPE run: hpo.grid holds one configuration, which TPE "
                "has nothing to rank against.")
    if spent["kept"] >= spent["configs"]:
        return (f"TPE {spent['tpe_s']:.1f} s + training {spent['train_s']:.1f} s: TPE kept all {spent['configs']} "
                "configuration(s) of hpo.grid, so it saved nothing (it needs more configurations than it keeps).")
    text = (f"TPE {spent['tpe_s']:.1f} s + training {spent['train_s']:.1f} s = {spent['spent_s']:.1f} s, against "
            f"about {spent['exhaustive_s']:.1f} s to train all {spent['configs']} configurations in every cell (each "
            "priced as the one kept, which overstates the saving where the others train faster)")
    if spent["saving"] is None:
        return f"{text}: no saving to report (no training time was recorded)."
    apart = (" These are training times; every stage also spends seconds starting and stopping, which TPE does "
             "not save and which outweighs the training of tiny cells.")
    if spent["saving"] < 0:
        return f"{text}: TPE cost {-spent['saving']:.0%} more than training every configuration would have.{apart}"
    return f"{text}: {spent['saving']:.0%} saved.{apart}"


def bootstrap_text(bootstrap: dict | None, confidence: float) -> str:
    """The bootstrap cross-check of the joint exponents in one sentence ('' where none was asked for)."""
    if not bootstrap:
        return ""
    if bootstrap["status"] != "ok":
        return f"Bootstrap over cells: {bootstrap['status']}: {bootstrap['reason']}."
    bound = f", {bootstrap['on_bound']} with an exponent on a bound" if bootstrap.get("on_bound") else ""
    return (f"Bootstrap over cells ({bootstrap['fitted']} of {bootstrap['resamples']} resamples fitted{bound}): "
            f"joint α {interval_text(bootstrap['ci_alpha'])}, β {interval_text(bootstrap['ci_beta'])} "
            f"({confidence:.0%} percentile intervals).")


def noise_text(noise: dict | None, joint: dict | None) -> str:
    """The seed-to-seed spread of log loss at the replicated cells, beside the joint fit's residual
    standard error ('' where fit.replicate_seeds is 0): residuals far above the seed noise mean the law
    does not describe the grid."""
    if not noise:
        return ""
    if noise["median_std_log_loss"] is None:
        return "Seed noise: no replicated cell finished alongside the run it repeats, so none was measured."
    cells = ", ".join(f"{cell}: {std:.3g} over {noise['seeds_per_cell'].get(cell, '?')} runs"
                      for cell, std in noise["std_log_loss"].items())
    text = f"Seed noise: std of log loss over seeds {noise['median_std_log_loss']:.3g} (median; {cells})"
    joint = joint or {}
    if joint.get("status") == "ok" and joint.get("dof"):
        residual = math.sqrt(sum(r * r for r in joint["residuals"]) / joint["dof"])
        text += f", against a residual standard error of {residual:.3g} in the joint fit"
    return text + "; residuals far above the seed noise mean the law does not describe the grid."


def unfinished_text(cells: list[dict]) -> str:
    """What the validity column counts of samples cut off at the length limit, where the run recorded them."""
    counted = [(c, c["generation"]) for c in cells if c.get("generation") and c["generation"].get("unfinished")]
    if not counted:
        return ""
    def share(g: dict) -> float:
        return g["unfinished"] / max(g["samples"], 1)

    cell, worst = max(counted, key=lambda pair: share(pair[1]))
    return (f"A sample that reached the length limit without [EOS] counts as invalid: "
            f"{sum(g['unfinished'] for _, g in counted):,} in all, at most {share(worst):.1%} of a cell's "
            f"({cell['model']}, {cell['data_size']:,}).")


def few_valid_text(cells: list[dict]) -> str:
    """Which cells' uniqueness, novelty, diversity and property distances rest on fewer valid molecules than
    their FCD is scored on (generation.fcd_molecules): shown, as MOSES shows them, but named (with none, they
    are `-`)."""
    def valid(g: dict) -> int:
        return round((g.get("validity") or 0) * g.get("samples", 0))

    few = [(c, n) for c in cells if (g := c.get("generation")) and g.get("fcd_molecules")
           and 0 < (n := valid(g)) < g["fcd_molecules"]]
    if not few:
        return ""
    cell, fewest = min(few, key=lambda pair: pair[1])
    return (f"In {count(len(few), 'cell')}, uniqueness, novelty, internal diversity and W₁ rest on fewer valid "
            f"molecules than the {cell['generation']['fcd_molecules']:,} FCD is scored on: as few as {fewest:,} "
            f"({cell['model']}, {cell['data_size']:,}).")


def untimed_text(cells: list[dict]) -> str:
    """Why a finished cell's speed reads '-', where one does ('' otherwise)."""
    untimed = [c for c in cells if c.get("status", "ok") == "ok"
               and c.get("train_tokens_per_s") is None and c.get("train_structures_per_s") is None]
    if not untimed:
        return ""
    return (f"Speed -: {count(len(untimed), 'cell')} not timed; a cell's speed is timed after its warm-up (the first "
            "tenth of its optimiser steps, and at least 5) over 3 steps or more, so a run of a handful of steps, one "
            "resumed without steps enough after it, or a run archived before cells recorded their speed has none.")


def baseline_text(cells: list[dict]) -> str:
    """A force field's test errors if it learned nothing, and the finished cells that do no better, where the
    cells recorded them ('' otherwise)."""
    rows = [c for c in cells if isinstance(c.get("baseline"), dict)]
    if not rows:
        return ""

    def span(key: str, unit: str) -> str:
        values = [c["baseline"][key] for c in rows if key in c["baseline"]]
        low, high = (f"{value:,.1f}" for value in (min(values), max(values)))
        return f"{low} {unit}" if low == high else f"{low}–{high} {unit}"

    energies = any("energy_mae_meV" in c["baseline"] for c in rows)  # none where the loss trains forces alone
    text = (("A model that learned nothing (reference energies alone, fitted by element counts on the cell's "
             f"training set, and zero forces) errs by {span('energy_mae_meV', 'meV')} and " if energies else
             "A model that learned nothing (zero forces) errs by ") + f"{span('force_mae_meV_per_A', 'meV/Å')} on the "
            "test set." + ("" if energies else " The loss trains forces alone (training.loss.energy: 0), which fix "
                           "energies only up to a constant: no energy error is measured."))
    worse = []
    for key, what in (("energy_mae_meV", "energies"), ("force_mae_meV_per_A", "forces")):
        names = [f"{c['model']} at {c['data_size']:,}" for c in rows if untrained(c, key)]
        if names:
            more = ", …" if len(names) > 6 else ""
            worse.append(f"on {what} {count(len(names), 'cell')} ({', '.join(names[:6])}{more})")
    if worse:
        text += (f" No better than that: {'; '.join(worse)}. Their errors, and their points in the fits, measure where "
                 "training started rather than what it learned: train them longer (training.max_epochs).")
    return text


def untrained_points(fitted: dict) -> str:
    """How many points of a test-error fit are cells no better than a model that learned nothing ('' none)."""
    weak = fitted.get("untrained")
    return f"{weak} of its {fitted['n']} points no better than a model that learned nothing" if weak else ""


def errors_text(cells: list[dict], fit: dict, study: str, manifest: str | None) -> str:
    """How to fit a force field's test errors where its run was fitted before chemspec fitted them ('' else)."""
    if fit.get("errors") is not None or not any("force_mae_meV_per_A" in c for c in cells):
        return ""
    how = (f"`chemspec refit {manifest[:12]} --study {study}` fits them from the archive, without training." if manifest
           else "running the fit stage again (`dvc repro --force --single-item fit`) fits them, without training.")
    return f"This run's fit predates the power laws of its test errors (force and energy MAE against size): {how}"


def data_text(data: dict | None) -> str:
    """What the data stage kept of what it read (its data.json), in one sentence, and what it noted of a force
    field's data; '' where it is not known."""
    from chemspec.runtime.molecules import dropped_text

    if not isinstance(data, dict) or not isinstance(data.get("count"), int):
        return ""
    if data.get("kind") == "atoms":
        atoms = f" ({data['atoms']:,} atoms)" if isinstance(data.get("atoms"), int) else ""
        notes = data.get("notes") if isinstance(data.get("notes"), list) else []
        return f"Data: {data['count']:,} structures{atoms}." + "".join(f" The data stage noted: {note}."
                                                                         for note in notes if isinstance(note, str))
    counts = data.get("counts") if isinstance(data.get("counts"), dict) else {}
    read, left_out = counts.get("read"), dropped_text(counts)
    if not isinstance(read, int):
        return f"Data: {data['count']:,} molecules."
    if not left_out:
        return f"Data: {data['count']:,} molecules, none of those read left out."
    return f"Data: {data['count']:,} molecules kept of the {read:,} read (left out: {left_out})."


def provenance_text(provenance: dict | None) -> str:
    """What the run's cells trained with and on, from its manifest's provenance ('' where it records none: a run
    not archived, or archived before cells recorded their training stack)."""
    stacks = [stack for stack in (provenance or {}).get("trained_with") or []
              if isinstance(stack, dict) and all(isinstance(stack.get(key), str) for key in ("torch", "python"))]
    if not stacks:
        return ""

    def named(stack: dict) -> str:
        build = f"CUDA {stack['cuda']}" if stack.get("cuda") else "CPU build"
        others = [f"{name} {stack[name]}" for name in ("lightning", "transformers") if stack.get(name)]
        return ", ".join([f"torch {stack['torch']} ({build})", *others, f"Python {stack['python']}"])

    lead = "Trained with " if len(stacks) == 1 else f"Trained with {len(stacks)} stacks: "
    text = lead + "; ".join(map(named, stacks))
    if provenance.get("trained_on"):
        text += " on " + ", ".join(provenance["trained_on"])
    if provenance.get("trained_unrecorded"):
        text += f"; {count(provenance['trained_unrecorded'], 'cell')} recorded none"
    return text + "."
