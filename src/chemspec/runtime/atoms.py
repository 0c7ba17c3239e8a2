"""The atoms data layer: force-field files in public formats in, one canonical store out.

Every loader converts to eV and Å and yields the same `AtomsData` (all atoms concatenated, one
offsets array), so splitting, reference energies and training never see a file format. Rows with
non-finite energies, forces or positions are dropped and counted, never silently. A file whose keys
or shapes do not fit its format is a `RunError` naming the file and the key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from ase import units
from numpy.typing import ArrayLike

from chemspec.errors import RunError
from chemspec.runtime.io import write_bytes
from chemspec.specs.data import ANI_LEVEL, ani_forces_key

if TYPE_CHECKING:
    from ase import Atoms

ENERGY_UNITS = {"eV": 1.0, "kcal/mol": units.kcal / units.mol, "kJ/mol": units.kJ / units.mol,
                "Hartree": units.Hartree}
LENGTH_UNITS = {"Angstrom": 1.0, "bohr": units.Bohr}
FORMATS = ("md17", "rmd17", "ani1x", "extxyz", "asedb")
KEYS = ("numbers", "positions", "forces", "energy", "offsets")
STORED = ("<u1", "<f4", "<f4", "<f8", "<i8")
"""On-disk dtypes of KEYS: coordinates and forces in float32, the precision models train in (half the
bytes of float64; 1e-7 relative), energies in float64, since totals of ~1e3 eV need it."""


@dataclass(frozen=True, eq=False)
class AtomsData:
    """Structures with energies (eV) and forces (eV/Å); structure s owns atoms offsets[s]:offsets[s+1]."""

    numbers: np.ndarray
    positions: np.ndarray
    forces: np.ndarray
    energy: np.ndarray
    offsets: np.ndarray

    def __post_init__(self) -> None:
        for key, dtype in zip(KEYS, ("<i8", "<f8", "<f8", "<f8", "<i8")):
            object.__setattr__(self, key, np.ascontiguousarray(getattr(self, key), dtype=dtype))
        atoms, structures = len(self.numbers), len(self.energy)
        if self.numbers.ndim != 1 or self.energy.ndim != 1:
            raise ValueError("numbers and energy must be one-dimensional")
        if self.positions.shape != (atoms, 3) or self.forces.shape != (atoms, 3):
            raise ValueError(f"positions {self.positions.shape} and forces {self.forces.shape} must be ({atoms}, 3)")
        if self.offsets.shape != (structures + 1,) or self.offsets[0] != 0 or self.offsets[-1] != atoms:
            raise ValueError(f"offsets must have {structures + 1} entries from 0 to {atoms}")
        if np.any(np.diff(self.offsets) <= 0):
            raise ValueError("offsets must be strictly increasing: every structure needs an atom")

    def __len__(self) -> int:
        return len(self.energy)

    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def structure(self, s: int) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        start, stop = self.offsets[s], self.offsets[s + 1]
        return self.numbers[start:stop], self.positions[start:stop], float(self.energy[s]), self.forces[start:stop]

    def subset(self, indices: Sequence[int] | np.ndarray) -> AtomsData:
        """The structures at `indices`, in that order."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        sizes = self.sizes()[idx]
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        atoms = np.repeat(self.offsets[idx] - offsets[:-1], sizes) + np.arange(offsets[-1])
        return AtomsData(self.numbers[atoms], self.positions[atoms], self.forces[atoms], self.energy[idx], offsets)

    def stored(self) -> AtomsData:
        """These structures as the store holds them (coordinates and forces rounded to float32)."""
        return AtomsData(*(getattr(self, key).astype(dtype) for key, dtype in zip(KEYS, STORED)))


def save_atoms(path: str | Path, data: AtomsData) -> None:
    """One uncompressed .npz in the fixed key order and dtypes of KEYS and STORED: equal data give equal bytes."""
    buffer = io.BytesIO()
    np.savez(buffer, **{key: getattr(data, key).astype(dtype) for key, dtype in zip(KEYS, STORED)})
    write_bytes(path, buffer.getvalue())


