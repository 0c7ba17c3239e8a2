"""Geometry checks on structures read from a file: coincident atoms, and lengths read in the wrong unit
(atoms nearer than any bond, or hydrogens farther from every atom than any bond to hydrogen)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from chemspec.errors import RunError
from chemspec.runtime.atoms import HDF5_FORMATS, Frames


MIN_DISTANCE = 0.1
"""Å: atoms closer than this are a broken structure (the closest bonded pair, H2, is 0.74 Å apart); at 0
every model's forces are NaN (r̂ = r/|r|), and one such structure turns all parameters NaN in training."""


def closest_distances(positions: np.ndarray) -> np.ndarray:
    """The smallest interatomic distance of each frame of `positions` (n, N, 3); inf where N is 1."""
    n, atoms = positions.shape[:2]
    closest = np.full(n, np.inf)
    if atoms < 2:
        return closest
    chunk = max(1, (1 << 22) // (atoms * atoms))
    off_diagonal = ~np.eye(atoms, dtype=bool)
    for start in range(0, n, chunk):
        part = positions[start:start + chunk]
        with np.errstate(invalid="ignore"):  # inf − inf in a frame with infinite positions, dropped later
            distance = np.linalg.norm(part[:, :, None, :] - part[:, None, :, :], axis=-1)
        closest[start:start + chunk] = distance[:, off_diagonal].min(axis=1)
    return closest


SHORTEST_BOND = 0.6
"""Å: no real structure's closest atoms lie nearer than this in a typical frame (H2's bond is 0.74 Å); a
median below it means positions read in the wrong length unit (Å declared as bohr shrinks them to 0.53)."""


def typical_closest(blocks: Sequence[Frames], most: int = 10_000) -> float | None:
    """The median closest interatomic distance over (at most about `most`, evenly spaced) frames of
    `blocks`; None where no frame has two finite atoms."""
    frames = sum(len(block.positions) for block in blocks)
    stride = max(1, frames // most)
    closest = np.concatenate([closest_distances(block.positions[::stride]) for block in blocks] or [np.zeros(0)])
    closest = closest[np.isfinite(closest)]
    return float(np.median(closest)) if closest.size else None


LONGEST_H_BOND = 1.5
"""Å: in a typical frame of molecules a hydrogen atom whose nearest atom is B, C, N, O or F is bonded to it, at
most 1.33 Å away (diborane's bridge; C–H 1.09, O–H 0.96); a median above this means positions read in too
large a length unit (bohr read as Å puts C–H at 2.06 Å, O–H at 1.81 Å, F–H at 1.74 Å). Hydrogens nearest to
a metal or to another hydrogen are left out: a metal hydride's bond (K–H 2.24 Å) or a dissociating H2 may
be longer."""
BONDED_TO_H = (5, 6, 7, 8, 9)
"""B, C, N, O, F: the elements whose bonds to hydrogen LONGEST_H_BOND bounds."""


def typical_hydrogen_reach(blocks: Sequence[Frames], most: int = 10_000) -> float | None:
    """The median, over the hydrogen atoms of (at most about `most`, evenly spaced) frames of `blocks` whose
    nearest atom is one of BONDED_TO_H, of the distance to it; None where no frame holds such a hydrogen."""
    stride = max(1, sum(len(block.positions) for block in blocks) // most)
    reach = [np.zeros(0)]
    for block in blocks:
        hydrogens = np.flatnonzero(block.numbers == 1)
        if not hydrogens.size or len(block.numbers) < 2:
            continue
        positions = block.positions[::stride]
        chunk = max(1, (1 << 22) // (hydrogens.size * len(block.numbers)))
        for start in range(0, len(positions), chunk):
            part = positions[start:start + chunk]
            distance = np.linalg.norm(part[:, hydrogens, None, :] - part[:, None, :, :], axis=-1)
            distance[:, np.arange(hydrogens.size), hydrogens] = np.inf
            nearest = distance.argmin(axis=2)
            bonded = np.isin(block.numbers[nearest], BONDED_TO_H)
            reach.append(np.take_along_axis(distance, nearest[..., None], axis=2)[..., 0][bonded])
    reach = np.concatenate(reach)
    reach = reach[np.isfinite(reach)]
    return float(np.median(reach)) if reach.size else None


def first_coincident(blocks: Sequence[Frames]) -> tuple[int, float] | None:
    """(structure index over the blocks in order, its smallest distance) of the first structure whose atoms
    lie closer than MIN_DISTANCE; None if there is none."""
    seen = 0
    for block in blocks:
        closest = closest_distances(block.positions)
        if (close := np.flatnonzero(closest < MIN_DISTANCE)).size:
            return seen + int(close[0]), float(closest[close[0]])
        seen += len(closest)
    return None


def check_geometry(blocks: Sequence[Frames], path: Path, format: str, length_unit: str) -> None:
    """Refuse `blocks` (read from `path` in `format`, lengths converted from `length_unit` to Å) where a structure
    has coincident atoms or their typical distances are no molecule's."""
    if coincident := first_coincident(blocks):
        groups = ", groups sorted by name" if format in HDF5_FORMATS else ""
        every = np.flatnonzero(np.concatenate([closest_distances(block.positions) for block in blocks]) < MIN_DISTANCE)
        listed = ", ".join(map(str, every[1:6])) + (", ..." if every.size > 6 else "")
        others = f"; so have {every.size - 1} more ({listed})" if every.size > 1 else ""
        raise RunError(f"{format} file {path}: structure {coincident[0]} (counting from 0 in the order of the file"
                       f"{groups}) has two atoms {coincident[1]:.3g} Å apart, below {MIN_DISTANCE} Å{others}: "
                       "coincident atoms make every model's forces NaN; remove "
                       f"{'those structures' if others else 'that structure'} from the file")
    if (typical := typical_closest(blocks)) is not None and typical < SHORTEST_BOND:
        fix = (f"they are likely in Å: remove length from data.source.units (Å is the {format} default)"
               if length_unit == "bohr" else "check the file's positions and data.source.units")
        raise RunError(f"{format} file {path} read with lengths in {length_unit}: the closest atoms of a typical "
                       f"structure are {typical:.3g} Å apart, nearer than in any molecule (H2: 0.74 Å); {fix}")
    if (reach := typical_hydrogen_reach(blocks)) is not None and reach > LONGEST_H_BOND:
        fix = ("they are likely in bohr: set length: bohr under data.source.units" if length_unit == "Angstrom"
               else "check the file's positions and data.source.units")
        raise RunError(f"{format} file {path} read with lengths in {length_unit}: a typical hydrogen atom's nearest "
                       f"atom (B, C, N, O or F) is {reach:.3g} Å away, farther than any such bond (C–H 1.09 Å, "
                       f"O–H 0.96 Å); {fix}")
