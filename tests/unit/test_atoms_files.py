"""Force-field file readers on the real shared files: values after unit conversion, rejected malformed
copies, NaN rows dropped and counted, implausible units and coincident atoms refused."""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from chemspec.errors import RunError
from chemspec.runtime.atoms import AtomsData, content_hash, load_atoms
from chemspec.runtime.atoms_files import load_file
from tests.conftest import atoms_data_cell, tiny_study, write_spec

# CODATA values written out here, so the test does not share the loader's constants.
KCAL = 4.184 / 96.485332  # eV per kcal/mol
KJ = 1.0 / 96.485332  # eV per kJ/mol
HARTREE = 27.211386  # eV
BOHR = 0.52917721  # Å
RTOL = 1e-7
ANI_GROUPS = ["C1H4N4O4", "C1H5N3O5", "C1H6N2O5", "C2H10N4O3", "C2H10N6O1"]  # sorted; 2+1+3+1+1 rows


def xyz_frame(path: Path, index: int) -> tuple[list[int], float, np.ndarray, np.ndarray]:
    """Atomic numbers, energy, positions and forces of one frame, parsed from the text without ASE."""
    lines = path.read_text().splitlines()
    start = 0
    for _ in range(index):
        start += int(lines[start]) + 2
    count = int(lines[start])
    energy = float(lines[start + 1].split("energy=")[1].split()[0])
    rows = [line.split() for line in lines[start + 2: start + 2 + count]]
    table = np.array([row[1:7] for row in rows], dtype=float)
    return [{"H": 1, "C": 6, "O": 8}[row[0]] for row in rows], energy, table[:, :3], table[:, 3:]


