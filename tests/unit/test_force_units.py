"""Forces written in another length than the positions (data.source.units.force), and forces that disagree
with the energies along a trajectory (ΔE = −∫F·dx over consecutive frames) refused, naming the force unit
that makes them agree or the sign; on MD17's ethanol trajectory rewritten as a quantum-chemistry output."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from chemspec.errors import RunError, SpecError
from tests.conftest import atoms_data_cell

KCAL = 4.184 / 96.485332  # eV per kcal/mol
HARTREE = 27.211386  # eV
BOHR = 0.52917721  # Å
FRAMES = 60


def _qc_output(shared: Path, path: Path, sign: float = 1.0) -> np.lib.npyio.NpzFile:
    """The first FRAMES frames of MD17's ethanol trajectory as extended XYZ with positions in Å, energies in
    Hartree and forces in Hartree/bohr (times `sign`: -1 writes gradients)."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    raw = np.load(shared / "md17" / "md17_ethanol_first2000.npz")
    frames = []
    for s in range(FRAMES):
        atoms = Atoms(numbers=raw["z"], positions=raw["R"][s])
        atoms.calc = SinglePointCalculator(atoms, energy=raw["E"][s, 0] * KCAL / HARTREE,
                                           forces=sign * raw["F"][s] * KCAL / HARTREE * BOHR)
        frames.append(atoms)
    write(path, frames, format="extxyz")
    return raw


def test_forces_per_bohr_read_per_angstrom_are_refused_naming_the_unit_and_read_once_given(shared, tmp_path,
                                                                                          monkeypatch):
    from chemspec.runtime.atoms import load_atoms
    from chemspec.runtime.atoms_stage import run_atoms_data

    raw = _qc_output(shared, tmp_path / "qc.xyz")
    source = {"file": "qc.xyz", "format": "extxyz", "units": {"energy": "Hartree"}}
    with pytest.raises(RunError, match=rf"extxyz file qc\.xyz: along {FRAMES - 1} small steps between consecutive "
                                       r"frames the energy changes by 1\.9\d* times the work of the forces read in "
                                       r"Hartree/Angstrom .*either the forces are in Hartree/bohr: add force: "
                                       r"Hartree/bohr under data.source.units"):
        run_atoms_data(atoms_data_cell(tmp_path, monkeypatch, source))
    assert not (tmp_path / "data").exists(), "nothing written"

    given = {**source, "units": {"energy": "hartree", "force": "Hartree/Bohr"}}
    assert run_atoms_data(atoms_data_cell(tmp_path, monkeypatch, given))["count"] == FRAMES
    stored = load_atoms(tmp_path / "data" / "tiny" / "atoms.npz")
    expected = raw["F"][:FRAMES].reshape(-1, 3) * KCAL
    np.testing.assert_allclose(stored.forces, expected, rtol=1e-4, atol=5e-6)  # ASE writes 8 decimals
    np.testing.assert_allclose(stored.energy, raw["E"][:FRAMES, 0] * KCAL, rtol=1e-9)


def test_gradients_in_place_of_forces_are_refused_and_unit_checks_false_reads_them(shared, tmp_path, monkeypatch):
    from chemspec.compiler.cells import identity
    from chemspec.runtime.atoms_stage import run_atoms_data

    _qc_output(shared, tmp_path / "qc.xyz", sign=-1.0)
    source = {"file": "qc.xyz", "format": "extxyz", "units": {"energy": "Hartree", "force": "Hartree/bohr"}}
    cell = atoms_data_cell(tmp_path, monkeypatch, source)
    with pytest.raises(RunError, match=r"energy changes by -1 times the work.*the file's forces are gradients of the "
                                       r"energy \(dE/dx\), not forces \(−dE/dx\): write their negatives into the file "
                                       r"\(where they are right, data.source.unit_checks: false"):
        run_atoms_data(cell)
    unchecked = atoms_data_cell(tmp_path, monkeypatch, {**source, "unit_checks": False})
    assert identity(unchecked) == identity(cell)
    assert run_atoms_data(unchecked)["count"] == FRAMES


