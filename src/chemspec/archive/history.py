"""Compare the runs archived at two git revisions (or one and the working tree): spec, cells, fits, selection."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chemspec.archive.snapshot import Snapshot
from chemspec.archive.store import json_digest
from chemspec.errors import UsageError
from chemspec.runtime.result_files import TEST_ERRORS
from chemspec.specs.training import BOOKKEEPING


def spec_changes(a: dict, b: dict) -> list[dict]:
    """The fields that differ between two archived specs, less the bookkeeping that runs archived before
    2026-12-05 (the executor section) or 2026-12-07 (training's loader workers and checkpoint interval) stored;
    a section or size that only one side has is one change, whole."""
    return list(_changes(*(_results_fields(spec) for spec in (a, b))))


def _results_fields(spec: dict) -> dict:
    fields = {key: value for key, value in spec.items() if key != "executor"}
    if isinstance(fields.get("training"), dict):
        fields["training"] = {k: v for k, v in fields["training"].items() if k not in BOOKKEEPING}
    return fields


def _changes(a: Any, b: Any, field: str = "") -> Iterator[dict]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            yield from _changes(a.get(key), b.get(key), f"{field}.{key}" if field else key)
    elif a != b:
        yield {"field": field, "before": a, "after": b}


def data_changes(a: dict | None, b: dict | None) -> list[dict]:
    """What two runs' data stages recorded differently (data.json: molecules or structures kept, what cleaning
    dropped, tokens), the same spec or not: a data file edited in place changes no spec field. Where only the
    files' hashes differ, one change names the new contents; a key only one side recorded (added to data.json
    since) is none. None on either side (a hand-made archive): []."""
    if a is None or b is None or a == b:
        return []
    changes = [change for change in _changes(*({k: v for k, v in side.items() if k != "sha256"} for side in (a, b)),
                                             "data")
               if None not in (change["before"], change["after"])]  # a key older runs did not record yet
    if changes or _digest(a) == _digest(b):
        return changes
    return [{"field": "data.sha256", "before": _digest(a), "after": _digest(b)}]


def _digest(data: dict) -> str | None:
    return json_digest(data["sha256"])[:12] if "sha256" in data else None


# Fitted parameters per law, for fit rows written before they recorded their residual degrees of freedom.
PARAMETERS = {"power": 2, "saturating": 3, "joint": 5}
TEST_NOTE = ("approximate Welch t test on the Wald standard errors, treating the two runs as independent "
             "(runs that share cells or data are not, so it can misjudge them)")


def _error(fit: dict) -> tuple[float, int] | None:
    """(standard error, residual degrees of freedom) of a fitted exponent, from its interval."""
    ci, level = fit.get("ci"), fit.get("confidence")
    dof, law = fit.get("dof"), str(fit.get("law")).split(" ")[-1]  # "fcd_excess power": a power law
    if dof is None and law in PARAMETERS and isinstance(fit.get("n"), int):
        dof = fit["n"] - PARAMETERS[law]
    if not ci or None in ci or level is None or dof is None or dof < 1:
        return None
    from scipy import stats  # not at module level: it would add a second to every CLI call

    return (ci[1] - ci[0]) / (2 * stats.t.ppf(0.5 + level / 2, dof)), dof


def welch(before: dict, after: dict, level: float) -> dict | None:
    """Welch's t test of the change between two fitted exponents, with Welch–Satterthwaite degrees of
    freedom; None when either fit lacks an interval to test with."""
    ea, eb = _error(before), _error(after)
    if ea is None or eb is None or not (ea[0] > 0 or eb[0] > 0):
        return None
    from scipy import stats

    (se_a, df_a), (se_b, df_b) = ea, eb
    var = se_a ** 2 + se_b ** 2
    df = var ** 2 / (se_a ** 4 / df_a + se_b ** 4 / df_b)
    t = (after["exponent"] - before["exponent"]) / math.sqrt(var)
    return {"t": t, "df": df, "significant": bool(abs(t) > stats.t.ppf(0.5 + level / 2, df))}


def exponent_changes(a: list[dict], b: list[dict], level: float) -> list[dict]:
    """Each fitted exponent in both runs, with an approximate test of the change (see TEST_NOTE)."""
    key = lambda f: (f["axis"], str(f["group"]), f["law"])  # noqa: E731
    before, after = {key(f): f for f in a}, {key(f): f for f in b}
    laws = {"before": {f["law"] for f in a}, "after": {f["law"] for f in b}}

    def absent(side: str, law: str) -> str:
        """Why one run has no fit that the other has."""
        if law in laws[side]:
            return "no such fit: the grid had no such group"
        if law.split()[0] not in TEST_ERRORS and " " in law:  # a fit of the sampled molecules' quality
            return (f"no such fit: this run fitted no {law} law (it sampled no molecules, having no generation "
                    "section, or was archived before chemspec fitted their quality)")
        return (f"no such fit: this run fitted no {law} law (not among its fit.laws, or archived before chemspec "
                "fitted it; `chemspec refit` fits the test errors of an older run)")
    rows = []
    for k in dict.fromkeys([*after, *before]):  # the fits' own order, as the cells
        fa, fb = before.get(k), after.get(k)
        row: dict = {"axis": k[0], "group": k[1], "law": k[2],
                     "before": fa and fa.get("exponent"), "ci_before": fa and fa.get("ci"),
                     "after": fb and fb.get("exponent"), "ci_after": fb and fb.get("ci"), "significant": None,
                     **{f"ci_profile_{side}": f["ci_profile"] for side, f in (("before", fa), ("after", fb))
                        if f and f.get("ci_profile")},
                     **{f"reason_{side}": f["reason"] if f else absent(side, k[2])
                        for side, f in (("before", fa), ("after", fb))
                        if not f or (f.get("exponent") is None and f.get("reason"))}}
        if row["before"] is not None and row["after"] is not None:
            row.update(welch(fa, fb, level) or {})
        rows.append(row)
    return rows


def _generation_changes(key: str, before: dict, after: dict) -> list[dict]:
    ga, gb = before.get("generation") or {}, after.get("generation") or {}
    return [{"cell": key, "metric": m, "before": ga.get(m), "after": gb.get(m)}
            for m in sorted(set(ga) | set(gb)) if ga.get(m) != gb.get(m)]


def _number(cell: dict, key: str) -> float | None:
    value = cell.get(key)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _cell_change(key: str, before: dict, after: dict) -> dict | None:
    """How one cell's status and validation loss changed, with its parameter count and the hyperparameters
    TPE chose where those changed too (the usual causes), and a force field's test errors where they
    changed; None when nothing did. A loss is null where the
    cell diverged or failed, so the change in loss is given only where both are numbers."""
    la, lb = _number(before, "val_loss"), _number(after, "val_loss")
    sa, sb = before.get("status", "ok"), after.get("status", "ok")
    causes = {f"{name}_{side}": cell.get(name) for name in ("params", "hparams")
              if before.get(name) != after.get(name) for side, cell in (("before", before), ("after", after))}
    errors = {f"{name}_{side}": _number(cell, name) for name, _ in TEST_ERRORS.values()
              if _number(before, name) != _number(after, name) for side, cell in (("before", before), ("after", after))}
    left_a, left_b = before.get("ranks_left_out", {}), after.get("ranks_left_out", {})
    left = {} if left_a == left_b else {"ranks_left_out_before": left_a, "ranks_left_out_after": left_b}
    if la == lb and sa == sb and not causes and not errors and not left:
        return None
    return {"cell": key, "status_before": sa, "status_after": sb, "val_loss_before": la, "val_loss_after": lb,
            "delta": lb - la if la is not None and lb is not None else None, **causes, **errors, **left}


def cell_changes(a: list[dict], b: list[dict], identities: tuple[dict, dict] = ({}, {})) -> dict:
    """Cells added, removed (with the status and loss of each, under `losses`) and changed between two runs;
    `identities`: each run's {stage: cell identity} (its manifest's `cells`; empty where the runs read other
    data or splits), with which a changed cell that the same stage trained in both runs with the same identity,
    hyperparameters and parameter count is marked `same_identity`: a result that did not reproduce."""
    key = lambda c: f"{c['model']}-{c['data_size']}"  # noqa: E731
    before, after = {key(c): c for c in a}, {key(c): c for c in b}
    # In the runs' own order (model size, then data size), not as text, where w16 sorts before w8.
    order = list(dict.fromkeys([*after, *before]))
    common = [k for k in order if k in before and k in after]
    changed = [change for k in common if (change := _cell_change(k, before[k], after[k])) is not None]
    for change in changed:
        was, now = before[change["cell"]], after[change["cell"]]
        stage = was.get("cell")
        if stage and stage == now.get("cell") and "hparams_before" not in change and "params_before" not in change \
                and identities[0].get(stage) is not None and identities[0].get(stage) == identities[1].get(stage):
            change["same_identity"] = True
    added, removed = [k for k in order if k not in before], [k for k in order if k not in after]
    generation = [change for k in common for change in _generation_changes(k, before[k], after[k])]
    return {"added": added, "removed": removed, "changed": changed,
            "losses": {k: {"status": cells[k].get("status", "ok"), "val_loss": _number(cells[k], "val_loss")}
                       for keys, cells in ((added, after), (removed, before)) for k in keys},
            "generation": generation, "generation_alike": _alike(generation, len(common))}


def _alike(changes: list[dict], cells: int) -> list[str]:
    """The metrics among `changes` that changed from one value to one value in each of the `cells` both runs
    have (more than one), as a study-wide value does (the FCD floor of the one reference set)."""
    by_metric: dict[str, list[dict]] = {}
    for change in changes:
        by_metric.setdefault(change["metric"], []).append(change)
    return [metric for metric, rows in by_metric.items()
            if cells > 1 and len(rows) == cells and len({(r["before"], r["after"]) for r in rows}) == 1]


def selection_changes(a: dict | None, b: dict | None) -> list[dict]:
    """The searches (`*`, or a model size under scope model_size) whose kept configurations, best first,
    differ between two selections; none where either run archived no selection. `unranked_<side>`: that
    side's grid held one configuration, which no TPE run ranked."""
    if not a or not b:
        return []
    before, after = a.get("kept", {}), b.get("kept", {})
    unranked = {f"unranked_{side}": bool(rows) and all(row.get("unranked") for row in rows)
                for side, rows in (("before", a.get("configs", [])), ("after", b.get("configs", [])))}
    return [{"group": group, "before": before.get(group), "after": after.get(group), **unranked}
            for group in dict.fromkeys([*after, *before]) if before.get(group) != after.get(group)]


