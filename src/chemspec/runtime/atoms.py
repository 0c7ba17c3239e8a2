"""The atoms data layer: force-field files in public formats in, one canonical store out.

Every loader converts to eV and Å and yields the same `AtomsData` (all atoms concatenated, one
offsets array), so splitting, reference energies and training never see a file format. Rows with
non-finite energies, forces or positions are dropped and counted, never silently. A file whose keys
or shapes do not fit its format is a `RunError` naming the file and the key.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ase import units

from chemspec.errors import RunError
from chemspec.runtime.io import read_npz, write_bytes

ENERGY_UNITS = {"eV": 1.0, "kcal/mol": units.kcal / units.mol, "kJ/mol": units.kJ / units.mol,
                "Hartree": units.Hartree}
LENGTH_UNITS = {"Angstrom": 1.0, "bohr": units.Bohr}


def force_factor(unit: str) -> float:
    """eV/Å per unit of a force unit 'energy/length' ('Hartree/bohr', 'kcal/mol/Angstrom')."""
    energy, _, length = unit.rpartition("/")
    return ENERGY_UNITS[energy] / LENGTH_UNITS[length]


FORMATS = ("md17", "rmd17", "ani1x", "ani2x", "extxyz", "asedb")
HDF5_FORMATS = ("ani1x", "ani2x")
"""Formats read from HDF5 groups (runtime.atoms_hdf5): ANI-1x's release, a group a formula; torchani's,
a group an atom count."""
KEYS = ("numbers", "positions", "forces", "energy", "offsets")
STORED = ("<u1", "<f4", "<f4", "<f8", "<i8")
"""On-disk dtypes of KEYS: coordinates and forces in float32, the precision models train in (half the
bytes of float64; 1e-7 relative), energies in float64, since totals of ~1e3 eV need it."""
FLOAT32_MAX = float(np.finfo(np.float32).max)
"""Coordinates and forces beyond it would be stored as infinities: such frames are dropped as non-finite."""
ELECTRONIC = ("charge", "multiplicity")
"""Per-structure total charge (e) and spin multiplicity 2S+1, stored (int8) only where some structure is not
a neutral singlet, so that stores and hashes of neutral data stay as they were before these keys."""
NEUTRAL_SINGLET = {"charge": 0, "multiplicity": 1}
ELECTRONIC_LIMIT = 127
"""The int8 store's bound on a charge or multiplicity; molecules stay far within it."""