def test_gradients_in_another_unit_are_named_with_their_unit(shared, tmp_path, monkeypatch):
    from chemspec.runtime.atoms_stage import run_atoms_data

    _qc_output(shared, tmp_path / "qc.xyz", sign=-1.0)
    source = {"file": "qc.xyz", "format": "extxyz", "units": {"energy": "Hartree"}}
    with pytest.raises(RunError, match=r"energy changes by -1\.9\d* times the work of the forces read in "
                                       r"Hartree/Angstrom.*gradients of the energy \(dE/dx\), not forces \(−dE/dx\): "
                                       r"write their negatives into the file, and add force: Hartree/bohr under "
                                       r"data.source.units"):
        run_atoms_data(atoms_data_cell(tmp_path, monkeypatch, source))


def test_a_geometry_optimisation_with_large_steps_of_single_atoms_is_read(tmp_path, monkeypatch):
    """GFN2-xTB BFGS relaxation of phenol: BFGS moves one hydroxyl hydrogen by 0.2 Å where the molecule's
    RMS step is 0.07 Å, past which the trapezoid rule gave 0.78 times the work. Steps are bounded per atom."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write
    from ase.optimize import BFGS
    from rdkit import Chem
    from rdkit.Chem import AllChem
    from tblite.ase import TBLite

    from chemspec.runtime.atoms_stage import run_atoms_data

    mol = Chem.AddHs(Chem.MolFromSmiles("c1ccccc1O"))
    AllChem.EmbedMolecule(mol, randomSeed=42)
    atoms = Atoms([a.GetAtomicNum() for a in mol.GetAtoms()], positions=mol.GetConformer().GetPositions())
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    frames = []

    def snapshot():
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
        frames.append(frame)

    optimiser = BFGS(atoms, logfile=None)
    optimiser.attach(snapshot, interval=1)
    optimiser.run(fmax=0.01, steps=500)
    write(tmp_path / "relax.xyz", frames, format="extxyz")
    steps = np.diff(np.stack([f.positions for f in frames]), axis=0)
    assert np.linalg.norm(steps, axis=2).max() > 0.15, "the relaxation takes the large single-atom steps"
    cell = atoms_data_cell(tmp_path, monkeypatch, {"file": "relax.xyz", "format": "extxyz"})
    assert run_atoms_data(cell)["count"] == len(frames)


def test_a_force_unit_that_is_the_energy_per_length_keeps_the_identity_and_params(shared, tmp_path, monkeypatch):
    from chemspec.compiler.cells import identity

    _qc_output(shared, tmp_path / "qc.xyz")
    plain = atoms_data_cell(tmp_path, monkeypatch, {"file": "qc.xyz", "format": "extxyz",
                                                    "units": {"energy": "Hartree"}})
    same = atoms_data_cell(tmp_path, monkeypatch, {"file": "qc.xyz", "format": "extxyz",
                                              "units": {"energy": "Hartree", "force": "hartree/Å"}})
    other = atoms_data_cell(tmp_path, monkeypatch, {"file": "qc.xyz", "format": "extxyz",
                                               "units": {"energy": "Hartree", "force": "Hartree/bohr"}})
    assert plain.source["units"] == same.source["units"] == {"energy": "Hartree", "length": "Angstrom"}
    assert identity(plain) == identity(same) != identity(other)
    assert other.source["units"]["force"] == "Hartree/bohr"


@pytest.mark.parametrize("unit", ["eV/nm", "Hartree", "bohr/Hartree"])
def test_a_force_unit_that_is_no_energy_per_length_is_refused_at_validate(shared, tmp_path, monkeypatch, unit):
    _qc_output(shared, tmp_path / "qc.xyz")
    with pytest.raises(SpecError, match=rf"data.source.units.force.*force unit '{unit}' is not an energy unit per "
                                        r"length unit: write one of eV, kcal/mol, kJ/mol, Hartree, a slash and one "
                                        r"of Angstrom, bohr, e.g. Hartree/bohr"):
        atoms_data_cell(tmp_path, monkeypatch, {"file": "qc.xyz", "format": "extxyz",
                                           "units": {"energy": "Hartree", "force": unit}})


def test_frames_that_are_no_trajectory_give_no_verdict(shared):
    """rMD17's sample of 100 frames and MD17's CCSD(T) training set are shuffled: no small steps. A ratio
    that no misread unit or sign gives shows no misreading."""
    from chemspec.runtime.atoms_files import load_file
    from chemspec.runtime.atoms import AtomsData
    from chemspec.runtime.force_work import misread, work_ratio

    for name, fmt, unit in [("extxyz/rmd17_ethanol_reduced_100.xyz", "extxyz", "kcal/mol"),
                            ("md17/ethanol_ccsd_t-train.npz", "md17", "kcal/mol")]:
        assert work_ratio(load_file(shared / name, fmt, unit, "Angstrom")[0]) is None, name
    trajectory, _ = load_file(shared / "md17" / "md17_ethanol_first2000.npz", "md17", "kcal/mol", "Angstrom")
    ratio, steps = work_ratio(trajectory)
    assert steps == 1999 and ratio == pytest.approx(1.0, abs=0.01)
    steady = AtomsData(np.tile([8, 1, 1], 40), np.cumsum(np.full((120, 3), 0.001), axis=0),
                       np.random.default_rng(0).normal(size=(120, 3)), np.arange(40) * 0.25, np.arange(0, 121, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert work_ratio(steady) is None, "energies that change by one step every frame correlate with nothing"
    assert misread(0.78, "eV/Angstrom") is None and misread(1.1, "eV/Angstrom") is None
    assert misread(1.89, "eV/Angstrom") == ("eV/bohr", False)
    assert misread(-0.53, "Hartree/bohr") == ("Hartree/Angstrom", True)
    assert misread(1 / 627.5, "Hartree/Angstrom") == ("kcal/mol/Angstrom", False)


@pytest.mark.parametrize("given", [{"energy": "kcal/mol", "force": "eV/Angstrom"}, {"force": "eV/Angstrom"}])
def test_forces_implausible_in_the_force_unit_given_are_refused_naming_the_force_unit(shared, tmp_path, monkeypatch,
                                                                                      given):
    """A wrong force: was blamed on the energy unit ("it is likely in kJ/mol"), whose advice failed again, since
    the energies were right: the force unit is the one named, and the energies are not called implausible."""
    from chemspec.runtime.atoms_stage import run_atoms_data

    source = {"file": str(shared / "md17" / "md17_ethanol_first2000.npz"), "format": "md17", "units": given}
    with pytest.raises(RunError, match=r"read in kcal/mol, .*with forces in eV/Angstrom as it gives them, has forces "
                                       r"of 2\d\.\d eV/Å RMS[^;]*; the forces are likely in kcal/mol/Angstrom: set "
                                       r"force: kcal/mol/Angstrom under data.source.units \(where they are right, "
                                       r"data.source.unit_checks: false") as refused:
        run_atoms_data(atoms_data_cell(tmp_path, monkeypatch, source))
    assert "energies of" not in str(refused.value), "the energies are plausible in kcal/mol"
    assert not (tmp_path / "data").exists()
    mended = {**source, "units": {**given, "force": "kcal/mol/Angstrom"}}
    assert run_atoms_data(atoms_data_cell(tmp_path, monkeypatch, mended))["count"] == 2000


def test_energies_and_forces_in_other_units_are_named_apart_where_no_one_energy_unit_fits(shared, tmp_path,
                                                                                        monkeypatch):
    """Energies in Hartree (all-electron totals) with forces in eV/Å, read as the md17 default kcal/mol: no
    energy unit fits both, so each gets its own, and the forces keep the unit they were read in."""
    from chemspec.runtime.atoms_stage import run_atoms_data

    raw = np.load(shared / "md17" / "md17_ethanol_first2000.npz")
    path = tmp_path / "mixed.npz"
    np.savez(path, R=raw["R"][:50], z=raw["z"], E=raw["E"][:50] * KCAL / HARTREE, F=raw["F"][:50] * KCAL / KCAL)
    source = {"file": str(path), "format": "md17"}
    with pytest.raises(RunError, match=r"the energies are likely in Hartree and the forces in kcal/mol/Angstrom: set "
                                       r"data.source.units: \{energy: Hartree, force: kcal/mol/Angstrom\}"):
        run_atoms_data(atoms_data_cell(tmp_path, monkeypatch, source))
    mended = {**source, "units": {"energy": "Hartree", "force": "kcal/mol/Angstrom"}}
    assert run_atoms_data(atoms_data_cell(tmp_path, monkeypatch, mended))["count"] == 50


def test_the_advice_on_a_new_energy_unit_says_what_a_force_unit_beside_it_must_become(shared, tmp_path, monkeypatch):
    """A force: equal to energy/length is dropped at compile, so advice naming only the energy unit was refused
    again on the forces where the study kept its force: (outside review)."""
    from chemspec.runtime.atoms_stage import run_atoms_data

    source = {"file": str(shared / "md17" / "md17_ethanol_first2000.npz"), "format": "md17",
              "units": {"energy": "eV", "force": "eV/Angstrom"}}
    with pytest.raises(RunError, match=r"it is likely in kcal/mol: set data.source.units: \{energy: kcal/mol\}, which "
                                       r"reads the forces in kcal/mol/Angstrom too \(a force: beside it must then be "
                                       r"that, or left out\)"):
        run_atoms_data(atoms_data_cell(tmp_path, monkeypatch, source))
    mended = {**source, "units": {"energy": "kcal/mol", "force": "kcal/mol/Angstrom"}}
    assert run_atoms_data(atoms_data_cell(tmp_path, monkeypatch, mended))["count"] == 2000
    raw = np.load(shared / "md17" / "md17_ethanol_first2000.npz")
    path = tmp_path / "ev_energies.npz"
    np.savez(path, R=raw["R"][:50], z=raw["z"], E=raw["E"][:50] * KCAL, F=raw["F"][:50])
    apart = {"file": str(path), "format": "md17", "units": {"energy": "Hartree", "force": "kcal/mol/Angstrom"}}
    with pytest.raises(RunError, match=r"the energies are likely in eV: set energy: eV under data.source.units, "
                                       r"keeping force: kcal/mol/Angstrom"):
        run_atoms_data(atoms_data_cell(tmp_path, monkeypatch, apart))
    kept = {**apart, "units": {"energy": "eV", "force": "kcal/mol/Angstrom"}}
    assert run_atoms_data(atoms_data_cell(tmp_path, monkeypatch, kept))["count"] == 50


def test_energies_in_another_unit_beside_forces_plausible_as_read_name_both_force_units(shared, tmp_path, monkeypatch):
    """Energies in kJ/mol and forces in eV/Å, shuffled (no trajectory for the work check): the advice
    `{energy: kJ/mol}` read the forces 96 times too small, silently (outside review)."""
    import ase
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    from chemspec.runtime.atoms_files import load_file
    from chemspec.runtime.atoms_stage import run_atoms_data

    data = load_file(shared / "extxyz" / "rmd17_ethanol_reduced_100.xyz", "extxyz", "kcal/mol", "Angstrom")[0]
    frames = []
    for s in range(100):
        numbers, positions, energy, forces = data.structure(s)
        atoms = ase.Atoms(numbers=numbers, positions=positions)
        atoms.calc = SinglePointCalculator(atoms, energy=energy * 96.485332, forces=forces)  # kJ/mol; eV/Å
        frames.append(atoms)
    ase.io.write(tmp_path / "kj.xyz", frames, format="extxyz")
    source = {"file": "kj.xyz", "format": "extxyz"}
    with pytest.raises(RunError, match=r"the energies are likely in kJ/mol; the forces fit either unit, so set "
                                       r"data.source.units: \{energy: kJ/mol, force: eV/Angstrom\} where they are in "
                                       r"eV/Angstrom, as read now \(an RMS of 1.\d+ eV/Å\), or \{energy: kJ/mol\} "
                                       r"where they are in kJ/mol/Angstrom too \(an RMS of 0.01\d+ eV/Å\)"):
        run_atoms_data(atoms_data_cell(tmp_path, monkeypatch, source))
    mended = {**source, "units": {"energy": "kJ/mol", "force": "eV/Angstrom"}}
    assert run_atoms_data(atoms_data_cell(tmp_path, monkeypatch, mended))["count"] == 100
