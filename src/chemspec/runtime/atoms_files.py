"""Force-field data files in public formats (md17, rmd17, ani1x, ani2x, extxyz, asedb) read into frame blocks;
the HDF5 formats (ani1x, ani2x) are read in runtime.atoms_hdf5.

Each reader checks the keys and shapes its format promises and turns whatever a third-party parser
raises on a damaged file into one `RunError` naming the file (runtime.atoms_arrays holds what they share);
`load_file` converts to eV and Å and refuses files that hold no structures, and structures no molecule has
(runtime.geometry).
"""

from __future__ import annotations

import contextlib
import io
import shlex
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from chemspec.errors import RunError
from chemspec.runtime.atoms import (ENERGY_UNITS, FORMATS, HDF5_FORMATS, LENGTH_UNITS, AtomsData, Frames, finite_frames,
                                    force_factor, from_frames)
from chemspec.runtime.atoms_arrays import NPZ_KEYS, checked_block, none_finite, read_npz, reading, unreadable
from chemspec.runtime.geometry import check_geometry
from chemspec.runtime.atoms_states import comment_state, frame_state
from chemspec.specs.atoms_source import COMPRESSIONS

BOM = b"\xef\xbb\xbf"

if TYPE_CHECKING:
    from ase import Atoms


def load_file(path: Path, format: str, energy_unit: str, length_unit: str, energy_key: str = "energy",
              forces_key: str = "forces", force_unit: str | None = None) -> tuple[AtomsData, dict]:
    """Structures of a file in eV and Å, and counts of frames read and dropped as non-finite. The forces are
    in `force_unit` ('Hartree/bohr'), or left out, in the energy unit per the length unit.

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
    if format in HDF5_FORMATS:
        from chemspec.runtime.atoms_hdf5 import READERS as readers
    else:
        readers = {"md17": _md17, "rmd17": _rmd17, "extxyz": _extxyz, "asedb": _asedb}
    force_unit = force_unit or f"{energy_unit}/{length_unit}"
    blocks = readers[format](path, energy_key, forces_key)
    energy_factor, length_factor = ENERGY_UNITS[energy_unit], LENGTH_UNITS[length_unit]
    blocks = [b._replace(positions=b.positions * length_factor, energy=b.energy * energy_factor,
                         forces=b.forces * force_factor(force_unit)) for b in blocks]
    read = sum(len(b.energy) for b in blocks)
    if read == 0:
        raise RunError(f"{format} file {path} holds no structures; check data.source.file")
    check_geometry(blocks, path, format, length_unit)
    data, dropped = from_frames(blocks)
    if len(data) == 0:
        raise RunError(f"{format} file {path}: none of its {read} structures has finite energy and forces")
    counts = {"read": read, "dropped_nonfinite": dropped, "kept": len(data)}
    return data, ({**counts, "groups": len(blocks)} if format == "ani1x" else counts)


def count_structures(path: Path, format: str, energy_key: str = "energy", states: Counter | None = None) -> int:
    """The structures a file holds, counted without parsing them, never fewer than `load_file` keeps: in an
    npz (md17, rmd17), whose arrays are read and checked whole, those the store keeps (finite_frames); in HDF5
    (ani1x, whose partial levels of theory are mostly NaN, and ani2x) those with a finite energy; else every
    one. RunError where a file holds structures but none of them finite. Fast where load_file is not: an
    extended XYZ file (compressed or not, as ASE opens it) is scanned for its frame headers, as ASE indexes
    it, instead of parsed (ASE parses ~1,500 frames a second); `states` then counts its frames by the
    (charge, multiplicity) their comment lines give (runtime.atoms_states.comment_state)."""
    path = Path(path)
    if format in NPZ_KEYS:
        block = _npz(path, format)[0]
        finite = finite_frames(block)
        return none_finite(path, format, int(finite.sum()), len(finite), "energy, forces and positions")
    if format in HDF5_FORMATS:
        from chemspec.runtime.atoms_hdf5 import count_hdf5

        return count_hdf5(path, format, energy_key)
    if format == "asedb":
        import sqlite3

        _check_ase_sqlite(path)
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            return db.execute("SELECT COUNT(*) FROM systems").fetchone()[0]
    from ase.io.formats import open_with_compression

    with reading(path, format), open_with_compression(str(path), "rb") as handle:
        return _xyz_frames(path, handle, states)


def check_sample(path: Path, format: str, energy_key: str = "energy", forces_key: str = "forces") -> None:
    """The loader's checks on what is quick to read and count_structures leaves, so that validate refuses what
    the data stage would: the first frame of an extended XYZ file, the first row of an ASE database (energy
    and forces under their keys, no periodic cell), the datasets of every HDF5 group by name and shape.
    count_structures checks every array of an npz."""
    path = Path(path)
    if format in HDF5_FORMATS:
        from chemspec.runtime.atoms_hdf5 import check_hdf5

        check_hdf5(path, format, energy_key, forces_key)
    elif format == "extxyz":
        with reading(path, format):  # a slice that stops: index=0 makes ASE index every frame (gzip: seek by seek)
            first = _ase_frames(path, path, slice(0, 1))
        if first:
            _frame_block(path, format, " frame 0", first[0], energy_key, forces_key)
    elif format == "asedb":
        import ase.db

        _check_ase_sqlite(path)
        with reading(path, format):
            row = next(iter(ase.db.connect(path, type="db").select(limit=1)), None)
        if row is not None:
            _frame_block(path, format, f" row {row.id}", _row_atoms(row), energy_key, forces_key)


def _xyz_frames(path: Path, handle: BinaryIO, states: Counter | None = None) -> int:
    """Frames of an XYZ file as ase.io.extxyz indexes them: an atom count line, a comment line and a line per
    atom (and VEC lines), until a blank line or the end. ASE reads nothing after a blank line, so text there
    is refused: a file joined with `cat` from files that end in an empty line would lose its later frames."""
    frames = lines = 0
    while (line := handle.readline()).strip():
        lines += 1
        try:
            atoms = int(line)
        except ValueError:
            if line.startswith(BOM):
                where = f": line {lines} (frame {frames}, as where files were joined with `cat`)" if frames else ""
                raise RunError(f"extxyz file {path}{where} starts with a UTF-8 byte-order mark, which ASE does not "
                               "read; remove the marks (from the decompressed file: `sed -i 's/^\\xEF\\xBB\\xBF//' "
                               f"{shlex.quote(str(path))}`)") from None
            raise unreadable(path, "extxyz", f"frame {frames} does not start with its atom count") from None
        for row in range(atoms + 1):  # the comment line, then one line an atom: a symbol and three coordinates
            line = handle.readline()
            lines += 1
            if not row and states is not None:
                states[comment_state(line)] += 1
            if not line or (row and len(line.split(None, 4)) < 4):
                shown = line.strip()[:40].decode(errors="replace")
                other = f" (line {lines} is no atom's: {shown!r})" if shown else ""
                raise unreadable(path, "extxyz", f"frame {frames} declares {atoms} atoms but holds {max(row - 1, 0)}"
                                 + other)
        start = handle.tell()
        while handle.readline().lstrip().startswith(b"VEC"):
            start, lines = handle.tell(), lines + 1
        handle.seek(start)
        frames += 1
    blank = lines + 1
    for number, line in enumerate(handle, start=blank + 1):
        if line.strip():
            raise RunError(f"extxyz file {path}: line {number} holds text after the blank line {blank}, which ends "
                           f"the {frames} frames ASE reads, so the frames after it would be dropped without a word; "
                           "remove the blank line (files joined with `cat` leave one where a file ended in an empty "
                           "line)")
    return frames


def _md17(path: Path, energy_key: str, forces_key: str) -> list[Frames]:
    return _npz(path, "md17")


def _rmd17(path: Path, energy_key: str, forces_key: str) -> list[Frames]:
    return _npz(path, "rmd17")


def _npz(path: Path, format: str) -> list[Frames]:
    keys = NPZ_KEYS[format]
    arrays = read_npz(path, format, keys)
    return [checked_block(path, format, "", keys, *(arrays[k] for k in keys))]


def _extxyz(path: Path, energy_key: str, forces_key: str) -> list[Frames]:
    from ase.io.formats import open_with_compression

    source = path
    with reading(path, "extxyz"):
        with open_with_compression(str(path), "rb") as handle:
            _xyz_frames(path, handle)  # refuses text after a blank line, where ASE stops reading
        if path.suffix in COMPRESSIONS:  # ASE seeks through a compressed stream frame by frame:
            with open_with_compression(str(path), "r") as handle:  # 4,000 gzipped frames took 9 s, in memory 2 s
                source = io.StringIO(handle.read())
        frames = _ase_frames(path, source, slice(None))
    return [_frame_block(path, "extxyz", f" frame {i}", atoms, energy_key, forces_key)
            for i, atoms in enumerate(frames)]


def _ase_frames(path: Path, source, index: slice) -> list:
    """The frames at `index` of an extxyz file as ASE reads `source` (the file or its text), where it fails
    with the line or frame and the fix named."""
    import ase.io
    from ase.data import atomic_numbers
    from ase.io.formats import open_with_compression

    frames = []
    try:
        frames.extend(ase.io.iread(source, index=index, format="extxyz"))
    except UnicodeDecodeError as exc:  # ASE decodes the whole text before it parses a frame
        with open_with_compression(str(path), "rb") as handle:
            number = next((n for n, line in enumerate(handle, start=1) if not _decodes(line)), None)
        where = f"line {number}" if number else "a line"  # None: the locale's encoding is not UTF-8
        raise RunError(f"extxyz file {path}: {where} is not {exc.encoding} text ({exc.reason}: byte "
                       f"{exc.object[exc.start:exc.start + 1]!r}); save the file as UTF-8, or remove that "
                       "character") from None
    except (KeyError, ValueError) as exc:  # an unknown element, a number that is none
        token = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else None
        why = ("" if token is None or token in atomic_numbers else
               ": an atom's line starts with its element symbol (H, C, O), not its atomic number" if token.isdigit()
               else f": {token!r}, as ASE reads the symbol, is no element; write element symbols, not atom types")
        raise RunError(f"extxyz file {path} frame {len(frames)} cannot be read ({exc.__class__.__name__}: {exc}"
                       f"{why}); correct or remove that frame") from None
    return frames


def _decodes(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _asedb(path: Path, energy_key: str, forces_key: str) -> list[Frames]:
    import ase.db

    _check_ase_sqlite(path)
    with reading(path, "asedb"):
        rows = list(ase.db.connect(path, type="db").select())
        frames = [(row.id, _row_atoms(row)) for row in rows]
    return [_frame_block(path, "asedb", f" row {row_id}", atoms, energy_key, forces_key) for row_id, atoms in frames]


def _row_atoms(row) -> Atoms:
    """The row's atoms with its key-value pairs as written: ase.db's row reports `charge` as the sum of the
    initial charges, hiding a `charge` key that was written."""
    atoms = row.toatoms(add_additional_information=True)
    atoms.info["key_value_pairs"] = {key: vars(row)[key] for key in row.key_value_pairs}
    return atoms


def _check_ase_sqlite(path: Path) -> None:
    """An SQLite file holding ASE's tables, checked read-only: ase.db.connect writes its schema into any
    file it opens, which would change a DVC dependency (and turn an empty file into an empty database)."""
    import sqlite3

    with open(path, "rb") as handle:
        header = handle.read(16)
    if not header:
        raise RunError(f"asedb file {path} is empty; check data.source.file (copy or download it again)")
    if header != b"SQLite format 3\x00":
        json = header.lstrip().startswith(b"{")
        raise unreadable(path, "asedb", "no SQLite header" + (
            ": it is ASE's JSON form, and chemspec reads ASE databases in SQLite (convert it with `ase db FILE.json "
            "--insert-into FILE.db`)" if json else ""))
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise unreadable(path, "asedb", f"sqlite3: {exc}") from None
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
    missing = [(key, kind) for key, value, kind in ((energy_key, energy, "energy"), (forces_key, forces, "forces"))
               if value is None]
    if missing:
        one, kinds = len(missing) == 1, " and ".join(kind for _, kind in missing)
        lacks, keys = (" and ".join(f"no {kind} {key!r}" for key, kind in missing),
                       " and ".join(f"data.source.{kind}_key" for _, kind in missing))
        raise RunError(f"{format} file {path}{where} has {lacks}: chemspec trains on energies and forces, so every "
                       f"structure needs both; if the file names {'its ' + kinds if one else 'them'} otherwise, set "
                       f"{keys} to {'that name' if one else 'those names'} (found "
                       f"{sorted({*results, *extra, *atoms.arrays})}), else remove the structures without {kinds}",
                       field=f"{missing[0][1]}_key")
    keys = ("numbers", "positions", energy_key, forces_key)
    block = checked_block(path, format, where, keys, atoms.numbers, atoms.positions[None], np.ravel(energy),
                          np.asarray(forces)[None])
    return block._replace(**frame_state(f"{format} file {path}{where}", atoms, extra))