@dataclass(frozen=True, eq=False)
class AtomsData:
    """Structures with energies (eV) and forces (eV/Å); structure s owns atoms offsets[s]:offsets[s+1]."""

    numbers: np.ndarray
    positions: np.ndarray
    forces: np.ndarray
    energy: np.ndarray
    offsets: np.ndarray
    charge: np.ndarray | None = None
    """Total charge of each structure in e; None: all neutral."""
    multiplicity: np.ndarray | None = None
    """Spin multiplicity 2S+1 of each structure; None: all singlets."""

    def __post_init__(self) -> None:
        for key, dtype in zip(KEYS, ("<i8", "<f8", "<f8", "<f8", "<i8")):
            object.__setattr__(self, key, np.ascontiguousarray(getattr(self, key), dtype=dtype))
        for key in ELECTRONIC:
            value = getattr(self, key)
            if value is not None:
                whole = np.ascontiguousarray(value, dtype="<i8")
                if whole.shape != self.energy.shape:
                    raise ValueError(f"{key} must have one entry per structure, {self.energy.shape}, got {whole.shape}")
                if np.any(whole != value) or np.any(np.abs(whole) > ELECTRONIC_LIMIT):
                    raise ValueError(f"{key} must be whole numbers within ±{ELECTRONIC_LIMIT}")
                value = None if np.all(whole == NEUTRAL_SINGLET[key]) else whole
            object.__setattr__(self, key, value)
        atoms, structures = len(self.numbers), len(self.energy)
        if self.numbers.ndim != 1 or self.energy.ndim != 1:
            raise ValueError("numbers and energy must be one-dimensional")
        if self.positions.shape != (atoms, 3) or self.forces.shape != (atoms, 3):
            raise ValueError(f"positions {self.positions.shape} and forces {self.forces.shape} must be ({atoms}, 3)")
        if self.offsets.shape != (structures + 1,) or self.offsets[0] != 0 or self.offsets[-1] != atoms:
            raise ValueError(f"offsets must have {structures + 1} entries from 0 to {atoms}")
        if np.any(np.diff(self.offsets) <= 0):
            raise ValueError("offsets must be strictly increasing: every structure needs an atom")
        if self.multiplicity is not None and np.any(self.multiplicity < 1):
            raise ValueError("multiplicity (2S+1) must be at least 1")

    def __len__(self) -> int:
        return len(self.energy)

    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def electronic(self, key: str) -> np.ndarray:
        """`charge` or `multiplicity` of every structure, the neutral singlet's value where none is stored."""
        value = getattr(self, key)
        return np.full(len(self), NEUTRAL_SINGLET[key], dtype=np.int64) if value is None else value

    def neutral_singlets(self) -> bool:
        """Whether every structure is a neutral singlet (then neither array is stored)."""
        return self.charge is None and self.multiplicity is None

    def states(self) -> Counter[tuple[int, int]]:
        """How many structures have each (charge, multiplicity)."""
        if self.neutral_singlets():
            return Counter({(0, 1): len(self)})
        return Counter(zip(self.electronic("charge").tolist(), self.electronic("multiplicity").tolist()))

    def repeats(self) -> list[tuple[int, int]]:
        """(structure, the first structure it repeats) for every exact repeat: the same atoms in the same order
        at the same positions, with the same charge and multiplicity; in order of the repeats."""
        pairs, sizes = [], self.sizes()
        # As bytes: one an atomic number or state, four a coordinate (as stored).
        numbers, positions = self.numbers.astype(np.uint8), self.positions.astype("<f4").view(np.uint8)
        electronic = np.stack([self.electronic(key).astype("<i1") for key in ELECTRONIC], axis=1).view(np.uint8)
        for n in np.unique(sizes):
            idx = np.flatnonzero(sizes == n)
            atoms = (self.offsets[idx][:, None] + np.arange(n)).reshape(-1)
            rows = np.ascontiguousarray(np.concatenate([numbers[atoms].reshape(-1, n),
                                                        positions[atoms].reshape(-1, 12 * n), electronic[idx]], axis=1))
            _, first, inverse = np.unique(rows.view(np.dtype((np.void, rows.strides[0]))).ravel(), return_index=True,
                                          return_inverse=True)
            original = first[inverse.reshape(-1)]
            pairs += [(int(idx[i]), int(idx[original[i]])) for i in np.flatnonzero(original != np.arange(len(idx)))]
        return sorted(pairs)

    def structure(self, s: int) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        start, stop = self.offsets[s], self.offsets[s + 1]
        return self.numbers[start:stop], self.positions[start:stop], float(self.energy[s]), self.forces[start:stop]

    def subset(self, indices: Sequence[int] | np.ndarray) -> AtomsData:
        """The structures at `indices`, in that order."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        sizes = self.sizes()[idx]
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        atoms = np.repeat(self.offsets[idx] - offsets[:-1], sizes) + np.arange(offsets[-1])
        return AtomsData(self.numbers[atoms], self.positions[atoms], self.forces[atoms], self.energy[idx], offsets,
                         *(None if getattr(self, key) is None else getattr(self, key)[idx] for key in ELECTRONIC))

    def arrays(self) -> dict[str, np.ndarray]:
        """The store's arrays by key: KEYS in their STORED dtypes, then the ELECTRONIC ones that are set."""
        arrays = {key: getattr(self, key).astype(dtype) for key, dtype in zip(KEYS, STORED)}
        return arrays | {key: getattr(self, key).astype("<i1") for key in ELECTRONIC if getattr(self, key) is not None}

    def stored(self) -> AtomsData:
        """These structures as the store holds them (coordinates and forces rounded to float32)."""
        return AtomsData(**self.arrays())


def save_atoms(path: str | Path, data: AtomsData) -> None:
    """One uncompressed .npz in the fixed key order and dtypes of KEYS and STORED: equal data give equal bytes."""
    buffer = io.BytesIO()
    np.savez(buffer, **data.arrays())
    write_bytes(path, buffer.getvalue())


def load_atoms(path: str | Path) -> AtomsData:
    stored = read_npz(path, KEYS)  # the data stage's output: a damaged one is restored, not re-downloaded
    try:
        return AtomsData(**{key: stored[key] for key in (*KEYS, *ELECTRONIC) if key in stored})
    except ValueError as exc:
        raise RunError(f"atoms store {path} is inconsistent ({exc}); delete it and rerun the data stage") from None


