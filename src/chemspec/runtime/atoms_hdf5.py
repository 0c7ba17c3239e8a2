"""Force-field data in HDF5: ANI-1x's release file (format ani1x, a group per formula, one dataset per
quantity and level of theory) and torchani's layout (format ani2x, the ANI-2x release: a group per atom
count with per-frame species rows). `runtime.atoms_files` converts and checks what these return."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chemspec.errors import RunError
from chemspec.runtime.atoms import Frames
from chemspec.runtime.atoms_arrays import checked_block, none_finite, reading
from chemspec.specs.atoms_source import ANI_LEVEL, ani_forces_key


def energy_dataset(format: str, energy_key: str) -> str:
    """The energy dataset an HDF5 file is read from: the default key `energy` is wb97x_dz.energy in
    ANI-1x's release and `energies` in torchani's files."""
    if energy_key != "energy":
        return energy_key
    return f"{ANI_LEVEL}.energy" if format == "ani1x" else "energies"


def count_hdf5(path: Path, format: str, energy_key: str) -> int:
    """Structures with a finite energy, over every group, without reading coordinates or forces."""
    import h5py

    energy = energy_dataset(format, energy_key)
    with reading(path, format), h5py.File(path, "r") as handle:
        for name in handle:
            group = isinstance(handle[name], h5py.Group)
            if group and not len(handle[name]):
                raise RunError(f"{format} file {path}: group {name!r} is empty (no datasets); remove it from the file, "
                               "or check that the file was written whole")
            if group and energy not in handle[name] and all(isinstance(v, h5py.Group) for v in handle[name].values()):
                inner = ", ".join(sorted(handle[name])[:3]) + (" …" if len(handle[name]) > 3 else "")
                unit = "formula" if format == "ani1x" else "atom count"
                raise RunError(f"{format} file {path}: group {name!r} holds groups ({inner}), not datasets; "
                               f"chemspec reads one level of groups, a group per {unit} holding its datasets, not "
                               "nested layouts such as the ANI-1 release's (pyanitools): move each inner group to the "
                               "top first")
            if not group or energy not in handle[name]:
                fix = _other_layout(handle[name], format)
                raise RunError(f"{format} file {path}: group {name!r} has no {energy!r} (it has "
                               f"{_names(handle[name]) if group else 'no datasets'}); "
                               f"{fix or 'check data.source.format and data.source.energy_key'}",
                               field="energy_key" if group and not fix else "format")
            if not isinstance(handle[name][energy], h5py.Dataset):
                raise RunError(not_a_dataset(format, path, name, energy))
        energies = [handle[name][energy][()] for name in handle]
    return none_finite(path, format, sum(int(np.isfinite(e).sum()) for e in energies), sum(e.size for e in energies),
                       f"{energy!r}")


def _other_layout(group, format: str) -> str | None:
    """Where `group` holds the datasets of the other HDF5 format, the fix that names it; None otherwise."""
    import h5py

    other = next((other for other, key in (("ani1x", "atomic_numbers"), ("ani2x", "species"))
                  if other != format and isinstance(group, h5py.Group) and key in group), None)
    return f"its datasets are those of an {other} file: set data.source.format: {other}" if other else None


def _names(group) -> str:
    names = sorted(group)
    return "[" + ", ".join(map(repr, names[:8])) + (f", … {len(names)} in all]" if len(names) > 8 else "]")


def not_a_dataset(format: str, path: Path, name: str, key: str) -> str:
    return f"{format} file {path} group {name!r}: {key!r} is a group, not a dataset; write it as one array"


def read_ani1x(path: Path, energy_key: str, forces_key: str) -> list[Frames]:
    import h5py

    energy = energy_dataset("ani1x", energy_key)
    keys = ("atomic_numbers", "coordinates", energy, ani_forces_key(energy) if forces_key == "forces" else forces_key)
    blocks = []
    with reading(path, "ani1x"), h5py.File(path, "r") as handle:
        for name in sorted(handle):
            _ani1x_keys(path, name, handle[name], keys, energy)
            blocks.append(checked_block(path, "ani1x", f" group {name!r}", keys, *(handle[name][k][()] for k in keys)))
    return blocks


def _ani1x_keys(path: Path, name: str, group, keys: tuple[str, ...], energy: str) -> None:
    import h5py

    missing = [key for key in keys if not isinstance(group, h5py.Group) or key not in group]
    if missing == [ani_forces_key(energy)]:
        levels = sorted(key.removesuffix(".forces") for key in group if key.endswith(".forces"))
        raise RunError(f"ani1x file {path}: group {name!r} has no forces at the level of data.source.energy_key "
                       f"{energy!r} (no {missing[0]!r}); training pairs energies with forces of one level, so choose "
                       f"an energy_key of a level with forces ({', '.join(levels) or 'none here'}), or name other "
                       "forces in data.source.forces_key if you mean to mix levels", field="energy_key")
    if missing:
        fix = _other_layout(group, "ani1x")
        raise RunError(f"ani1x file {path}: group {name!r} lacks {' and '.join(map(repr, missing))}; an ANI-1x release "
                       f"file has one group per formula with {', '.join(keys)}{'; ' + fix if fix else ''}",
                       field="format" if fix else "file")


def read_ani2x(path: Path, energy_key: str, forces_key: str) -> list[Frames]:
    """torchani's HDF5 (the ANI-2x release): a group per atom count, each with `species` (frames, atoms)
    holding every frame's atomic numbers (-1 pads a shorter molecule), `coordinates`, `energies` and
    `forces`. Each run of frames with the same species row becomes a block, so frames keep file order."""
    import h5py

    keys = ("species", "coordinates", energy_dataset("ani2x", energy_key), forces_key)
    blocks = []
    with reading(path, "ani2x"), h5py.File(path, "r") as handle:
        for name in sorted(handle):
            group, where = handle[name], f" group {name!r}"
            species = _ani2x_species(path, name, group, keys)
            n, width = species.shape
            if n == 0:
                continue
            positions, energy, forces = (group[k][()] for k in keys[1:])
            if energy.shape == (n, 1):
                energy = energy[:, 0]
            starts = np.flatnonzero(np.r_[True, (species[1:] != species[:-1]).any(axis=1)])
            for start, stop in zip(starts, np.r_[starts[1:], n]):
                atoms = species[start] != -1
                blocks.append(checked_block(path, "ani2x", where, keys, species[start][atoms],
                                     positions[start:stop][:, atoms], energy[start:stop], forces[start:stop][:, atoms]))
    return blocks


def _ani2x_species(path: Path, name: str, group, keys: tuple[str, ...]) -> np.ndarray:
    """A torchani group's species, checked with the shapes of its other datasets (their metadata alone)."""
    import h5py

    where = f" group {name!r}"
    missing = [key for key in keys if not isinstance(group, h5py.Group) or key not in group]
    if missing:
        found = _names(group) if isinstance(group, h5py.Group) else "no datasets"
        fix = _other_layout(group, "ani2x")
        raise RunError(f"ani2x file {path}: group {name!r} lacks {' and '.join(map(repr, missing))} (it has "
                       f"{found}); a torchani file has one group per atom count with {', '.join(keys)}; "
                       f"{fix or 'check data.source.format and data.source.energy_key/forces_key'}",
                       field="format" if fix else "file")
    species = group[keys[0]][()]
    if species.ndim != 2 or not np.issubdtype(species.dtype, np.integer):
        raise RunError(f"ani2x file {path}{where}: 'species' must be integer atomic numbers of shape (frames, atoms), "
                       f"got {species.shape} {species.dtype}; write atomic numbers (1 to 118, -1 for padding), not "
                       "element symbols")
    n, width = species.shape
    if (bad := np.flatnonzero(((species < 1) | (species > 118)) & (species != -1))).size:
        frame, atom = divmod(int(bad[0]), width)
        raise RunError(f"ani2x file {path}{where}: frame {frame}, atom {atom} has species {species[frame, atom]}, not "
                       "an atomic number (1 to 118) or -1 for padding; a file of torchani's species indices (H 0, C 1, "
                       "N 2, O 3, ...) must be converted to atomic numbers first")
    for key, shape in zip(keys[1:], ((n, width, 3), (n,), (n, width, 3))):
        found = group[key].shape
        if found != shape and not (key == keys[2] and found == (n, 1)):
            raise RunError(f"ani2x file {path}{where}: {key!r} has shape {found}, expected {shape} as 'species' is "
                           f"{species.shape}")
    return species