def load_atoms(path: str | Path) -> AtomsData:
    arrays = _read_npz(Path(path), "atoms store", KEYS)
    try:
        return AtomsData(**arrays)
    except ValueError as exc:
        raise RunError(f"atoms store {path} is inconsistent ({exc}); delete it and rerun the data stage") from None


def content_hash(data: AtomsData) -> str:
    """sha256 over each array's name, shape and little-endian bytes, in the order of KEYS."""
    digest = hashlib.sha256()
    for key in KEYS:
        array = getattr(data, key)
        digest.update(f"{key}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class Frames(NamedTuple):
    """Frames sharing one atom list: numbers (N,), positions (n,N,3), energy (n,), forces (n,N,3)."""

    numbers: np.ndarray
    positions: np.ndarray
    energy: np.ndarray
    forces: np.ndarray


def load_file(path: Path, format: str, energy_unit: str, length_unit: str, energy_key: str = "energy",
              forces_key: str = "forces") -> tuple[AtomsData, dict]:
    """Structures of a file in eV and Å, and counts of frames read and dropped as non-finite.

    `energy_key`/`forces_key` name the extxyz/ASE-db properties; for ani1x a non-default key names
    the HDF5 dataset (default wb97x_dz.energy, and the forces at the energy's level of theory)."""
    path = Path(path)
    if format not in FORMATS:
        raise RunError(f"data.source.format {format!r} is unknown; use one of {', '.join(FORMATS)}")
    if energy_unit not in ENERGY_UNITS or length_unit not in LENGTH_UNITS:
        raise RunError(f"data.source.units: energy {energy_unit!r} / length {length_unit!r} not known; use "
                       f"energy in {list(ENERGY_UNITS)} and length in {list(LENGTH_UNITS)}")
    if not path.is_file():
        raise RunError(f"{format} file {path} does not exist; check data.source.file")
    readers = {"md17": _md17, "rmd17": _rmd17, "ani1x": _ani1x, "extxyz": _extxyz, "asedb": _asedb}
    blocks = readers[format](path, energy_key, forces_key)
    energy_factor, length_factor = ENERGY_UNITS[energy_unit], LENGTH_UNITS[length_unit]
    blocks = [Frames(b.numbers, b.positions * length_factor, b.energy * energy_factor,
                     b.forces * (energy_factor / length_factor)) for b in blocks]
    read = sum(len(b.energy) for b in blocks)
    if read == 0:
        raise RunError(f"{format} file {path} holds no structures; check data.source.file")
    if coincident := first_coincident(blocks):
        raise RunError(f"{format} file {path}: structure {coincident[0]} (counting from 0 in the order of the file"
                       f"{', groups sorted by name' if format == 'ani1x' else ''}) has two atoms {coincident[1]:.3g} "
                       f"Å apart, below {MIN_DISTANCE} Å: coincident atoms make every model's forces NaN; remove "
                       "that structure from the file")
    data, dropped = from_frames(blocks)
    if len(data) == 0:
        raise RunError(f"{format} file {path}: none of its {read} structures has finite energy and forces")
    counts = {"read": read, "dropped_nonfinite": dropped, "kept": len(data)}
    return data, ({**counts, "groups": len(blocks)} if format == "ani1x" else counts)


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
        distance = np.linalg.norm(part[:, :, None, :] - part[:, None, :, :], axis=-1)
        closest[start:start + chunk] = distance[:, off_diagonal].min(axis=1)
    return closest


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


def from_frames(blocks: Sequence[Frames]) -> tuple[AtomsData, int]:
    """The canonical store of frame blocks already in eV and Å, and how many non-finite frames it dropped."""
    numbers, positions, forces = [np.zeros(0, np.int64)], [np.zeros((0, 3))], [np.zeros((0, 3))]
    energy, sizes, dropped = [np.zeros(0)], [np.zeros(0, np.int64)], 0
    for block in blocks:
        finite = (np.isfinite(block.energy) & np.isfinite(block.forces).all(axis=(1, 2))
                  & np.isfinite(block.positions).all(axis=(1, 2)))
        dropped += int((~finite).sum())
        n, count = int(finite.sum()), len(block.numbers)
        numbers.append(np.tile(block.numbers, n))
        positions.append(block.positions[finite].reshape(-1, 3))
        forces.append(block.forces[finite].reshape(-1, 3))
        energy.append(block.energy[finite])
        sizes.append(np.full(n, count, dtype=np.int64))
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(sizes))])
    data = AtomsData(np.concatenate(numbers), np.concatenate(positions), np.concatenate(forces),
                     np.concatenate(energy), offsets)
    return data, dropped