def assert_frame(data: AtomsData, s: int, numbers, positions, energy: float, forces) -> None:
    got_numbers, got_positions, got_energy, got_forces = data.structure(s)
    np.testing.assert_array_equal(got_numbers, numbers)
    np.testing.assert_allclose(got_positions, positions, rtol=RTOL)
    assert got_energy == pytest.approx(energy, rel=RTOL)
    np.testing.assert_allclose(got_forces, forces, rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("name, frames", [("ethanol_ccsd_t-train.npz", 1000), ("md17_ethanol_first2000.npz", 2000)])
def test_md17_values_are_the_file_values_in_ev_and_angstrom(shared, name, frames):
    raw = np.load(shared / "md17" / name)
    data, counts = load_file(shared / "md17" / name, "md17", "kcal/mol", "Angstrom")
    assert len(data) == frames and counts == {"read": frames, "dropped_nonfinite": 0, "kept": frames}
    for s in (0, 1, frames - 1):
        assert_frame(data, s, raw["z"], raw["R"][s], raw["E"][s, 0] * KCAL, raw["F"][s] * KCAL)


def test_units_kj_per_mol_and_bohr_convert_positions_energies_and_forces(shared, tmp_path):
    raw = dict(np.load(shared / "md17" / "md17_ethanol_first2000.npz"))
    np.savez(tmp_path / "bohr.npz", **{**raw, "R": raw["R"] / BOHR})  # the same molecules, written in bohr
    data, _ = load_file(tmp_path / "bohr.npz", "md17", "kJ/mol", "bohr")
    assert_frame(data, 7, raw["z"], raw["R"][7], raw["E"][7, 0] * KJ, raw["F"][7] * KJ / BOHR)


def test_positions_in_angstrom_declared_as_bohr_are_refused_with_the_fix(shared):
    """In bohr, ethanol's O-H bond would be 0.51 Å: no molecule's closest atoms are that near."""
    with pytest.raises(RunError, match=r"read with lengths in bohr: the closest atoms of a typical structure are "
                                       r"0\.5\d* Å apart.*remove length from data.source.units"):
        load_file(shared / "md17" / "md17_ethanol_first2000.npz", "md17", "kcal/mol", "bohr")


def test_positions_in_bohr_read_as_angstrom_are_refused_with_the_fix(shared, tmp_path):
    """Read as Å, ethanol's bohr put its C-H bonds at 2.06 Å and its O-H bond at 1.81 Å."""
    raw = dict(np.load(shared / "md17" / "md17_ethanol_first2000.npz"))
    np.savez(tmp_path / "bohr.npz", **{**raw, "R": raw["R"] / BOHR})
    with pytest.raises(RunError, match=r"read with lengths in Angstrom: a typical hydrogen atom's nearest atom "
                                       r"\(B, C, N, O or F\) is 2\.0\d* Å away.*set length: bohr under data.source.units"):
        load_file(tmp_path / "bohr.npz", "md17", "kcal/mol", "Angstrom")


@pytest.mark.parametrize("numbers, bond", [([11, 1], [1.89]), ([19, 1], [2.24]), ([1, 1], np.linspace(0.6, 4.0, 20))],
                         ids=["NaH", "KH", "H2-dissociation"])
def test_hydrogens_far_from_a_metal_or_another_hydrogen_are_real_chemistry_not_bohr(tmp_path, numbers, bond):
    positions = np.zeros((len(bond), 2, 3))
    positions[:, 1, 0] = bond
    np.savez(tmp_path / "h.npz", z=np.array(numbers), R=positions, E=np.zeros((len(bond), 1)),
             F=np.zeros((len(bond), 2, 3)))
    data, counts = load_file(tmp_path / "h.npz", "md17", "kcal/mol", "Angstrom")
    assert counts["kept"] == len(bond)


@pytest.mark.parametrize("file, format, unit", [("md17/md17_ethanol_first2000.npz", "md17", KCAL),
                                               ("ani/ani1x_n5.hdf5", "ani1x", HARTREE)], ids=["md17", "ani1x"])
def test_a_study_without_units_reads_a_file_in_its_formats_units(shared, tmp_path, monkeypatch, file, format, unit):
    """The whole path from a study file that leaves `units` out to the stored energies: MD17 in kcal/mol,
    ANI-1x in Hartree, never eV."""
    from chemspec.compiler import expand
    from chemspec.runtime.atoms_stage import run_atoms_data
    from chemspec.specs import load_study

    study = tiny_study(**{"data.kind": "atoms", "data.source": {"file": str(shared / file), "format": format},
                          "model": {"family": "painn", "widths": [8], "depths": [1]}, "hpo.tpe.model_size": "w8d1"})
    monkeypatch.chdir(tmp_path)
    run_atoms_data(expand(load_study(write_spec(tmp_path / "study.yaml", study))).data)
    stored = load_atoms(tmp_path / "data" / "tiny" / "atoms.npz")
    in_ev, _ = load_file(shared / file, format, "eV", "Angstrom")
    np.testing.assert_allclose(stored.energy, in_ev.energy * unit, rtol=RTOL)
    np.testing.assert_allclose(stored.forces, in_ev.forces * unit, rtol=1e-6)


def test_an_extxyz_in_kcal_per_mol_left_to_the_default_ev_is_refused_naming_the_likely_unit(shared, tmp_path,
                                                                                           monkeypatch):
    from chemspec.runtime.atoms_stage import run_atoms_data

    source = {"file": str(shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz"), "format": "extxyz"}
    cell = atoms_data_cell(tmp_path, monkeypatch, source)
    with pytest.raises(RunError, match=r"extxyz file .*rmd17_ethanol_reduced_100\.xyz read in eV, the extxyz default "
                                       r"as data.source.units leaves the energy out, has forces of 27\.8 eV/Å RMS.*"
                                       r"it is likely in kcal/mol: set data.source.units: \{energy: kcal/mol\}"
                                       r".*if the file really is in eV, set data.source.unit_checks: false to read it "
                                       r"as it is, since its values pass no bound in eV either\)"):
        run_atoms_data(cell)  # energy: eV would be held to the bounds no molecule passes, and refused again
    assert not (tmp_path / "data").exists()
    given = atoms_data_cell(tmp_path, monkeypatch, {**source, "units": {"energy": "kcal/mol"}})
    assert not given.check_units and run_atoms_data(given)["count"] == 100


@pytest.mark.parametrize("unit", ["eV", "Hartree"])
def test_a_given_energy_unit_that_makes_forces_larger_than_any_molecules_is_refused(shared, tmp_path, monkeypatch,
                                                                                    unit):
    """A unit the study gives turned every check off: rMD17's kcal/mol read as Hartree trained on forces of
    hundreds of eV/Å. Only the bounds no molecule passes hold it, on the median structure."""
    from chemspec.compiler.cells import identity
    from chemspec.runtime.atoms_stage import run_atoms_data

    source = {"file": str(shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz"), "format": "extxyz",
              "units": {"energy": unit}}
    cell = atoms_data_cell(tmp_path, monkeypatch, source)
    with pytest.raises(RunError, match=rf"rmd17_ethanol_reduced_100\.xyz read in {unit}, as data.source.units gives "
                                       r"it, has forces of [\d.]+ eV/Å RMS in the median structure .*more than any "
                                       r"molecule's; it is likely in kcal/mol: set data.source.units: "
                                       r"\{energy: kcal/mol\}, which reads the forces in kcal/mol/Angstrom too \(a "
                                       r"force: beside it must then be that, or left out\) \(where they are right, "
                                       r"data.source.unit_checks: "
                                       r"false reads them as they are\)"):
        run_atoms_data(cell)
    assert not (tmp_path / "data").exists()
    unchecked = atoms_data_cell(tmp_path, monkeypatch, {**source, "unit_checks": False})
    assert identity(unchecked) == identity(cell), "a check, not a result: the data are the same"
    assert run_atoms_data(unchecked)["count"] == 100


def test_an_md17_file_in_ev_left_to_the_default_kcal_per_mol_is_refused_as_short_of_a_total_energy(
        shared, tmp_path, monkeypatch):
    """Too small an energy shows a wrong unit only where the format's energies are all-electron totals: an
    md17 file in eV read in kcal/mol has forces of a plausible size, and energies 23 times too small."""
    from chemspec.runtime.plausible import implausible_units
    from chemspec.runtime.atoms_stage import run_atoms_data

    raw = np.load(shared / "md17" / "ethanol_ccsd_t-train.npz")
    path = tmp_path / "ethanol_ev.npz"
    np.savez(path, R=raw["R"][:50], z=raw["z"], E=raw["E"][:50] * KCAL, F=raw["F"][:50] * KCAL)
    cell = atoms_data_cell(tmp_path, monkeypatch, {"file": str(path), "format": "md17"})
    with pytest.raises(RunError, match=r"md17 file .*ethanol_ev\.npz read in kcal/mol, .*has energies of "
                                       r"-20\.28\d+ eV per atom \(0\.094 times the sum of Z²/2 Hartree over their "
                                       r"atoms, which an all-electron total energy exceeds\); "
                                       r"the energies are likely in eV; the forces fit either unit, so set "
                                       r"data.source.units: \{energy: eV\} where they are in eV/Angstrom too \(an RMS "
                                       r"of 1.21 eV/Å\), or \{energy: eV, force: kcal/mol/Angstrom\} where they are in "
                                       r"kcal/mol/Angstrom, as read now \(an RMS of 0.052\d eV/Å\) .*valence-only "
                                       r"method such as xTB"):
        run_atoms_data(cell)
    assert not (tmp_path / "data").exists()
    given = atoms_data_cell(tmp_path, monkeypatch, {"file": str(path), "format": "md17",
                                                          "units": {"energy": "eV"}})
    assert run_atoms_data(given)["count"] == 50
    short = load_file(path, "md17", "kcal/mol", "Angstrom")[0]
    assert implausible_units(short, "kcal/mol") is None, "extended XYZ may hold relative energies: no lower bound"


def test_an_extxyz_of_hartree_totals_left_to_the_default_ev_gets_a_note_naming_hartree(shared, tmp_path, monkeypatch,
                                                                                        capsys):
    """Read as eV, total energies in Hartree look like relative or valence-only ones, which extended XYZ may
    hold, and their forces are small: a note, not a refusal."""
    import ase
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    from chemspec.runtime.atoms_stage import run_atoms_data

    data = load_file(shared / "md17" / "md17_ethanol_first2000.npz", "md17", "kcal/mol", "Angstrom")[0]
    for scale, name in ((1 / HARTREE, "hartree.xyz"), (1.0, "ev.xyz")):
        frames = []
        for s in range(50):
            numbers, positions, energy, forces = data.structure(s)
            atoms = ase.Atoms(numbers=numbers, positions=positions)
            atoms.calc = SinglePointCalculator(atoms, energy=energy * scale, forces=forces * scale)
            frames.append(atoms)
        ase.io.write(tmp_path / name, frames, format="extxyz")
    run_atoms_data(atoms_data_cell(tmp_path, monkeypatch, {"file": "hartree.xyz", "format": "extxyz"}))
    assert re.search(r"note: extxyz file hartree\.xyz read in eV, the extxyz default, has energies of -17\.2\d eV per "
                     r"atom: all-electron total energies in Hartree, read as eV, look so; if the file is in Hartree, "
                     r"set data.source.units: \{energy: Hartree\}, which reads the forces in Hartree/Angstrom, or "
                     r"\{energy: Hartree, force: Hartree/bohr\}, as most quantum-chemistry outputs give them",
                     capsys.readouterr().err)
    given = {"file": "hartree.xyz", "format": "extxyz", "units": {"energy": "Hartree"}}
    for source in (given, {"file": "ev.xyz", "format": "extxyz"}):
        run_atoms_data(atoms_data_cell(tmp_path, monkeypatch, source))
        assert "note: extxyz file" not in capsys.readouterr().err


def test_files_in_their_formats_units_are_plausible(shared):
    from chemspec.runtime.plausible import TOTAL_ENERGY_FORMATS, implausible_units

    for file, format, unit in (("md17/ethanol_ccsd_t-train.npz", "md17", "kcal/mol"),
                               ("ani/ani1x_n5.hdf5", "ani1x", "Hartree"), ("ani/ani2x_minimal.hdf5", "ani2x", "Hartree"),
                               ("extxyz/md17_ethanol_sampledata_2000.xyz", "extxyz", "kcal/mol")):
        data = load_file(shared / file, format, unit, "Angstrom")[0]
        assert implausible_units(data, unit, format in TOTAL_ENERGY_FORMATS) is None, file


def test_rmd17_keys_are_read(shared, tmp_path):
    raw = np.load(shared / "md17" / "ethanol_ccsd_t-train.npz")
    path = tmp_path / "rmd17_ethanol.npz"
    np.savez(path, nuclear_charges=raw["z"], coords=raw["R"][:5], energies=raw["E"][:5, 0], forces=raw["F"][:5],
             old_indices=np.arange(5))
    data, counts = load_file(path, "rmd17", "kcal/mol", "Angstrom")
    assert counts["kept"] == 5
    assert_frame(data, 4, raw["z"], raw["R"][4], raw["E"][4, 0] * KCAL, raw["F"][4] * KCAL)


def test_an_npz_of_the_other_layout_names_the_format_to_set(shared, tmp_path):
    raw = np.load(shared / "md17" / "ethanol_ccsd_t-train.npz")
    rmd17, md17 = tmp_path / "rmd17.npz", tmp_path / "md17.npz"
    np.savez(rmd17, nuclear_charges=raw["z"], coords=raw["R"][:5], energies=raw["E"][:5, 0], forces=raw["F"][:5])
    np.savez(md17, z=raw["z"], R=raw["R"][:5], E=raw["E"][:5], F=raw["F"][:5])
    for path, declared, layout in ((rmd17, "md17", "rmd17"), (md17, "rmd17", "md17")):
        with pytest.raises(RunError, match=rf"{declared} file .*{path.name} has no keys? .*"
                                           rf"; its arrays are those of an "
                                           rf"{layout} file: set data.source.format: {layout}$"):
            load_file(path, declared, "kcal/mol", "Angstrom")


def test_ani1x_groups_in_order_with_hartree_converted(shared):
    import h5py

    data, counts = load_file(shared / "ani" / "ani1x_n5.hdf5", "ani1x", "Hartree", "Angstrom")
    assert counts == {"read": 8, "dropped_nonfinite": 0, "kept": 8, "groups": 5}
    with h5py.File(shared / "ani" / "ani1x_n5.hdf5") as handle:
        group = handle["C1H6N2O5"]  # rows 3, 4, 5 of the store
        for row in range(3):
            assert_frame(data, 3 + row, group["atomic_numbers"][()], group["coordinates"][row],
                         group["wb97x_dz.energy"][row] * HARTREE, group["wb97x_dz.forces"][row] * HARTREE)


def test_ani1x_nan_rows_of_the_real_file_are_dropped_and_counted(shared):
    # The release stores NaN where a level of theory is missing: two C1H6N2O5 rows lack CCSD(T) energies.
    data, counts = load_file(shared / "ani" / "ani1x_n5.hdf5", "ani1x", "Hartree", "Angstrom",
                             energy_key="ccsd(t)_cbs.energy", forces_key="wb97x_dz.forces")
    assert counts == {"read": 8, "dropped_nonfinite": 2, "kept": 6, "groups": 5}
    assert np.isfinite(data.energy).all() and len(data) == 6


def test_ani1x_forces_follow_the_energy_keys_level_of_theory(shared):
    import h5py

    data, _ = load_file(shared / "ani" / "ani1x_n5.hdf5", "ani1x", "Hartree", "Angstrom", energy_key="wb97x_tz.energy")
    with h5py.File(shared / "ani" / "ani1x_n5.hdf5") as handle:
        group = handle["C1H4N4O4"]
        assert_frame(data, 1, group["atomic_numbers"][()], group["coordinates"][1],
                     group["wb97x_tz.energy"][1] * HARTREE, group["wb97x_tz.forces"][1] * HARTREE)


def test_ani1x_energies_of_a_level_without_forces_need_forces_named(shared):
    with pytest.raises(RunError, match=r"group 'C1H4N4O4' has no forces at the level of data.source.energy_key "
                                       r"'ccsd\(t\)_cbs.energy' \(no 'ccsd\(t\)_cbs.forces'\).*with forces "
                                       r"\(wb97x_dz, wb97x_tz\), or name other forces in data.source.forces_key"):
        load_file(shared / "ani" / "ani1x_n5.hdf5", "ani1x", "Hartree", "Angstrom", energy_key="ccsd(t)_cbs.energy")


def test_ani1x_datasets_named_without_a_level_run_as_compiled(shared, tmp_path, monkeypatch):
    """A file whose energies are `energies` beside `forces`: compile fills forces_key 'forces', and the data
    stage reads them (a guard against older params once refused exactly this source)."""
    import h5py

    from chemspec.runtime.atoms_stage import run_atoms_data

    path = tmp_path / "ani.hdf5"
    shutil.copy(shared / "ani" / "ani1x_n5.hdf5", path)
    with h5py.File(path, "r+") as handle:
        for group in handle.values():
            group["energies"], group["forces"] = group["wb97x_dz.energy"][()], group["wb97x_dz.forces"][()]
    cell = atoms_data_cell(tmp_path, monkeypatch, {"file": "ani.hdf5", "format": "ani1x",
                                                         "energy_key": "energies"})
    assert cell.source["forces_key"] == "forces"
    info = run_atoms_data(cell.model_copy(update={"out_dir": str(tmp_path / "data")}))
    reference, _ = load_file(shared / "ani" / "ani1x_n5.hdf5", "ani1x", "Hartree", "Angstrom")
    assert info["count"] == len(reference)


def test_ani1x_nan_energy_or_forces_rows_are_dropped(shared, tmp_path):
    import h5py

    path = tmp_path / "ani.hdf5"
    shutil.copy(shared / "ani" / "ani1x_n5.hdf5", path)
    with h5py.File(path, "r+") as handle:
        handle["C1H4N4O4/wb97x_dz.energy"][1] = np.nan
        forces = handle["C1H6N2O5/wb97x_dz.forces"]
        forces[0, 5, 2] = np.nan
        kept_energy = handle["C1H6N2O5/wb97x_dz.energy"][1]
    data, counts = load_file(path, "ani1x", "Hartree", "Angstrom")
    assert counts["dropped_nonfinite"] == 2 and counts["kept"] == 6
    assert np.isfinite(data.forces).all() and np.isfinite(data.energy).all()
    assert data.energy[2] == pytest.approx(kept_energy * HARTREE, rel=RTOL)  # rows: C1H4N4O4[0], C1H5N3O5[0], ...


@pytest.mark.parametrize("name, frames", [("rmd17_ethanol_reduced_100.xyz", 100),
                                          ("md17_ethanol_sampledata_2000.xyz", 2000)])
def test_extxyz_values_are_the_file_values(shared, name, frames):
    path = shared / "extxyz" / name
    data, counts = load_file(path, "extxyz", "kcal/mol", "Angstrom")
    assert counts["kept"] == frames
    for s in (0, 1, frames - 1):
        numbers, energy, positions, forces = xyz_frame(path, s)
        assert_frame(data, s, numbers, positions, energy * KCAL, forces * KCAL)


def test_extxyz_other_key_names_come_from_info_and_arrays(shared, tmp_path):
    text = (shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz").read_text()
    path = tmp_path / "renamed.xyz"
    path.write_text(text.replace(" energy=", " REF_energy=").replace(":forces:R:3", ":REF_forces:R:3"))
    data, _ = load_file(path, "extxyz", "kcal/mol", "Angstrom", energy_key="REF_energy", forces_key="REF_forces")
    reference, _ = load_file(shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz", "extxyz", "kcal/mol", "Angstrom")
    assert content_hash(data) == content_hash(reference)
    with pytest.raises(RunError, match=r"renamed\.xyz frame 0 has no energy 'energy'.*energy_key"):
        load_file(path, "extxyz", "kcal/mol", "Angstrom")


def test_asedb_matches_the_extxyz_it_was_written_from(shared, tmp_path):
    import ase.db
    import ase.io

    frames = ase.io.read(shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz", index=":10")
    with ase.db.connect(tmp_path / "ethanol.db") as db:
        for atoms in frames:
            db.write(atoms)
    data, counts = load_file(tmp_path / "ethanol.db", "asedb", "kcal/mol", "Angstrom")
    reference, _ = load_file(shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz", "extxyz", "kcal/mol", "Angstrom")
    assert counts["kept"] == 10
    assert content_hash(data) == content_hash(reference.subset(range(10)))


def test_asedb_is_read_whatever_its_name_and_never_written(shared, tmp_path):
    import ase.db
    import ase.io

    with ase.db.connect(tmp_path / "e.sqlite", type="db") as db:
        for atoms in ase.io.read(shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz", index=":3"):
            db.write(atoms)
    before = (tmp_path / "e.sqlite").read_bytes()
    assert load_file(tmp_path / "e.sqlite", "asedb", "kcal/mol", "Angstrom")[1]["kept"] == 3
    assert (tmp_path / "e.sqlite").read_bytes() == before
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(RunError, match=r"asedb file .*empty\.db is empty; check data.source.file"):
        load_file(tmp_path / "empty.db", "asedb", "eV", "Angstrom")
    assert (tmp_path / "empty.db").read_bytes() == b""
    with ase.db.connect(tmp_path / "e.json", type="json") as db:
        db.write(ase.io.read(shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz", index=0))
    with pytest.raises(RunError, match=r"no SQLite header: it is ASE's JSON form, and chemspec reads ASE databases in "
                                       r"SQLite \(convert it with `ase db FILE\.json --insert-into FILE\.db`\)"):
        load_file(tmp_path / "e.json", "asedb", "eV", "Angstrom")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(RunError, match=r"md17 file .*empty\.npz is empty; check data.source.file"):
        load_file(tmp_path / "empty.npz", "md17", "kcal/mol", "Angstrom")


def test_an_sqlite_file_without_ase_tables_is_named_as_such(tmp_path):
    import sqlite3

    with contextlib.closing(sqlite3.connect(tmp_path / "other.db")) as db:
        db.execute("CREATE TABLE molecules (smiles TEXT)")
        db.commit()
    with pytest.raises(RunError, match=r"asedb file .*other\.db is an SQLite database without ASE's tables \(it has "
                                       r"\['molecules'\]\); write it with ase.db"):
        load_file(tmp_path / "other.db", "asedb", "eV", "Angstrom")


def test_md17_missing_key_and_wrong_shapes_are_named(shared, tmp_path):
    raw = dict(np.load(shared / "md17" / "md17_ethanol_first2000.npz"))
    raw = {key: value[:4] if key != "z" else value for key, value in raw.items()}
    np.savez(tmp_path / "nof.npz", R=raw["R"], z=raw["z"], E=raw["E"])
    with pytest.raises(RunError, match=r"md17 file .*nof\.npz has no key 'F'"):
        load_file(tmp_path / "nof.npz", "md17", "kcal/mol", "Angstrom")
    np.savez(tmp_path / "shape.npz", **{**raw, "F": raw["F"][:, :8]})
    with pytest.raises(RunError, match=r"shape\.npz: 'F' has shape \(4, 8, 3\), expected \(4, 9, 3\)"):
        load_file(tmp_path / "shape.npz", "md17", "kcal/mol", "Angstrom")
    np.savez(tmp_path / "atoms.npz", **{**raw, "z": raw["z"][:8]})
    with pytest.raises(RunError, match=r"atoms\.npz: 'R' has shape \(4, 9, 3\), expected \(frames, 8, 3\) for the 8 "
                                       r"atoms 'z' lists; one of the two is wrong"):
        load_file(tmp_path / "atoms.npz", "md17", "kcal/mol", "Angstrom")
    np.savez(tmp_path / "energy.npz", **{**raw, "E": raw["E"][:3]})
    with pytest.raises(RunError, match=r"energy\.npz: 'E' has shape \(3, 1\)"):
        load_file(tmp_path / "energy.npz", "md17", "kcal/mol", "Angstrom")
    with pytest.raises(RunError, match=r"rmd17 file .*energy\.npz has no keys 'nuclear_charges', 'coords', "
                                       r"'energies', 'forces' .*; its arrays are those of an md17 file"):
        load_file(tmp_path / "energy.npz", "rmd17", "kcal/mol", "Angstrom")


def test_an_npz_of_other_names_is_told_each_formats_arrays_and_one_row_of_numbers_a_frame_is_read(tmp_path):
    """Converted files name their arrays otherwise, and often repeat the atomic numbers in every frame."""
    rng, frames = np.random.default_rng(0), 6
    geometry = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    water = {"numbers": np.array([8, 1, 1]), "coords": geometry + 0.01 * rng.normal(size=(frames, 3, 3)),
             "energies": -47_900 + rng.normal(size=frames), "forces": rng.normal(size=(frames, 3, 3))}
    np.savez(tmp_path / "other.npz", **water)
    with pytest.raises(RunError, match=r"md17 file .*other\.npz has no keys 'z', 'R', 'E', 'F' \(it has \['coords', "
                                       r"'energies', 'forces', 'numbers'\]\); an md17 file holds z, R, E, F; an rmd17 "
                                       r"file holds nuclear_charges, coords, energies, forces \(atomic numbers, "
                                       r"positions, energies, forces\): rename the file's arrays \(np\.savez\(new, "
                                       r"z=\.\.\., R=\.\.\., E=\.\.\., F=\.\.\.\)\)"):
        load_file(tmp_path / "other.npz", "md17", "kcal/mol", "Angstrom")
    per_frame = {"z": np.tile(water["numbers"], (frames, 1)), "R": water["coords"], "E": water["energies"],
                 "F": water["forces"]}
    np.savez(tmp_path / "rows.npz", **per_frame)
    data, counts = load_file(tmp_path / "rows.npz", "md17", "kcal/mol", "Angstrom")
    assert counts["kept"] == frames and data.numbers.tolist() == [8, 1, 1] * frames
    per_frame["z"][2] = [8, 1, 3]
    np.savez(tmp_path / "mixed.npz", **per_frame)
    with pytest.raises(RunError, match=r"mixed\.npz: 'z' has one row of atomic numbers a frame, and the rows differ: "
                                       r"an md17 file holds frames of one molecule; write frames of several molecules "
                                       r"as extended XYZ"):
        load_file(tmp_path / "mixed.npz", "md17", "kcal/mol", "Angstrom")
    np.savez(tmp_path / "column.npz", **{**per_frame, "z": water["numbers"][:, None]})
    with pytest.raises(RunError, match=r"column\.npz: 'z' has shape \(3, 1\), neither \(N,\) atomic numbers nor a row "
                                       r"of them for each of the 6 frames of 'R'; write the N numbers once"):
        load_file(tmp_path / "column.npz", "md17", "kcal/mol", "Angstrom")


def test_truncated_npz_hdf5_and_extxyz_are_unreadable(shared, tmp_path):
    for source, name, format in (("md17/md17_ethanol_first2000.npz", "cut.npz", "md17"),
                                 ("ani/ani1x_n5.hdf5", "cut.hdf5", "ani1x"),
                                 ("extxyz/rmd17_ethanol_reduced_100.xyz", "cut.xyz", "extxyz")):
        blob = (shared / source).read_bytes()
        (tmp_path / name).write_bytes(blob[: len(blob) // 2])
        with pytest.raises(RunError, match=rf"{format} file .*{name.replace('.', '[.]')} is unreadable or truncated"):
            load_file(tmp_path / name, format, "kcal/mol", "Angstrom")


def test_ani1x_group_missing_forces_is_named(shared, tmp_path):
    import h5py

    path = tmp_path / "ani.hdf5"
    shutil.copy(shared / "ani" / "ani1x_n5.hdf5", path)
    with h5py.File(path, "r+") as handle:
        del handle["C1H5N3O5/wb97x_dz.forces"]
    with pytest.raises(RunError, match=r"ani1x file .*ani\.hdf5: group 'C1H5N3O5' has no forces at the level of "
                                       r"data.source.energy_key 'wb97x_dz.energy' \(no 'wb97x_dz\.forces'\)"):
        load_file(path, "ani1x", "Hartree", "Angstrom")


@pytest.mark.parametrize("format, suffix", [("md17", ".npz"), ("rmd17", ".npz"), ("ani1x", ".hdf5"),
                                            ("ani2x", ".h5"), ("extxyz", ".xyz"), ("asedb", ".db")])
def test_csv_garbage_is_rejected_for_every_format(tmp_path, format, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_text("smiles,energy\nCCO,-97000.1\nCCC,oops\n")
    with pytest.raises(RunError, match=rf"{format} file .*garbage\{suffix} is unreadable or truncated"):
        load_file(path, format, "eV", "Angstrom")


def test_periodic_frames_are_refused_naming_the_file_and_frame(shared, tmp_path):
    import ase.db
    import ase.io

    frames = ase.io.read(shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz", index=":3")
    frames[1].set_cell([12.0, 12.0, 12.0])
    frames[1].pbc = True
    ase.io.write(tmp_path / "box.xyz", frames, format="extxyz")
    with pytest.raises(RunError, match=r"extxyz file .*box\.xyz frame 1 is periodic \(pbc T T T\): chemspec trains "
                                       r"on isolated molecules only.*write them without a cell"):
        load_file(tmp_path / "box.xyz", "extxyz", "kcal/mol", "Angstrom")
    frames[1].pbc = [True, False, False]
    with ase.db.connect(tmp_path / "box.db") as db:
        for atoms in frames:
            db.write(atoms)
    with pytest.raises(RunError, match=r"asedb file .*box\.db row 2 is periodic \(pbc T F F\)"):
        load_file(tmp_path / "box.db", "asedb", "kcal/mol", "Angstrom")


def test_a_file_structure_with_coincident_atoms_is_refused_naming_it(shared, tmp_path):
    import ase.io

    frames = ase.io.read(shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz", index=":4")
    frames[2].positions[5] = frames[2].positions[0]
    ase.io.write(tmp_path / "clash.xyz", frames, format="extxyz")
    with pytest.raises(RunError, match=r"extxyz file .*clash\.xyz: structure 2 \(counting from 0 in the order of the "
                                       r"file\) has two atoms 0 Å apart, below 0\.1 Å.*remove that structure"):
        load_file(tmp_path / "clash.xyz", "extxyz", "kcal/mol", "Angstrom")
    frames = ase.io.read(shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz", index=":20")
    for frame in frames[3::2]:
        frame.positions[5] = frame.positions[0]
    ase.io.write(tmp_path / "clashes.xyz", frames, format="extxyz")
    with pytest.raises(RunError, match=r"structure 3 .* below 0\.1 Å; so have 8 more \(5, 7, 9, 11, 13, \.\.\.\): "
                                       r"coincident atoms .*; remove those structures from the file"):
        load_file(tmp_path / "clashes.xyz", "extxyz", "kcal/mol", "Angstrom")


def test_an_empty_extxyz_says_it_holds_no_structures(tmp_path):
    (tmp_path / "empty.xyz").write_text("")
    with pytest.raises(RunError, match=r"extxyz file .*empty\.xyz holds no structures; check data.source.file"):
        load_file(tmp_path / "empty.xyz", "extxyz", "kcal/mol", "Angstrom")


def test_missing_file_unknown_format_and_unit_are_rejected(tmp_path):
    with pytest.raises(RunError, match=r"md17 file .*absent\.npz does not exist; check data.source.file"):
        load_file(tmp_path / "absent.npz", "md17", "eV", "Angstrom")
    with pytest.raises(RunError, match="format 'pdb' is unknown"):
        load_file(tmp_path / "absent.npz", "pdb", "eV", "Angstrom")
    with pytest.raises(RunError, match="'kcal' / length 'Angstrom' not known"):
        load_file(tmp_path / "absent.npz", "md17", "kcal", "Angstrom")


def test_a_compressed_extxyz_file_loads_as_its_plain_text_and_a_cut_one_is_refused(tmp_path):
    """Compressed files are read in memory: ASE's seeks through a gzip stream made reading them superlinear."""
    import gzip

    frame = '3\nProperties=species:S:1:pos:R:3:forces:R:3 energy=-14.2 pbc="F F F"\n' + "".join(
        f"{z} {x} 0.1 0 0.5 0 0\n" for z, x in (("O", 0.0), ("H", 0.96), ("H", -0.96)))
    (tmp_path / "water.xyz").write_text(frame * 50)
    packed = gzip.compress((tmp_path / "water.xyz").read_bytes())
    (tmp_path / "water.xyz.gz").write_bytes(packed)
    plain, counts = load_file(tmp_path / "water.xyz", "extxyz", "eV", "Angstrom")
    unpacked, _ = load_file(tmp_path / "water.xyz.gz", "extxyz", "eV", "Angstrom")
    assert counts["read"] == 50 and content_hash(plain) == content_hash(unpacked)
    (tmp_path / "cut.xyz.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(RunError, match=r"extxyz file .*cut\.xyz\.gz is unreadable or truncated"):
        load_file(tmp_path / "cut.xyz.gz", "extxyz", "eV", "Angstrom")


def test_frames_with_infinite_positions_are_dropped_without_a_numpy_warning(shared, tmp_path):
    """Forces of 1e300 (float64) would be infinite in the float32 store: every cell then diverged at step 0."""
    import warnings

    raw = np.load(shared / "md17" / "ethanol_ccsd_t-train.npz")
    positions, forces = raw["R"][:20].copy(), raw["F"][:20].copy()
    positions[:3, 1] = np.inf
    forces[5, 0, 2] = 1e300
    path = tmp_path / "inf.npz"
    np.savez(path, z=raw["z"], R=positions, E=raw["E"][:20], F=forces)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data, counts = load_file(path, "md17", "kcal/mol", "Angstrom")
        stored = data.stored()
    assert counts == {"read": 20, "dropped_nonfinite": 4, "kept": 16}
    assert all(np.isfinite(getattr(stored, key)).all() for key in ("positions", "forces", "energy"))


def test_exact_repeats_are_named_in_a_note_and_counted_in_data_json_the_store_unchanged(shared, tmp_path, monkeypatch,
                                                                                         capsys):
    """The MD17 CCSD(T) ethanol training file holds two structures twice; a file joined with `cat` holds all.
    A repeat and its original can land in training and test; the store keeps them, as it did before."""
    from chemspec.compiler import expand
    from chemspec.runtime.atoms_stage import run_atoms_data
    from chemspec.specs import load_study

    def data_stage(file: str) -> dict:
        study = tiny_study(**{"data.kind": "atoms", "data.source": {"file": file, "format": "md17"},
                              "data.sizes": [100, 200], "model": {"family": "painn", "widths": [8], "depths": [1]},
                              "hpo.tpe.model_size": "w8d1", "hpo.tpe.data_size": 100})
        monkeypatch.chdir(tmp_path)
        return run_atoms_data(expand(load_study(write_spec(tmp_path / "study.yaml", study))).data)

    source = shared / "md17" / "ethanol_ccsd_t-train.npz"
    info = data_stage(str(source))
    assert info["counts"] == {"read": 1000, "dropped_nonfinite": 0, "kept": 1000, "repeated": 2}
    assert ("note: 2 structures repeat an earlier one exactly (the same atoms, positions, charge and multiplicity; "
            "counted from 0 among those kept: 736 repeats 280, 826 repeats 773)") in capsys.readouterr().err
    assert len(load_atoms(tmp_path / "data" / "tiny" / "atoms.npz")) == 1000
    raw = np.load(shared / "md17" / "md17_ethanol_first2000.npz")
    np.savez(tmp_path / "twice.npz", **{key: np.concatenate([raw[key][:300]] * 2) if key != "z" else raw[key]
                                        for key in ("z", "R", "E", "F")})
    info = data_stage("twice.npz")
    assert info["counts"]["repeated"] == 300
    assert "300 repeats 0, 301 repeats 1, 302 repeats 2 …" in capsys.readouterr().err
    np.savez(tmp_path / "once.npz", **{key: raw[key][:300] if key != "z" else raw[key] for key in ("z", "R", "E", "F")})
    assert "repeated" not in data_stage("once.npz")["counts"] and "repeat" not in capsys.readouterr().err
    energies = raw["E"][:600].copy()
    energies[::3] = np.nan
    np.savez(tmp_path / "nan.npz", z=raw["z"], R=raw["R"][:600], E=energies, F=raw["F"][:600])
    assert data_stage("nan.npz")["counts"] == {"read": 600, "dropped_nonfinite": 200, "kept": 400}
    assert ("note: 200 of the 600 structures in nan.npz have an energy, a force or a position that is NaN or infinite "
            "(or beyond float32's range), and are left out; 400 are kept") in capsys.readouterr().err
    assert data_stage("once.npz")["counts"]["dropped_nonfinite"] == 0 and "NaN" not in capsys.readouterr().err


def test_a_file_of_frames_in_time_order_is_noted_and_a_sampled_one_is_not(shared, tmp_path, monkeypatch):
    """MD17's frames are a trajectory, 0.5 fs apart: a random split puts each test frame beside training frames
    a step away (science review). rMD17, and the CCSD(T) file, sample frames far apart. The data stage's notes
    stay in data.json, which the report reads: printed alone, they scrolled past in `dvc repro` (user review)."""
    from chemspec.report.texts import data_text
    from chemspec.runtime.atoms_stage import order_notes, run_atoms_data

    trajectory, _ = load_file(shared / "md17" / "md17_ethanol_first2000.npz", "md17", "kcal/mol", "Angstrom")
    assert order_notes(trajectory, "first2000.npz") == [
        "first2000.npz: the energies of consecutive structures stay correlated over about 6 of them, as the frames of "
        "a trajectory in time order do, so the split's random draw puts test structures beside training frames a few "
        "steps away: the test errors flatter the model, and a data size counts correlated frames; thin it to one "
        "frame in 7 or fewer (as rMD17 samples MD17) for independent ones"]
    shuffled = np.random.default_rng(0).permutation(len(trajectory))
    assert order_notes(trajectory.subset(shuffled), "shuffled.npz") == []
    for file, fmt in (("md17/ethanol_ccsd_t-train.npz", "md17"), ("extxyz/rmd17_ethanol_reduced_100.xyz", "extxyz")):
        sampled, _ = load_file(shared / file, fmt, "kcal/mol", "Angstrom")
        assert order_notes(sampled, file) == [], file
    source = {"file": str(shared / "md17" / "md17_ethanol_first2000.npz"), "format": "md17"}
    info = run_atoms_data(atoms_data_cell(tmp_path, monkeypatch, source))
    assert len(info["notes"]) == 1 and "stay correlated over about 6 of them" in info["notes"][0]
    assert data_text(info) == f"Data: 2,000 structures (18,000 atoms). The data stage noted: {info['notes'][0]}."
    quiet = run_atoms_data(atoms_data_cell(tmp_path, monkeypatch, {
        "file": str(shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz"), "format": "extxyz",
        "units": {"energy": "kcal/mol"}}))
    assert "notes" not in quiet, "data.json as before where there is nothing to note"
