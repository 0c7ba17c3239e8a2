"""Whether a file's forces agree with its energies: along a trajectory, the energy falls by the work the forces
do, ΔE = −∫F·dx. Consecutive frames a small step apart give that integral by the trapezoid rule, so the
ratio of the energy changes to the work names forces in another unit than the study reads them in, or
gradients written where forces belong."""

from __future__ import annotations

from typing import get_args

import numpy as np

from chemspec.runtime.atoms import AtomsData, force_factor
from chemspec.specs.atoms_source import ForceUnit

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
MAX_ATOMS = 1_000_000
"""Atoms of the consecutive pairs looked at, from the start of the file: 100,000 pairs of 10-atom molecules,
enough for a verdict, in temporary arrays of about 200 MB."""


def work_ratio(data: AtomsData) -> tuple[float, int] | None:
    """(ΔE / work, steps): the least-squares ratio over the small steps between consecutive frames of the
    same atoms in the same order and electronic state; None where too few steps or too weak a correlation
    to tell."""
    sizes = data.sizes()
    same = sizes[:-1] == sizes[1:]
    for key in ("charge", "multiplicity"):
        same &= data.electronic(key)[:-1] == data.electronic(key)[1:]
    pairs = np.flatnonzero(same)
    pairs = pairs[np.cumsum(sizes[pairs]) <= MAX_ATOMS]
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
    if len(work) < MIN_STEPS or np.ptp(work) == 0 or np.ptp(change) == 0:  # no correlation to measure
        return None
    ratio = float(np.dot(work, change) / np.dot(work, work))
    if not abs(float(np.corrcoef(work, change)[0, 1])) >= MIN_CORRELATION or not np.isfinite(ratio) or ratio == 0:
        return None
    return ratio, len(work)


def misread(ratio: float, force_unit: str) -> tuple[str, bool] | None:
    """(the unit the forces are in, whether they are gradients) that gives `ratio` for forces read in
    `force_unit`; None where the ratio is 1 or no unit and sign give it (then no misreading is shown). No two
    units lie within twice TOLERANCE of each other, so at most one fits."""
    if abs(ratio - 1) <= TOLERANCE:
        return None
    now = force_factor(force_unit)
    fits = [unit for unit in get_args(ForceUnit) if abs(force_factor(unit) / now / abs(ratio) - 1) <= TOLERANCE]
    return (fits[0], ratio < 0) if fits else None
