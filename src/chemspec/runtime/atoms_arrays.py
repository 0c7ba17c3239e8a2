"""The low-level readers of atoms files that every format shares: third-party parser errors turned into one
`RunError` naming the file, npz archives read by key, and a block of frames checked for shape and number type."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from chemspec.errors import RunError
from chemspec.runtime.atoms import Frames


@contextlib.contextmanager
def reading(path: Path, format: str) -> Iterator[None]:
    """Turn whatever a third-party parser raises on a damaged file into one RunError."""
    try:
        yield
    except RunError:
        raise
    except Exception as exc:
        raise unreadable(path, format, f"{type(exc).__name__}: {exc}") from None


def unreadable(path: Path, format: str, reason: str) -> RunError:
    return RunError(f"{format} file {path} is unreadable or truncated ({reason}); check that data.source.format "
                    "matches the file and that the file is complete (copy or download it again)")


NPZ_KEYS = {"md17": ("z", "R", "E", "F"), "rmd17": ("nuclear_charges", "coords", "energies", "forces")}
"""The arrays of an MD17 / rMD17 archive: atomic numbers, positions, energies, forces."""
NPZ_FORCES = {keys[3] for keys in NPZ_KEYS.values()}


def read_npz(path: Path, format: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays `keys` of an npz archive."""
    with open(path, "rb") as handle:
        header = handle.read(2)
    if not header:
        raise RunError(f"{format} file {path} is empty; check data.source.file (copy or download it again)")
    if header != b"PK":
        raise unreadable(path, format, "no zip header: it is not an npz archive")
    with reading(path, format), np.load(path, allow_pickle=False) as archive:
        missing = [key for key in keys if key not in archive.files]
        if missing:
            layout = next((other for other, named in NPZ_KEYS.items()
                           if other != format and set(named) <= set(archive.files)), None)
            forces = [key for key in missing if key in NPZ_FORCES]
            needed = (f"; its arrays are those of an {layout} file: set data.source.format: {layout}" if layout else
                      f": chemspec trains on energies and forces, so the file needs its forces ({forces[0]!r}) too"
                      if missing == forces else f"; {_layouts(format)}")
            raise RunError(f"{format} file {path} has no {'key' if len(missing) == 1 else 'keys'} "
                           f"{', '.join(map(repr, missing))} (it has {sorted(archive.files)}){needed}")
        return {key: archive[key] for key in keys}


def _layouts(format: str) -> str:
    """Which arrays each npz format holds, the one read first, and how to make a file of other names fit."""
    named = [format, *(other for other in NPZ_KEYS if other != format)]
    listed = "; ".join(f"an {name} file holds {', '.join(NPZ_KEYS[name])}"
                       for name in named)
    keys = NPZ_KEYS[format]
    return (f"{listed} (atomic numbers, positions, energies, forces): rename the file's arrays (np.savez(new, "
            f"{', '.join(f'{key}=...' for key in keys)})), or set data.source.format to the one it matches")


def none_finite(path: Path, format: str, finite: int, total: int, values: str) -> int:
    """`finite`, the structures of a file that has `total`; RunError where it has some and none is finite."""
    if total and not finite:
        raise RunError(f"{format} file {path} holds {total} structures, none with finite {values} (NaN, inf or "
                       "beyond float32's range in every one); check how the file was written, or choose another")
    return finite


def checked_block(path: Path, format: str, where: str, keys: Sequence[str], numbers: ArrayLike,
                  positions: ArrayLike, energy: ArrayLike, forces: ArrayLike) -> Frames:
    """Check shapes against the frame count n and atom count N; `keys` names the arrays in the file."""
    label = f"{format} file {path}{where}"
    numbers = np.asarray(numbers)
    if numbers.ndim == 2:  # one row a frame, as converted files often write them
        frames = np.shape(positions)[0] if np.ndim(positions) == 3 else None
        if len(numbers) != frames or not frames:
            raise RunError(f"{label}: {keys[0]!r} has shape {numbers.shape}, neither (N,) atomic numbers nor a row of "
                           f"them for each of the {frames or 0} frames of {keys[1]!r}; write the N numbers once")
        if not (numbers == numbers[:1]).all():
            raise RunError(f"{label}: {keys[0]!r} has one row of atomic numbers a frame, and the rows differ: an "
                           f"{format} file holds frames of one molecule; write frames of several molecules as extended "
                           "XYZ (data.source.format: extxyz)")
        numbers = numbers[0]
    positions, energy, forces = (floats(label, key, value)
                                 for key, value in zip(keys[1:], (positions, energy, forces)))
    if numbers.ndim != 1 or not np.issubdtype(numbers.dtype, np.integer):
        raise RunError(f"{label}: {keys[0]!r} must be integer atomic numbers of shape (N,), got {numbers.dtype} of "
                       f"shape {numbers.shape}" + (f"; write {keys[0]}.astype(int)" if numbers.ndim == 1 else ""))
    if numbers.size == 0 or numbers.min() < 1 or numbers.max() > 118:
        raise RunError(f"{label}: {keys[0]!r} holds no atoms or an atomic number outside 1..118")
    n, atoms = (positions.shape[0] if positions.ndim == 3 else -1), len(numbers)
    if positions.shape != (n, atoms, 3):
        raise RunError(f"{label}: {keys[1]!r} has shape {positions.shape}, expected (frames, {atoms}, 3) for the "
                       f"{atoms} atoms {keys[0]!r} lists; one of the two is wrong")
    if energy.shape == (n, 1):
        energy = energy[:, 0]
    if energy.shape != (n,):
        raise RunError(f"{label}: {keys[2]!r} has shape {energy.shape}, expected ({n},) or ({n}, 1)")
    if forces.shape != (n, atoms, 3):
        raise RunError(f"{label}: {keys[3]!r} has shape {forces.shape}, expected ({n}, {atoms}, 3)")
    return Frames(numbers.astype(np.int64), positions, energy, forces)


def floats(label: str, key: str, value: ArrayLike) -> np.ndarray:
    """`value` as float64; text (parsed) or complex numbers (cut to their real part) would pass unsaid."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        raise RunError(f"{label}: {key!r} holds rows of different lengths; every frame needs one per atom") from None
    if array.dtype.kind not in "iuf":
        raise RunError(f"{label}: {key!r} holds {array.dtype} values, not real numbers; write it as floating-point "
                       "numbers")
    return array.astype(np.float64, copy=False)
