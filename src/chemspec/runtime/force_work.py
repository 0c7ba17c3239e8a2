"""Whether a file's forces agree with its energies: along a trajectory, the energy falls by the work the forces
do, ΔE = −∫F·dx. Consecutive frames a small step apart give that integral by the trapezoid rule, so the
ratio of the energy changes to the work names forces in another unit than the study reads them in, or
gradients written where forces belong."""

from __future__ import annotations

import numpy as np

from chemspec.runtime.atoms import ENERGY_UNITS, LENGTH_UNITS, AtomsData

STEP = 0.1
"""Å: the RMS displacement below which two consecutive frames count as one small step of a trajectory (MD17
frames are 0.015 Å apart; at 0.1 Å the trapezoid rule's error in the ratio is about 1%)."""
MIN_STEPS = 20
"""Steps needed before the ratio counts."""
MIN_CORRELATION = 0.9
"""|Pearson r| between energy changes and work needed before the ratio counts: frames that are not one
trajectory (conformers, shuffled samples) give a weak one, and no verdict."""
TOLERANCE = 0.15
"""How far the ratio may lie from 1 with the forces in the unit they are read in."""
MAX_PAIRS = 100_000
"""Consecutive pairs looked at, from the start of the file: enough for a verdict, and bounded memory."""


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
    local = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    first = np.repeat(data.offsets[pairs], n) + local
    second = np.repeat(data.offsets[pairs + 1], n) + local
    starts = np.cumsum(n) - n
    same_atoms = np.logical_and.reduceat(data.numbers[first] == data.numbers[second], starts)
    step = data.positions[second] - data.positions[first]
    rms = np.sqrt(np.add.reduceat(np.sum(step ** 2, axis=1), starts) / n)
    work = -0.5 * np.add.reduceat(np.sum((data.forces[first] + data.forces[second]) * step, axis=1), starts)
    change = data.energy[pairs + 1] - data.energy[pairs]
    small = same_atoms & (rms <= STEP) & (rms > 0)
    work, change = work[small], change[small]
    if len(work) < MIN_STEPS or not np.any(work) or not np.any(change):
        return None
    if abs(float(np.corrcoef(work, change)[0, 1])) < MIN_CORRELATION:
        return None
    return float(np.dot(work, change) / np.dot(work, work)), len(work)


def likely_force_unit(ratio: float, energy_unit: str, force_unit: str) -> str | None:
    """The force unit that makes the ratio 1, for forces now read in `force_unit`; None if none within
    TOLERANCE (energies per `energy_unit` first, the file's energy unit)."""
    now = _factor(force_unit)
    units = [f"{e}/{l}" for e in dict.fromkeys([energy_unit, *ENERGY_UNITS]) for l in LENGTH_UNITS]
    fits = [unit for unit in units if abs(_factor(unit) / now / ratio - 1) <= TOLERANCE and unit != force_unit]
    return fits[0] if fits else None


def _factor(unit: str) -> float:
    energy, _, length = unit.rpartition("/")
    return ENERGY_UNITS[energy] / LENGTH_UNITS[length]
