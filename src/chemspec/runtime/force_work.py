"""Whether a file's forces agree with its energies: along a trajectory, the energy falls by the work the forces
do, ΔE = −∫F·dx. Consecutive frames a small step apart give that integral by the trapezoid rule, so the
ratio of the energy changes to the work names forces in another unit than the study reads them in, or
gradients written where forces belong."""

from __future__ import annotations

import numpy as np

from chemspec.runtime.atoms import ENERGY_UNITS, LENGTH_UNITS, AtomsData, force_factor

STEP = 0.05
"""Å: the largest move of any atom between two consecutive frames that count as one small step of a trajectory
(MD17's frames: 0.04 Å). The trapezoid rule's error grows with each atom's own step: a geometry optimiser's
0.2 Å moves of one hydrogen on a soft torsion, at 0.07 Å RMS over the molecule, gave ratios near 0.8."""
MIN_STEPS = 20
"""Steps needed before the ratio counts."""
MIN_CORRELATION = 0.9
"""|Pearson r| between energy changes and work needed before the ratio counts: frames that are not one
trajectory (conformers, shuffled samples) give a weak one, and no verdict."""
TOLERANCE = 0.15
"""How near the ratio must lie to what a misread unit or sign gives for the forces to count as misread."""
MAX_PAIRS = 20_000
"""Consecutive pairs looked at, from the start of the file: enough for a verdict, in temporary arrays of at
most a few hundred MB."""
FORCE_UNITS = [f"{energy}/{length}" for energy in ENERGY_UNITS for length in LENGTH_UNITS]


def work_ratio(data: AtomsData) -> tuple[float, int] | None:
    """(ΔE / work, steps): the least-squares ratio over the small steps between consecutive frames of the
    same atoms in the same order and electronic state; None where too few steps or too weak a correlation
    to tell."""
    sizes = data.sizes()
    same = sizes[:-1] == sizes[1:]
    for key in ("charge", "multiplicity"):
        same &= data.electronic(key)[:-1] == data.electronic(key)[1:]
    pairs = np.flatnonzero(same)[:MAX_PAIRS]
    if len(pairs) < MIN_STEPS:
        return None
    n = sizes[pairs]
    starts = np.cumsum(n) - n
    local = np.arange(int(n.sum())) - np.repeat(starts, n)
    first = np.repeat(data.offsets[pairs], n) + local
    second = np.repeat(data.offsets[pairs + 1], n) + local
    same_atoms = np.logical_and.reduceat(data.numbers[first] == data.numbers[second], starts)
    step = data.positions[second] - data.positions[first]
    largest = np.maximum.reduceat(np.sqrt(np.sum(step ** 2, axis=1)), starts)
    work = -0.5 * np.add.reduceat(np.sum((data.forces[first] + data.forces[second]) * step, axis=1), starts)
    change = data.energy[pairs + 1] - data.energy[pairs]
    small = same_atoms & (largest <= STEP) & (largest > 0)
    work, change = work[small], change[small]
    if len(work) < MIN_STEPS or not np.any(work) or not np.any(change):
        return None
    if abs(float(np.corrcoef(work, change)[0, 1])) < MIN_CORRELATION:
        return None
    return float(np.dot(work, change) / np.dot(work, work)), len(work)


def misread(ratio: float, force_unit: str) -> tuple[str, bool] | None:
    """(the unit the forces are in, whether they are gradients) that gives `ratio` for forces read in
    `force_unit`; None where the ratio is 1 or no unit and sign give it (then no misreading is shown). Units
    in `force_unit`'s energy come first, then those per its length."""
    energy, _, length = force_unit.rpartition("/")
    if abs(ratio - 1) <= TOLERANCE:
        return None
    ordered = sorted(FORCE_UNITS, key=lambda unit: (not unit.startswith(f"{energy}/"), not unit.endswith(f"/{length}")))
    now = force_factor(force_unit)
    fits = [unit for unit in ordered if abs(force_factor(unit) / now / abs(ratio) - 1) <= TOLERANCE]
    return (fits[0], ratio < 0) if fits else None