@contextlib.contextmanager
def _reading(path: Path, format: str) -> Iterator[None]:
    """Turn whatever a third-party parser raises on a damaged file into one RunError."""
    try:
        yield
    except RunError:
        raise
    except Exception as exc:
        raise _unreadable(path, format, f"{type(exc).__name__}: {exc}") from None


def _unreadable(path: Path, format: str, reason: str) -> RunError:
    return RunError(f"{format} file {path} is unreadable or truncated ({reason}); check that data.source.format "
                    "matches the file and that the file is complete (copy or download it again)")


def _read_npz(path: Path, format: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
    with open(path, "rb") as handle:
        if handle.read(2) != b"PK":
            raise _unreadable(path, format, "no zip header: it is not an npz archive")
    with _reading(path, format), np.load(path, allow_pickle=False) as archive:
        for key in keys:
            if key not in archive.files:
                raise RunError(f"{format} file {path} has no key {key!r} (it has {sorted(archive.files)}); "
                               "check data.source.format")
        return {key: archive[key] for key in keys}


def _block(path: Path, format: str, where: str, keys: Sequence[str], numbers: ArrayLike, positions: ArrayLike,
           energy: ArrayLike, forces: ArrayLike) -> Frames:
    """Check shapes against the frame count n and atom count N; `keys` names the arrays in the file."""
    label = f"{format} file {path}{where}"
    numbers = np.asarray(numbers)
    positions, energy, forces = (_floats(label, key, value)
                                 for key, value in zip(keys[1:], (positions, energy, forces)))
    if numbers.ndim != 1 or not np.issubdtype(numbers.dtype, np.integer):
        raise RunError(f"{label}: {keys[0]!r} must be integer atomic numbers of shape (N,), got {numbers.shape}")
    if numbers.size == 0 or numbers.min() < 1 or numbers.max() > 118:
        raise RunError(f"{label}: {keys[0]!r} holds no atoms or an atomic number outside 1..118")
    n, atoms = (positions.shape[0] if positions.ndim == 3 else -1), len(numbers)
    if positions.shape != (n, atoms, 3):
        raise RunError(f"{label}: {keys[1]!r} has shape {positions.shape}, expected (frames, {atoms}, 3)")
    if energy.shape == (n, 1):
        energy = energy[:, 0]
    if energy.shape != (n,):
        raise RunError(f"{label}: {keys[2]!r} has shape {energy.shape}, expected ({n},) or ({n}, 1)")
    if forces.shape != (n, atoms, 3):
        raise RunError(f"{label}: {keys[3]!r} has shape {forces.shape}, expected ({n}, {atoms}, 3)")
    return Frames(numbers.astype(np.int64), positions, energy, forces)


def _floats(label: str, key: str, value: ArrayLike) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise RunError(f"{label}: {key!r} is not numeric ({type(value).__name__}); check the file") from None


def _md17(path: Path, energy_key: str, forces_key: str) -> list[Frames]:
    keys = ("z", "R", "E", "F")
    arrays = _read_npz(path, "md17", keys)
    return [_block(path, "md17", "", keys, *(arrays[k] for k in keys))]


def _rmd17(path: Path, energy_key: str, forces_key: str) -> list[Frames]:
    keys = ("nuclear_charges", "coords", "energies", "forces")
    arrays = _read_npz(path, "rmd17", keys)
    return [_block(path, "rmd17", "", keys, *(arrays[k] for k in keys))]


def _ani1x(path: Path, energy_key: str, forces_key: str) -> list[Frames]:
    import h5py

    energy = f"{ANI_LEVEL}.energy" if energy_key == "energy" else energy_key
    keys = ("atomic_numbers", "coordinates", energy, ani_forces_key(energy) if forces_key == "forces" else forces_key)
    blocks = []
    with _reading(path, "ani1x"), h5py.File(path, "r") as handle:
        for name in sorted(handle):
            group = handle[name]
            missing = [key for key in keys if not isinstance(group, h5py.Group) or key not in group]
            if missing == [ani_forces_key(energy)]:
                levels = sorted(key.removesuffix(".forces") for key in group if key.endswith(".forces"))
                raise RunError(f"ani1x file {path}: group {name!r} has no forces at the level of "
                               f"data.source.energy_key {energy!r} (no {missing[0]!r}); training pairs energies with "
                               "forces of one level, so choose an energy_key of a level with forces "
                               f"({', '.join(levels) or 'none here'}), or name other forces in data.source.forces_key "
                               "if you mean to mix levels")
            if missing:
                raise RunError(f"ani1x file {path}: group {name!r} lacks {missing[0]!r}; an ANI-1x release file "
                               f"has one group per formula with {', '.join(keys)}")
            blocks.append(_block(path, "ani1x", f" group {name!r}", keys, *(group[k][()] for k in keys)))
    return blocks


def _extxyz(path: Path, energy_key: str, forces_key: str) -> list[Frames]:
    import ase.io

    with _reading(path, "extxyz"):
        frames = ase.io.read(path, index=":", format="extxyz")
    return [_frame_block(path, "extxyz", f" frame {i}", atoms, energy_key, forces_key)
            for i, atoms in enumerate(frames)]


def _asedb(path: Path, energy_key: str, forces_key: str) -> list[Frames]:
    import ase.db

    _check_ase_sqlite(path)
    with _reading(path, "asedb"):
        rows = list(ase.db.connect(path, type="db").select())
        frames = [(row.id, row.toatoms(add_additional_information=True)) for row in rows]
    return [_frame_block(path, "asedb", f" row {row_id}", atoms, energy_key, forces_key) for row_id, atoms in frames]


def _check_ase_sqlite(path: Path) -> None:
    """An SQLite file holding ASE's tables, checked read-only: ase.db.connect writes its schema into any
    file it opens, which would change a DVC dependency (and turn an empty file into an empty database)."""
    import sqlite3

    with open(path, "rb") as handle:
        header = handle.read(16)
    if not header:
        raise RunError(f"asedb file {path} is empty; check data.source.file (copy or download it again)")
    if header != b"SQLite format 3\x00":
        raise _unreadable(path, "asedb", "no SQLite header: chemspec reads ASE databases in SQLite, not JSON")
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise _unreadable(path, "asedb", f"sqlite3: {exc}") from None
    if not {"systems", "information"} <= tables:
        raise RunError(f"asedb file {path} is an SQLite database without ASE's tables (it has {sorted(tables)}); "
                       "write it with ase.db, or check data.source.format")


def _frame_block(path: Path, format: str, where: str, atoms: Atoms, energy_key: str, forces_key: str) -> Frames:
    """Energy and forces from the single-point calculator, else from info/arrays (or an ASE-db row's data).
    A periodic frame is refused: the neighbour lists have no periodic images, so it would train as a
    molecule cut out of its crystal."""
    if atoms.pbc.any():
        pbc = " ".join("T" if periodic else "F" for periodic in atoms.pbc)
        raise RunError(f"{format} file {path}{where} is periodic (pbc {pbc}): chemspec trains on isolated molecules "
                       "only, and its neighbour lists have no periodic images; use a data set of molecules, or, if "
                       "these are molecules in a vacuum box, write them without a cell (extxyz: pbc=\"F F F\" and no "
                       "Lattice; ASE: atoms.pbc = False)")
    results = atoms.calc.results if atoms.calc is not None else {}
    extra = {**atoms.info.get("key_value_pairs", {}), **atoms.info.get("data", {}), **atoms.info}
    energy = results.get(energy_key, extra.get(energy_key))
    forces = results.get(forces_key, atoms.arrays.get(forces_key, extra.get(forces_key)))
    for key, value, kind in ((energy_key, energy, "energy"), (forces_key, forces, "forces")):
        if value is None:
            raise RunError(f"{format} file {path}{where} has no {kind} {key!r}; set data.source.{kind}_key to the "
                           f"name the file uses (found {sorted({*results, *extra, *atoms.arrays})})")
    keys = ("numbers", "positions", energy_key, forces_key)
    return _block(path, format, where, keys, atoms.numbers, atoms.positions[None], np.ravel(energy),
                  np.asarray(forces)[None])


FORCE_RMS_LIMIT = 10.0
"""eV/Å: forces of molecules, even from 1000 K MD, are a few eV/Å RMS; a file in kcal/mol read as eV gives
23 times its forces (rMD17 ethanol: 27.8)."""
THOMAS_FERMI = 0.7687 * units.Hartree
"""eV: the Thomas-Fermi energy of a neutral atom is −THOMAS_FERMI·Z^(7/3), beyond its true total energy
(1.3 times carbon's), so no structure's energy in eV goes beyond the sum over its atoms."""


def implausible_units(data: AtomsData, energy_unit: str) -> tuple[str, str | None] | None:
    """Why `data`, read from a file whose energies are in `energy_unit`, look written in another unit, and
    the likely one (None if no known unit fits); None when their forces and energies are plausible."""
    rms = float(np.sqrt(np.mean(data.forces ** 2)))
    bound = _element_counts(data, np.arange(1, 119)) @ (THOMAS_FERMI * np.arange(1, 119) ** (7 / 3))
    ratio = float(np.median(np.abs(data.energy) / bound))
    if rms <= FORCE_RMS_LIMIT and ratio <= 1:
        return None
    scales = {unit: ENERGY_UNITS[unit] / ENERGY_UNITS[energy_unit] for unit in ENERGY_UNITS if unit != energy_unit}
    fits = [unit for unit, scale in scales.items() if rms * scale <= FORCE_RMS_LIMIT and ratio * scale <= 1]
    likely = min(fits, key=lambda unit: abs(np.log(rms * scales[unit])) if rms > 0 else -ratio * scales[unit],
                 default=None)
    per_atom = float(np.mean(data.energy / data.sizes()))
    return (f"forces of {rms:.3g} eV/Å RMS (a molecule's are a few) and energies of {per_atom:.6g} eV per atom "
            f"({ratio:.2g} times the Thomas-Fermi energy of their atoms, which bounds a total energy)"), likely


def fit_reference_energies(data: AtomsData, indices: Sequence[int] | np.ndarray) -> dict[int, float]:
    """Per-element energies e_Z minimising Σ_s (E_s − Σ_Z n_sZ e_Z)² over the structures at `indices`.

    Fit on training structures only, so validation and test energies do not leak into the targets.
    Where element counts are collinear (e.g. one molecule, as in MD17) lstsq returns the minimum-norm
    solution, which still removes the mean energy."""
    train = data.subset(indices)
    if len(train) == 0:
        raise RunError("reference energies need at least one training structure; raise data.sizes")
    elements = np.unique(train.numbers)
    matrix = _element_counts(train, elements)
    solution, *_ = np.linalg.lstsq(matrix, train.energy, rcond=None)
    return {int(z): float(e) for z, e in zip(elements, solution)}


UNTRAINED = "occur in no training structure: a model never sees them, and no reference energy is fitted for them"
"""Why elements absent from the training split are refused: their per-element reference energy would be
zero, off by the element's atomic energy (13.6 eV for H, ~1000 eV for C) per atom."""


def untrained_elements(data: AtomsData, trained: Iterable[int]) -> list[int]:
    """The elements of `data` outside `trained`, sorted."""
    return sorted(set(np.unique(np.asarray(data.numbers)).tolist()) - set(trained))


def subtract_reference(data: AtomsData, refs: dict[int, float]) -> AtomsData:
    missing = untrained_elements(data, refs)
    if missing:
        raise RunError(f"elements {missing} {UNTRAINED}; use a split whose training set contains every element, "
                       "or drop those structures")
    elements = np.array(sorted(refs), dtype=np.int64)
    values = np.array([refs[int(z)] for z in elements])
    return dataclasses.replace(data, energy=data.energy - _element_counts(data, elements) @ values)


def _element_counts(data: AtomsData, elements: np.ndarray) -> np.ndarray:
    """counts[s, j]: atoms of element elements[j] in structure s; elements must be sorted."""
    owner = np.repeat(np.arange(len(data)), data.sizes())
    counts = np.zeros((len(data), len(elements)))
    np.add.at(counts, (owner, np.searchsorted(elements, data.numbers)), 1.0)
    return counts