def content_hash(data: AtomsData) -> str:
    """sha256 over each array's name, shape and little-endian bytes, in the order of KEYS and then of the
    ELECTRONIC keys that are set."""
    digest = hashlib.sha256()
    for key in (*KEYS, *(key for key in ELECTRONIC if getattr(data, key) is not None)):
        array = getattr(data, key)
        digest.update(f"{key}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class Frames(NamedTuple):
    """Frames sharing one atom list, total charge and multiplicity: numbers (N,), positions (n,N,3), energy
    (n,), forces (n,N,3)."""

    numbers: np.ndarray
    positions: np.ndarray
    energy: np.ndarray
    forces: np.ndarray
    charge: int = 0
    multiplicity: int = 1


def finite_frames(block: Frames) -> np.ndarray:
    """Which frames of `block` have a finite energy and coordinates and forces the float32 store keeps finite."""
    return (np.isfinite(block.energy) & (np.abs(block.forces) <= FLOAT32_MAX).all(axis=(1, 2))
            & (np.abs(block.positions) <= FLOAT32_MAX).all(axis=(1, 2)))


def from_frames(blocks: Sequence[Frames]) -> tuple[AtomsData, int]:
    """The canonical store of frame blocks already in eV and Å, and how many non-finite frames it dropped."""
    numbers, positions, forces = [np.zeros(0, np.int64)], [np.zeros((0, 3))], [np.zeros((0, 3))]
    energy, sizes, dropped = [np.zeros(0)], [np.zeros(0, np.int64)], 0
    electronic = {key: [np.zeros(0, np.int64)] for key in ELECTRONIC}
    for block in blocks:
        finite = finite_frames(block)
        dropped += int((~finite).sum())
        n, count = int(finite.sum()), len(block.numbers)
        numbers.append(np.tile(block.numbers, n))
        positions.append(block.positions[finite].reshape(-1, 3))
        forces.append(block.forces[finite].reshape(-1, 3))
        energy.append(block.energy[finite])
        sizes.append(np.full(n, count, dtype=np.int64))
        for key in ELECTRONIC:
            electronic[key].append(np.full(n, getattr(block, key), dtype=np.int64))
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(sizes))])
    data = AtomsData(np.concatenate(numbers), np.concatenate(positions), np.concatenate(forces),
                     np.concatenate(energy), offsets, *(np.concatenate(electronic[key]) for key in ELECTRONIC))
    return data, dropped


def fit_reference_energies(data: AtomsData, indices: Sequence[int] | np.ndarray) -> dict[int, float]:
    """Per-element energies e_Z minimising Σ_s (E_s − Σ_Z n_sZ e_Z)² over the structures at `indices`.

    Fit on training structures only, so validation and test energies do not leak into the targets.
    Where element counts are collinear (e.g. one molecule, as in MD17) lstsq returns the minimum-norm
    solution, which still removes the mean energy."""
    train = data.subset(indices)
    if len(train) == 0:
        raise RunError("reference energies need at least one training structure; raise data.sizes")
    elements = np.unique(train.numbers)
    matrix = element_counts(train.numbers, train.offsets, elements)
    solution, *_ = np.linalg.lstsq(matrix, train.energy, rcond=None)
    return {int(z): float(e) for z, e in zip(elements, solution)}


UNTRAINED = "occur in no training structure: a model never sees them, and no reference energy is fitted for them"
"""Why elements absent from the training split are refused: their per-element reference energy would be
zero, off by the element's atomic energy (13.6 eV for H, ~1000 eV for C) per atom."""


def untrained_elements(data: AtomsData, trained: Iterable[int]) -> list[int]:
    """The elements of `data` outside `trained`, sorted."""
    return sorted(set(np.unique(np.asarray(data.numbers)).tolist()) - set(trained))


def element_counts(numbers: np.ndarray, offsets: np.ndarray, elements: np.ndarray) -> np.ndarray:
    """counts[s, j]: atoms of element elements[j] in structure s of a table's `numbers` and `offsets`;
    elements must be sorted."""
    sizes = np.diff(offsets)
    owner = np.repeat(np.arange(len(sizes)), sizes)
    counts = np.zeros((len(sizes), len(elements)))
    np.add.at(counts, (owner, np.searchsorted(elements, numbers)), 1.0)
    return counts