def diff(rev_a: str, rev_b: str, study: str | None = None, cwd: str | Path = ".", earlier: str | None = None) -> dict:
    """The runs of `study` archived at two revisions; with `earlier`, the run at `rev_a` is that study's (a study
    renamed: the same model family on the same kind of data), named under `study_a`."""
    a, b = Snapshot(rev_a, cwd=cwd), Snapshot(rev_b, cwd=cwd)
    a.studies()  # a revision that is none says so before a study is picked from the other
    name = b.study(study)
    id_a, man_a = a.manifest(earlier or name)
    id_b, man_b = b.manifest(name)
    spec_a, spec_b = a.json(man_a["objects"]["spec"]), b.json(man_b["objects"]["spec"])
    kinds = [(spec.get("model", {}).get("family"), spec.get("data", {}).get("kind")) for spec in (spec_a, spec_b)]
    if earlier and kinds[0] != kinds[1]:
        said = " and ".join(f"{n!r} ({family} on {kind} data)" for n, (family, kind) in zip((earlier, name), kinds))
        raise UsageError(f"the two runs are of different studies, {said}; diff compares two runs of one study, or "
                         "of one renamed (the same model family on the same data kind)")
    fit_a, fit_b = a.json(man_a["objects"]["fit"]), b.json(man_b["objects"]["fit"])
    level = spec_b.get("fit", {}).get("confidence", 0.95)
    return {"study": name, "a": {"rev": rev_a, "manifest": id_a}, "b": {"rev": rev_b, "manifest": id_b},
            "spec": spec_changes(spec_a, spec_b),
            "data": data_changes(*(side.json(manifest["objects"]["data"]) if "data" in manifest["objects"] else None
                                   for side, manifest in ((a, man_a), (b, man_b)))),
            "cells": cell_changes(a.json(man_a["objects"]["cells"]), b.json(man_b["objects"]["cells"]),
                                  (man_a.get("cells", {}), man_b.get("cells", {}))
                                  if all(man_a["objects"].get(k) == man_b["objects"].get(k) for k in ("data", "split"))
                                  else ({}, {})),
            "selection": selection_changes(*(side.json(manifest["objects"]["selected"])
                                             if "selected" in manifest["objects"] else None
                                             for side, manifest in ((a, man_a), (b, man_b)))),
            "exponents": [*exponent_changes(fit_a["fits"], fit_b["fits"], level),
                          *exponent_changes(_metric_fits(fit_a), _metric_fits(fit_b), level)],
            "confidence": level, "test": TEST_NOTE, **({"study_a": earlier} if earlier else {})}


def _metric_fits(fit: dict) -> list[dict]:
    """A run's fits of other quantities than the loss (excess FCD, a force field's test errors), their law named
    with the metric apart from the loss's."""
    return [{**f, "law": f"{f['metric']} {f['law']}"} for f in [*(fit.get("generation") or []),
                                                                 *(fit.get("errors") or [])]]
