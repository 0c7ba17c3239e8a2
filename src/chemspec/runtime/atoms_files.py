"""Force-field data files in public formats (md17, rmd17, ani1x, ani2x, extxyz, asedb) read into frame blocks.

Each reader checks the keys and shapes its format promises and turns whatever a third-party parser
raises on a damaged file into one `RunError` naming the file; `load_file` converts to eV and Å and
refuses files that hold no structures or coincident atoms.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from numpy.typing import ArrayLike

from chemspec.errors import RunError
from chemspec.runtime.atoms import (ENERGY_UNITS, FORMATS, LENGTH_UNITS, MIN_DISTANCE, AtomsData, Frames,
                                    first_coincident, from_frames)
from chemspec.specs.data import ANI_LEVEL, ani_forces_key

if TYPE_CHECKING:
    from ase import Atoms


def load_file(path: Path, format: str, energy_unit: str, length_unit: str, energy_key: str = "energy",
              forces_key: str = "forces") -> tuple[AtomsData, dict]:
    """Structures of a file in eV and Å, and counts of frames read and dropped as non-finite.

    `energy_key`/`forces_key` name the extxyz/ASE-db properties; for ani1x and ani2x a non-default key
    names the HDF5 dataset (defaults: ani1x wb97x_dz.energy and the forces at the energy's level of
    theory, ani2x `energies` and `forces`)."""
    path = Path(path)
    if format not in FORMATS:
        raise RunError(f"data.source.format {format!r} is unknown; use one of {', '.join(FORMATS)}")
    if energy_unit not in ENERGY_UNITS or length_unit not in LENGTH_UNITS:
        raise RunError(f"data.source.units: energy {energy_unit!r} / length {length_unit!r} not known; use "
                       f"energy in {list(ENERGY_UNITS)} and length in {list(LENGTH_UNITS)}")
    if not path.is_file():
        raise RunError(f"{format} file {path} does not exist; check data.source.file")
    readers = {"md17": _md17, "rmd17": _rmd17, "ani1x": _ani1x, "ani2x": _ani2x, "extxyz": _extxyz,
               "asedb": _asedb}
    blocks = readers[format](path, energy_key, forces_key)
    energy_factor, length_factor = ENERGY_UNITS[energy_unit], LENGTH_UNITS[length_unit]
    blocks = [Frames(b.numbers, b.positions * length_factor, b.energy * energy_factor,
                     b.forces * (energy_factor / length_factor)) for b in blocks]
    read = sum(len(b.energy) for b in blocks)
    if read == 0:
        raise RunError(f"{format} file {path} holds no structures; check data.source.file")
    if coincident := first_coincident(blocks):
        raise RunError(f"{format} file {path}: structure {coincident[0]} (counting from 0 in the order of the file"
                       f"{', groups sorted by name' if format in HDF5_FORMATS else ''}) has two atoms {coincident[1]:.3g} "
                       f"Å apart, below {MIN_DISTANCE} Å: coincident atoms make every model's forces NaN; remove "
                       "that structure from the file")
    data, dropped = from_frames(blocks)
    if len(data) == 0:
        raise RunError(f"{format} file {path}: none of its {read} structures has finite energy and forces")
    counts = {"read": read, "dropped_nonfinite": dropped, "kept": len(data)}
    return data, ({**counts, "groups": len(blocks)} if format == "ani1x" else counts)


def count_structures(path: Path, format: str, energy_key: str = "energy") -> int:
    """The structures a file holds, counted without reading them, never fewer than `load_file` keeps: those
    with a finite energy where the energies are arrays (md17, rmd17, ani2x, and ani1x, whose partial levels
    of theory are mostly NaN), else every one. Fast where load_file is not: an extended XYZ file (compressed
    or not, as ASE opens it) is scanned for its frame headers, as ASE indexes it, instead of parsed (ASE
    parses ~1,500 frames a second)."""
    path = Path(path)
    if format in NPZ_KEYS:
        energy = NPZ_KEYS[format][2]
        return int(np.isfinite(read_npz(path, format, (energy,))[energy]).sum())
    if format in HDF5_FORMATS:
        import h5py

        energy = _hdf5_energy_key(format, energy_key)
        with _reading(path, format), h5py.File(path, "r") as handle:
            for name in handle:
                if not isinstance(handle[name], h5py.Group) or energy not in handle[name]:
                    found = sorted(handle[name]) if isinstance(handle[name], h5py.Group) else "no datasets"
                    raise RunError(f"{format} file {path}: group {name!r} has no {energy!r} (it has {found}); check "
                                   "data.source.format and data.source.energy_key")
            return sum(int(np.isfinite(handle[name][energy][()]).sum()) for name in handle)
    if format == "asedb":
        import sqlite3

        _check_ase_sqlite(path)
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            return db.execute("SELECT COUNT(*) FROM systems").fetchone()[0]
    from ase.io.formats import open_with_compression

    with _reading(path, format), open_with_compression(str(path), "rb") as handle:
        return _xyz_frames(path, handle)


def _xyz_frames(path: Path, handle: BinaryIO) -> int:
    """Frames of an XYZ file as ase.io.extxyz indexes them: an atom count line, a comment line and a line per
    atom (and VEC lines), until a blank line or the end."""
    frames = 0
    while (line := handle.readline()).strip():
        try:
            atoms = int(line)
        except ValueError:
            raise _unreadable(path, "extxyz", f"frame {frames} does not start with its atom count") from None
        for _ in range(atoms + 1):
            handle.readline()
        start = handle.tell()
        while handle.readline().lstrip().startswith(b"VEC"):
            start = handle.tell()
        handle.seek(start)
        frames += 1
    return frames


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


def read_npz(path: Path, format: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
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


NPZ_KEYS = {"md17": ("z", "R", "E", "F"), "rmd17": ("nuclear_charges", "coords", "energies", "forces")}
"""The arrays of an MD17 / rMD17 archive: atomic numbers, positions, energies, forces."""

HDF5_FORMATS = ("ani1x", "ani2x")
"""Formats read from HDF5 groups: ANI-1x's release (a group a formula), torchani's (a group an atom count)."""


def _hdf5_energy_key(format: str, energy_key: str) -> str:
    """The energy dataset an HDF5 file is read from: the default key `energy` is wb97x_dz.energy in
    ANI-1x's release and `energies` in torchani's files."""
    if energy_key != "energy":
        return energy_key
    return f"{ANI_LEVEL}.energy" if format == "ani1x" else "energies"


def _md17(path: Path, energy_key: str, forces_key: str) -> list[Frames]:
    return _npz(path, "md17")


def _rmd17(path: Path, energy_key: str, forces_key: str) -> list[Frames]:
    return _npz(path, "rmd17")


def _npz(path: Path, format: str) -> list[Frames]:
    keys = NPZ_KEYS[format]
    arrays = read_npz(path, format, keys)
    return [_block(path, format, "", keys, *(arrays[k] for k in keys))]


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


def _ani2x(path: Path, energy_key: str, forces_key: str) -> list[Frames]:
    """torchani's HDF5 (the ANI-2x release): a group per atom count, each with `species` (frames, atoms)
    holding every frame's atomic numbers (-1 pads a shorter molecule), `coordinates`, `energies` and
    `forces`. Each run of frames with the same species row becomes a block, so frames keep file order."""
    import h5py

    keys = ("species", "coordinates", _hdf5_energy_key("ani2x", energy_key), forces_key)
    blocks = []
    with _reading(path, "ani2x"), h5py.File(path, "r") as handle:
        for name in sorted(handle):
            group, where = handle[name], f" group {name!r}"
            missing = [key for key in keys if not isinstance(group, h5py.Group) or key not in group]
            if missing:
                found = sorted(group) if isinstance(group, h5py.Group) else "no datasets"
                raise RunError(f"ani2x file {path}: group {name!r} lacks {missing[0]!r} (it has {found}); a torchani "
                               f"file has one group per atom count with {', '.join(keys)}; check data.source.format "
                               "and data.source.energy_key/forces_key")
            species, positions, energy, forces = (group[k][()] for k in keys)
            if species.ndim != 2 or not np.issubdtype(species.dtype, np.integer):
                raise RunError(f"ani2x file {path}{where}: 'species' must be integer atomic numbers of shape "
                               f"(frames, atoms), got {species.shape} {species.dtype}; write atomic numbers "
                               "(1 to 118, -1 for padding), not element symbols")
            n, width = species.shape
            if n == 0:
                continue
            if (bad := np.flatnonzero(((species < 1) | (species > 118)) & (species != -1))).size:
                frame, atom = divmod(int(bad[0]), width)
                raise RunError(f"ani2x file {path}{where}: frame {frame}, atom {atom} has species "
                               f"{species[frame, atom]}, not an atomic number (1 to 118) or -1 for padding; a file "
                               "of torchani's species indices (H 0, C 1, N 2, O 3, ...) must be converted to atomic "
                               "numbers first")
            if energy.shape == (n, 1):
                energy = energy[:, 0]
            for key, value, shape in zip(keys[1:], (positions, energy, forces), ((n, width, 3), (n,), (n, width, 3))):
                if value.shape != shape:
                    raise RunError(f"ani2x file {path}{where}: {key!r} has shape {value.shape}, expected {shape} as "
                                   f"'species' is {species.shape}")
            starts = np.flatnonzero(np.r_[True, (species[1:] != species[:-1]).any(axis=1)])
            for start, stop in zip(starts, np.r_[starts[1:], n]):
                atoms = species[start] != -1
                blocks.append(_block(path, "ani2x", where, keys, species[start][atoms],
                                     positions[start:stop][:, atoms], energy[start:stop], forces[start:stop][:, atoms]))
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
