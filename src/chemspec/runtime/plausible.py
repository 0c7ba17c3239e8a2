"""Whether a force-field file's energies and forces are plausible in the units they were read in, and which units
would make them so: bounds that no molecule passes, and, for files of all-electron totals, one that every
molecule's total energy passes."""

from __future__ import annotations

from itertools import product
from typing import NamedTuple

import numpy as np
from ase import units

from chemspec.runtime.atoms import ENERGY_UNITS, LENGTH_UNITS, AtomsData, force_factor

FORCE_RMS_LIMIT = 10.0
"""eV/Å: forces of molecules, even from 1000 K MD, are a few eV/Å RMS; a file in kcal/mol read as eV gives
23 times its forces (rMD17 ethanol: 27.8)."""
THOMAS_FERMI = 0.7687 * units.Hartree
"""eV: the Thomas-Fermi energy of a neutral atom is −THOMAS_FERMI·Z^(7/3), beyond its true total energy
(1.3 times carbon's), so no structure's energy in eV goes beyond the sum over its atoms."""
HYDROGENIC = 0.5 * units.Hartree
"""eV: removing an atom's last electron costs HYDROGENIC·Z² and every other ionisation costs more than
nothing, so an atom's all-electron total energy lies below −HYDROGENIC·Z²; a bound molecule's lies below
its atoms' sum (ethanol: 2.2 times it; H₂: 1.17)."""
TOTAL_ENERGY_FORMATS = ("md17", "rmd17", "ani1x", "ani2x")
"""Formats whose energies are all-electron totals by definition, so too small an energy shows a wrong unit
too; extended XYZ and ASE databases may hold relative or atomisation energies."""
FORCE_UNITS = tuple(f"{energy}/{length}" for energy, length in product(ENERGY_UNITS, LENGTH_UNITS))


class Implausible(NamedTuple):
    """What is implausible, in words, and the units that make the file plausible: `energy` and `force` (None
    where that unit may stay as it is, or where no unit chemspec knows fits: `unknown` names those). Where the
    forces are plausible as read and also in the new energy unit, `force` is None and `forces_rms` their RMS
    (eV/Å) as read and in that unit: the file alone cannot tell which unit they are in."""
    problem: str
    energy: str | None
    force: str | None
    unknown: tuple[str, ...]
    forces_rms: tuple[float, float] | None = None


def _per_structure(data: AtomsData, per_atom: np.ndarray) -> np.ndarray:
    return np.add.reduceat(per_atom, np.asarray(data.offsets)[:-1]) if len(data) else np.zeros(0)


def implausible_units(data: AtomsData, energy_unit: str, totals: bool = False, typical: bool = False,
                      length_unit: str = "Angstrom", force_unit: str | None = None) -> Implausible | None:
    """Why `data`, read with energies in `energy_unit` and forces in `force_unit` (None: `energy_unit` per
    `length_unit`), look written in other units, and the likely ones; None when they are plausible. With
    `totals` (the file holds all-electron total energies), an energy short of the HYDROGENIC bound counts too.
    With `typical`, the forces are the median structure's RMS, which a few outlying structures do not move.
    Where the forces follow the energy unit, one energy unit that fits both is preferred."""
    if typical:
        squares = _per_structure(data, np.sum(data.forces ** 2, axis=1)) / (3 * data.sizes())
        rms = float(np.sqrt(np.median(squares)))
    else:
        rms = float(np.sqrt(np.mean(data.forces ** 2)))
    z = np.asarray(data.numbers, dtype=np.float64)
    magnitude = np.abs(data.energy)
    ratio = float(np.median(magnitude / _per_structure(data, THOMAS_FERMI * z ** (7 / 3))))
    floor = float(np.median(magnitude / _per_structure(data, HYDROGENIC * z ** 2))) if totals else np.inf

    def forces_fit(scale: float) -> bool:
        return rms * scale <= FORCE_RMS_LIMIT

    def energies_fit(scale: float) -> bool:
        return ratio * scale <= 1 and floor * scale >= 1

    if forces_fit(1.0) and energies_fit(1.0):
        return None
    read_as = force_unit or f"{energy_unit}/{length_unit}"
    energy_scales = {unit: ENERGY_UNITS[unit] / ENERGY_UNITS[energy_unit] for unit in ENERGY_UNITS
                     if unit != energy_unit}
    force_scales = {unit: force_factor(unit) / force_factor(read_as) for unit in FORCE_UNITS
                    if force_factor(unit) != force_factor(read_as)}
    energy = force = None
    unknown: tuple[str, ...] = ()
    joint = [unit for unit, scale in energy_scales.items() if forces_fit(scale) and energies_fit(scale)]
    forces_rms = None
    if force_unit is None and joint:
        energy = min(joint, key=lambda unit: abs(np.log(rms * energy_scales[unit])) if rms > 0 else
                     -ratio * energy_scales[unit])
        forces_rms = (rms, rms * energy_scales[energy]) if forces_fit(1.0) else None
    else:
        if not energies_fit(1.0):
            energy = max((unit for unit, scale in energy_scales.items() if energies_fit(scale)),
                         key=lambda unit: ratio * energy_scales[unit], default=None)
        if not forces_fit(1.0):
            force = min((unit for unit, scale in force_scales.items() if forces_fit(scale)),
                        key=lambda unit: abs(np.log(rms * force_scales[unit])), default=None)
        elif energy is not None and force_unit is None:
            force = read_as  # kept as read: left out, the forces would follow the new energy unit
        unknown = tuple(name for name, fits, fix in (("energies", energies_fit(1.0), energy),
                                                     ("forces", forces_fit(1.0), force)) if not fits and fix is None)
    parts = []
    if not forces_fit(1.0):
        where = " in the median structure" if typical else ""
        parts.append(f"forces of {rms:.3g} eV/Å RMS{where} (a molecule's are a few)")
    if not energies_fit(1.0):
        per_atom = float(np.mean(data.energy / data.sizes()))
        bound = (f"{ratio:.2g} times the Thomas-Fermi energy of their atoms, which bounds a total energy" if ratio > 1
                 else f"{floor:.2g} times the sum of Z²/2 Hartree over their atoms, which an all-electron total "
                      "energy exceeds")
        parts.append(f"energies of {per_atom:.6g} eV per atom ({bound})")
    return Implausible(" and ".join(parts), energy, force, unknown, forces_rms)
