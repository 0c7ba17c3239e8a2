"""Generation quality as a second scaling axis: per-cell metrics joined to the cells table and fitted.

Only FCD is fitted (per model size against data size, per data size against parameters): it is a
distance that falls as the model's distribution approaches the data's, but not towards 0. At n
molecules FCD is biased upward (roughly as 1/n), so even the data distribution itself scores a floor
above 0; a plain power law through FCD would flatten towards that floor and understate the exponent.
The reference stage measures the floor (the FCD of n real molecules from outside the test set, n the
count every cell is scored on), and the fit is a power law of the excess, FCD − floor = a·x^−α.
That is the saturating law L = E + a·x^−α with E measured rather than fitted, chosen over fitting E:
a measured floor costs no parameter, so three sizes per axis give an exponent with an interval, and a
fitted E would trade off against α on grids this small. A cell at or below the floor (within its
noise) has no measurable excess; its group says "cannot fit" and why, rather than dropping the cell.
Validity, uniqueness, novelty and diversity are shares bounded by 1, where a power law has no meaning;
they are tabulated and plotted, not fitted.
"""

from __future__ import annotations

from pathlib import Path

from chemspec.errors import RunError
from chemspec.runtime.io import read_json

METRICS = ("validity", "trivial", "uniqueness", "novelty", "internal_diversity", "fcd")
PROPERTIES = ("logp", "qed", "mw")
COLUMNS = METRICS + tuple(f"w_{name}" for name in PROPERTIES)
"""The per-cell `generation` entry: the metrics and the property distances (and FCD's floor and count)."""
LABELS = {"validity": "validity", "trivial": "empty or 1 atom", "uniqueness": "uniqueness", "novelty": "novelty",
          "internal_diversity": "internal diversity", "fcd": "FCD", "w_logp": "W₁ logP", "w_qed": "W₁ QED",
          "w_mw": "W₁ MW"}
"""What the report pages call each of COLUMNS."""
SHORT_LABELS = {"validity": "valid", "trivial": "≤1 atom", "uniqueness": "unique", "novelty": "novel",
                "internal_diversity": "IntDiv", "fcd": "FCD"}
"""What the terminal's columns of nine characters call each of METRICS."""


def attach(rows: list[dict], paths: dict[str, str]) -> list[dict]:
    """Each row with a `generation` entry from its train cell's generation.json (rows without samples: none)."""
    if not paths:
        return rows
    joined = []
    for row in rows:
        key = row["cell"].split("@", 1)[1]
        path = paths.get(key)
        if path is None or not Path(path).is_file():
            raise RunError(f"fit: {path or key} is missing; run `dvc repro` so that sample@{key} runs first")
        found = read_json(path)
        entry = None
        if found.get("status") == "ok":
            found = read_json(path, ("fcd_molecules", "fcd_floor"))
            entry = {k: found[k] for k in METRICS} | {
                f"w_{name}": (found["wasserstein"] or {}).get(name) for name in PROPERTIES} | {
                "fcd_molecules": found["fcd_molecules"], "fcd_floor": (found["fcd_floor"] or {}).get("value"),
                "fcd_floor_std": (found["fcd_floor"] or {}).get("std")} | (
                {"unfinished": found["unfinished"], "samples": found["samples"]} if "unfinished" in found else {})
        joined.append({**row, "generation": entry})
    return joined


def excess_fit(x: list[float], fcd: list[float], floor: float, molecules: int, confidence: float,
               spread: float | None = None) -> dict:
    """The power law of FCD − floor against x, labelled with the floor it is the excess over; `spread`: the
    standard deviation of the floor's draws, within which a cell has no measurable excess."""
    from chemspec.runtime.fit import power_law

    excess = [value - floor for value in fcd]
    label = {"quantity": f"excess FCD over the {molecules}-sample floor of {floor:.3g}", "floor": floor,
             "molecules": molecules, "fcd": list(fcd)}
    at_floor = [round(value, 3) for value in fcd if value <= floor + (spread or 0.0)]
    if at_floor:
        where = "at or below the floor" if spread is None else "within the floor's noise"
        return {"law": "power", "n": len(x), "x": list(x), "y": excess, **label, "status": "cannot fit",
                "reason": f"FCD {at_floor} {where} ({floor:.3g}{'' if spread is None else f' ± {spread:.2g}'}): "
                          f"no excess to fit at {molecules} molecules; raise generation.fcd_molecules to resolve it"}
    fit = power_law(x, excess, confidence)
    if fit["status"] == "ok":
        fit["note"] = "FCD − floor = a·x^−α, the floor measured, not fitted: OLS slope of log excess on log x"
    return {**fit, **label}


def fits(rows: list[dict], confidence: float) -> list[dict]:
    """Power laws of excess FCD against data size (per model) and parameters (per data size)."""
    from chemspec.runtime.fit import axis_groups

    usable = [r for r in rows if r["status"] == "ok" and r.get("generation") and r["generation"]["fcd"] is not None
              and r["generation"]["fcd_floor"] is not None]
    floors = {(r["generation"]["fcd_floor"], r["generation"]["fcd_molecules"]) for r in usable}
    if len(floors) > 1:
        raise RunError(f"fit: the sample cells were scored against different FCD floors {sorted(floors)}; "
                       "run `dvc repro` so that every sample stage reads the same reference")
    if not floors:
        return []
    (floor, molecules), = floors
    spread = usable[0]["generation"].get("fcd_floor_std")  # one reference: one floor and one spread
    short = [r for r in rows if r["status"] == "ok" and r.get("generation") and r["generation"]["fcd"] is None]

    def left_out(axis: str, group: str) -> list[str]:
        """Cells of this group scored on too few valid molecules: a fit of the rest favours the better cells."""
        return [r["cell"].split("@", 1)[1] for r in short
                if (r["model"] if axis == "data" else str(r["data_size"])) == group]
    return [{"metric": "fcd_excess", "axis": axis, "group": group,
             **excess_fit(x, y, floor, molecules, confidence, spread), "left_out": left_out(axis, group)}
            for axis, group, x, y in axis_groups(usable, lambda r: r["generation"]["fcd"])]


def exponents(results: list[dict]) -> dict[str, float]:
    return {f"{f['metric']}.power.{f['axis']}.{f['group']}": f["exponent"] for f in results if f["status"] == "ok"}
