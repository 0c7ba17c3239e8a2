"""Generation quality as a second scaling axis: per-cell metrics joined to the cells table and fitted.

Only FCD is fitted with a power law (per model size against data size, per data size against
parameters): it is a distance that falls towards 0 as the model's distribution approaches the data's.
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
"""The per-cell `generation` entry: the metrics and the property distances."""


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
            entry = {k: found[k] for k in METRICS} | {
                f"w_{name}": (found["wasserstein"] or {}).get(name) for name in PROPERTIES}
        joined.append({**row, "generation": entry})
    return joined


def fits(rows: list[dict], confidence: float) -> list[dict]:
    """Power laws of FCD against data size (per model) and parameters (per data size)."""
    from chemspec.runtime.fit import axis_groups, power_law

    usable = [r for r in rows if r["status"] == "ok" and r.get("generation") and r["generation"]["fcd"] is not None]
    return [{"metric": "fcd", "axis": axis, "group": group, **power_law(x, y, confidence)}
            for axis, group, x, y in axis_groups(usable, lambda r: r["generation"]["fcd"])]


def exponents(results: list[dict]) -> dict[str, float]:
    return {f"{f['metric']}.power.{f['axis']}.{f['group']}": f["exponent"] for f in results if f["status"] == "ok"}
