"""torchani's HDF5 layout (format ani2x, the ANI-2x release): the real shared file read in eV and Å, mixed
species within a group kept in file order, padding atoms dropped, malformed groups named."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from chemspec.errors import RunError
from chemspec.runtime.atoms_files import count_structures, load_file
from tests.conftest import tiny_study, write_spec

HARTREE = 27.211386  # eV, written out so the test does not share the loader's constant
RTOL = 1e-7


def write_torchani(path, groups: dict[str, dict[str, np.ndarray]]) -> None:
    import h5py

    with h5py.File(path, "w") as handle:
        for name, arrays in groups.items():
            for key, value in arrays.items():
                handle[f"{name}/{key}"] = value


def assert_structure(data, s: int, numbers, positions, energy_eh: float, forces_eh) -> None:
    got_numbers, got_positions, got_energy, got_forces = data.structure(s)
    np.testing.assert_array_equal(got_numbers, numbers)
    np.testing.assert_allclose(got_positions, positions, rtol=RTOL)
    assert got_energy == pytest.approx(energy_eh * HARTREE, rel=RTOL)
    np.testing.assert_allclose(got_forces, np.asarray(forces_eh) * HARTREE, rtol=1e-6, atol=1e-9)


def test_the_real_file_is_read_frame_by_frame_in_hartree(shared):
    import h5py

    path = shared / "ani" / "ani2x_minimal.hdf5"
    data, counts = load_file(path, "ani2x", "Hartree", "Angstrom")
    assert counts == {"read": 5706, "dropped_nonfinite": 0, "kept": 5706} and count_structures(path, "ani2x") == 5706
    with h5py.File(path) as handle:
        group = handle["002"]
        for s in (0, 1, 2851, 5705):
            assert_structure(data, s, group["species"][s], group["coordinates"][s], group["energies"][s],
                             group["forces"][s])


def test_mixed_species_keep_file_order_and_padding_atoms_are_dropped(tmp_path):
    rng = np.random.default_rng(0)
    species = np.array([[8, 1, 1], [6, 8, -1], [8, 1, 1], [8, 1, 1], [6, 8, -1]])
    positions = rng.normal(size=(5, 3, 3)) * 0.5 + np.array([[0.0, 0, 0], [1.2, 0, 0], [0, 1.2, 0]])
    energy, forces = -76.0 - rng.random(5), rng.normal(size=(5, 3, 3)) * 0.01
    pair = {"species": np.array([[1, 1]]), "coordinates": np.array([[[0, 0, 0], [0.74, 0, 0]]]),
            "energies": np.array([-1.17]), "forces": np.zeros((1, 2, 3))}
    write_torchani(tmp_path / "mixed.h5", {"003": {"species": species, "coordinates": positions,
                                                   "energies": energy, "forces": forces}, "002": pair})
    data, counts = load_file(tmp_path / "mixed.h5", "ani2x", "Hartree", "Angstrom")
    assert counts["kept"] == 6
    assert_structure(data, 0, [1, 1], pair["coordinates"][0], -1.17, np.zeros((2, 3)))  # groups sorted by name
    for s in range(5):
        atoms = species[s] > 0
        assert_structure(data, 1 + s, species[s][atoms], positions[s][atoms], energy[s], forces[s][atoms])


def test_other_dataset_names_come_from_the_keys(shared, tmp_path):
    import h5py

    path = tmp_path / "renamed.h5"
    shutil.copy(shared / "ani" / "ani2x_minimal.hdf5", path)
    with h5py.File(path, "r+") as handle:
        handle.move("002/energies", "002/wb97x.energy")
    with pytest.raises(RunError, match=r"ani2x file .*renamed\.h5: group '002' lacks 'energies' \(it has \['coordinates"
                                       r"', 'forces', 'species', 'wb97x\.energy'\]\).*energy_key/forces_key"):
        load_file(path, "ani2x", "Hartree", "Angstrom")
    data, _ = load_file(path, "ani2x", "Hartree", "Angstrom", energy_key="wb97x.energy")
    reference, _ = load_file(shared / "ani" / "ani2x_minimal.hdf5", "ani2x", "Hartree", "Angstrom")
    np.testing.assert_array_equal(data.energy, reference.energy)
    with h5py.File(path, "r+") as handle:
        handle.move("002/forces", "002/wb97x.forces")
    with pytest.raises(RunError, match=r"group '002' lacks 'energies' and 'forces' \(it has"):
        load_file(path, "ani2x", "Hartree", "Angstrom")


def test_malformed_groups_are_named(tmp_path):
    good = {"species": np.array([[1, 1]]), "coordinates": np.array([[[0, 0, 0], [0.74, 0, 0]]]),
            "energies": np.array([-1.17]), "forces": np.zeros((1, 2, 3))}
    write_torchani(tmp_path / "float.h5", {"002": {**good, "species": good["species"].astype(float)}})
    with pytest.raises(RunError, match=r"ani2x file .*float\.h5 group '002': 'species' must be integer atomic "
                                       r"numbers of shape \(frames, atoms\)"):
        load_file(tmp_path / "float.h5", "ani2x", "Hartree", "Angstrom")
    write_torchani(tmp_path / "short.h5", {"002": {**good, "energies": np.array([-1.17, -1.16])}})
    with pytest.raises(RunError, match=r"short\.h5 group '002': 'energies' has shape \(2,\), expected \(1,\) as "
                                       r"'species' is \(1, 2\)"):
        load_file(tmp_path / "short.h5", "ani2x", "Hartree", "Angstrom")
    write_torchani(tmp_path / "forces.h5", {"002": {**good, "forces": np.zeros((1, 3, 3))}})
    with pytest.raises(RunError, match=r"forces\.h5 group '002': 'forces' has shape \(1, 3, 3\), expected "
                                       r"\(1, 2, 3\) as 'species' is \(1, 2\)"):
        load_file(tmp_path / "forces.h5", "ani2x", "Hartree", "Angstrom")
    (tmp_path / "cut.h5").write_bytes((tmp_path / "forces.h5").read_bytes()[:600])
    with pytest.raises(RunError, match=r"ani2x file .*cut\.h5 is unreadable or truncated"):
        load_file(tmp_path / "cut.h5", "ani2x", "eV", "Angstrom")


def test_a_study_reads_the_file_in_hartree_without_units(shared, tmp_path, monkeypatch):
    from chemspec.compiler import expand
    from chemspec.runtime.atoms import load_atoms
    from chemspec.runtime.atoms_stage import run_atoms_data
    from chemspec.specs import load_study

    study = tiny_study(**{"data.kind": "atoms", "data.source": {"file": str(shared / "ani" / "ani2x_minimal.hdf5"),
                                                               "format": "ani2x"},
                          "model": {"family": "painn", "widths": [8], "depths": [1]}, "hpo.tpe.model_size": "w8d1"})
    monkeypatch.chdir(tmp_path)
    cell = expand(load_study(write_spec(tmp_path / "study.yaml", study))).data
    assert cell.source["units"] == {"energy": "Hartree", "length": "Angstrom"} and cell.check_units
    run_atoms_data(cell)
    stored = load_atoms(tmp_path / "data" / "tiny" / "atoms.npz")
    in_ev, _ = load_file(shared / "ani" / "ani2x_minimal.hdf5", "ani2x", "eV", "Angstrom")
    np.testing.assert_allclose(stored.energy, in_ev.energy * HARTREE, rtol=RTOL)


def test_species_indices_instead_of_atomic_numbers_are_refused(tmp_path):
    """torchani also writes species as indices (H 0, C 1, N 2, O 3): read as atomic numbers they would be
    other elements with atoms missing, so anything but 1..118 and the -1 padding is refused."""
    water = {"species": np.array([[3, 0, 0]]), "coordinates": np.array([[[0, 0, 0], [0.96, 0, 0], [0, 0.96, 0]]]),
             "energies": np.array([[-76.4]]), "forces": np.zeros((1, 3, 3))}
    write_torchani(tmp_path / "indices.h5", {"003": water})
    with pytest.raises(RunError, match=r"indices\.h5 group '003': frame 0, atom 1 has species 0, not an atomic number "
                                       r"\(1 to 118\) or -1 for padding; .*species indices.*converted"):
        load_file(tmp_path / "indices.h5", "ani2x", "Hartree", "Angstrom")
    write_torchani(tmp_path / "numbers.h5", {"003": {**water, "species": np.array([[8, 1, 1]])}})
    data, _ = load_file(tmp_path / "numbers.h5", "ani2x", "Hartree", "Angstrom")  # energies of shape (n, 1) too
    assert data.energy[0] == pytest.approx(-76.4 * HARTREE, rel=RTOL)


def test_validate_names_a_missing_energy_dataset_as_the_data_stage_does(shared, tmp_path):
    with pytest.raises(RunError, match=r"ani2x file .*ani1x_n5\.hdf5: group 'C1H4N4O4' has no 'energies' \(it has "
                                       r"\['atomic_numbers', .{0,300}, … \d+ in all\]\); its datasets are those of an "
                                       r"ani1x file: set data.source.format: ani1x$") as refused:
        count_structures(shared / "ani" / "ani1x_n5.hdf5", "ani2x")
    assert refused.value.field == "format"
    water = {"species": np.array([[8, 1, 1]]), "coordinates": np.zeros((1, 3, 3)), "energies": np.array([-76.4]),
             "forces": np.zeros((1, 3, 3))}
    write_torchani(tmp_path / "torchani.h5", {"003": water})
    with pytest.raises(RunError, match=r"ani1x file .*torchani\.h5: group '003' has no 'wb97x_dz.energy' \(it has "
                                       r"\['coordinates', 'energies', 'forces', 'species'\]\); its datasets are those "
                                       r"of an ani2x file: set data.source.format: ani2x$"):
        count_structures(tmp_path / "torchani.h5", "ani1x")
    with pytest.raises(RunError, match=r"ani1x file .*torchani\.h5: group '003' lacks 'atomic_numbers'; "
                                       r"an ANI-1x release file .*; its datasets are those of an ani2x file: set "
                                       r"data.source.format: ani2x$"):
        load_file(tmp_path / "torchani.h5", "ani1x", "Hartree", "Angstrom", energy_key="energies",
                  forces_key="forces")
    write_torchani(tmp_path / "other.h5", {"003": {"energies": np.array([-76.4])}})
    with pytest.raises(RunError, match=r"group '003' has no 'wb97x_dz.energy' \(it has \['energies'\]\); check "
                                       r"data.source.format and data.source.energy_key$") as refused:
        count_structures(tmp_path / "other.h5", "ani1x")
    assert refused.value.field == "energy_key"


def test_validate_refuses_what_the_data_stage_would_from_the_datasets_names_and_shapes(shared, tmp_path):
    """validate counted energies alone: species indices, a forces dataset of the wrong shape, or an ANI-1x
    level without forces passed it and compile, and stopped the data stage."""
    from chemspec.runtime.atoms_files import check_sample

    good = {"species": np.array([[8, 1, 1]]), "coordinates": np.zeros((1, 3, 3)), "energies": np.array([-76.4]),
            "forces": np.zeros((1, 3, 3))}
    for name, arrays, said in (
            ("indices.h5", {**good, "species": np.array([[3, 0, 0]])}, r"frame 0, atom 1 has species 0"),
            ("forces.h5", {**good, "forces": np.zeros((1, 2, 3))}, r"'forces' has shape \(1, 2, 3\), expected")):
        write_torchani(tmp_path / name, {"003": arrays})
        assert count_structures(tmp_path / name, "ani2x") == 1
        with pytest.raises(RunError, match=said):
            check_sample(tmp_path / name, "ani2x")
    check_sample(shared / "ani" / "ani2x_minimal.hdf5", "ani2x")
    with pytest.raises(RunError, match=r"has no forces at the level of data.source.energy_key 'ccsd\(t\)_cbs.energy'") \
            as raised:
        check_sample(shared / "ani" / "ani1x_n5.hdf5", "ani1x", "ccsd(t)_cbs.energy")
    assert raised.value.field == "energy_key"
    check_sample(shared / "ani" / "ani1x_n5.hdf5", "ani1x", "ccsd(t)_cbs.energy", "wb97x_dz.forces")