def check_hdf5(path: Path, format: str, energy_key: str, forces_key: str) -> None:
    """The reader's checks of every group's datasets that need no more than their names and shapes (and
    ANI-2x's species): what count_hdf5, reading energies alone, leaves to the data stage."""
    import h5py

    energy = energy_dataset(format, energy_key)
    with reading(path, format), h5py.File(path, "r") as handle:
        for name in sorted(handle):
            if format == "ani1x":
                forces = ani_forces_key(energy) if forces_key == "forces" else forces_key
                keys = ("atomic_numbers", "coordinates", energy, forces)
                _ani1x_keys(path, name, handle[name], keys, energy)
                checked_block(path, "ani1x", f" group {name!r}", keys, handle[name][keys[0]][()],
                              *(_shaped(path, name, handle[name], key) for key in keys[1:]))
            else:
                _ani2x_species(path, name, handle[name], ("species", "coordinates", energy, forces_key))


def _shaped(path: Path, name: str, group, key: str) -> np.ndarray:
    """A stand-in for dataset `key` with its shape and kind of value, holding no data (a zero-stride view)."""
    import h5py

    dataset = group[key]
    if not isinstance(dataset, h5py.Dataset):
        raise RunError(not_a_dataset("ani1x", path, name, key))
    dtype = np.float64 if dataset.dtype.kind in "iuf" else dataset.dtype
    return np.broadcast_to(np.zeros((), dtype), dataset.shape)


READERS = {"ani1x": read_ani1x, "ani2x": read_ani2x}
