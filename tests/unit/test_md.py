"""MD generation with GFN2-xTB: thermostat temperature, finite labels, forces that are the energy's
gradient, byte-identical data for one seed whatever the worker count, and SCF failures counted."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from ase.calculators.calculator import CalculationFailed, Calculator, all_changes
from pydantic import ValidationError

from chemspec.errors import RunError
from chemspec.runtime import md
from chemspec.runtime.atoms import save_atoms
from chemspec.specs.atoms_source import MOLECULES, GenerateMD

TARGET_K = 500.0
SETTINGS = {"molecules": [("water", MOLECULES["water"]), ("ethanol", MOLECULES["ethanol"])], "frames": 20,
            "temperature_K": TARGET_K, "stride": 20, "timestep_fs": 0.5, "equilibration_steps": 400, "seed": 3}


@pytest.fixture(scope="module")
def xtb():
    pytest.importorskip("tblite.ase", reason="GFN2-xTB labels need the tblite package (pip install tblite)")


@pytest.fixture(scope="module")
def generated(xtb):
    return md.generate_md(**SETTINGS)


def test_frames_are_split_over_molecules_and_all_finite(generated):
    data, counts = generated
    assert len(data) == 20 and counts["kept"] == 20 and counts["dropped_scf"] == 0
    assert [m["kept"] for m in counts["molecules"]] == [10, 10]
    assert list(data.sizes()) == [3] * 10 + [9] * 10
    assert sorted(data.structure(0)[0]) == [1, 1, 8] and sorted(data.structure(19)[0]) == [1] * 6 + [6, 6, 8]
    assert np.isfinite(data.positions).all() and np.isfinite(data.forces).all() and np.isfinite(data.energy).all()
    assert not np.allclose(data.structure(10)[1], data.structure(11)[1])


def test_kinetic_temperature_after_equilibration_is_near_the_target(generated):
    # Instantaneous kinetic temperature has relative spread sqrt(2/dof): 58% for water (6 dof), 29% for
    # ethanol (24). The 10 frames per molecule span 100 fs, about one thermostat time (1/friction), so
    # they are only ~2 independent samples, and 400 steps (200 fs) of equilibration from the MMFF minimum
    # leave some lag. Over both molecules (30 dof) the mean has a spread of roughly 15-20%, so the band
    # 0.4-1.8x the target is about 3 sigma wide while still catching a missing or wrong thermostat.
    _, counts = generated
    dof = {m["name"]: 3 * m["atoms"] - 3 for m in counts["molecules"]}
    mean = sum(m["mean_temperature_K"] * dof[m["name"]] for m in counts["molecules"]) / sum(dof.values())
    assert 0.4 * TARGET_K < mean < 1.8 * TARGET_K, counts["molecules"]


def test_frames_far_from_the_target_temperature_are_named_with_the_setting_to_raise(generated):
    """20 steps of equilibration left water at 316 K and ethanol at 438 K of 500 K, without a word."""
    _, counts = generated
    assert md.temperature_notes(counts["molecules"], TARGET_K, 400) == [], "the generated frames are near the target"
    cold = [{"name": "water", "atoms": 3, "kept": 110, "mean_temperature_K": 316.0,
             "energy_autocorrelation_frames": 2.0},
            {"name": "ethanol", "atoms": 9, "kept": 110, "mean_temperature_K": 470.0,
             "energy_autocorrelation_frames": 2.0}]
    assert md.temperature_notes(cold, 500.0, 20) == [
        "water: its 110 frames average 316 K against data.source.temperature_K 500 K, further than their spread "
        "(±39 K) explains, so they sample another temperature; raise data.source.equilibration_steps (20 now)"]


def finite_difference_forces(numbers: np.ndarray, positions: np.ndarray, step: float) -> tuple[float, np.ndarray]:
    """The xTB energy and -dE/dx by central differences; runs in a single-threaded worker."""
    from ase import Atoms

    atoms = Atoms(numbers=numbers, positions=positions, calculator=md.xtb_calculator())
    energy = atoms.get_potential_energy()
    numeric = np.zeros_like(positions)
    for index in np.ndindex(*positions.shape):
        energies = []
        for sign in (1, -1):
            moved = positions.copy()
            moved[index] += sign * step
            atoms.positions = moved
            energies.append(atoms.get_potential_energy())
        numeric[index] = -(energies[0] - energies[1]) / (2 * step)
    return energy, numeric


def test_forces_are_the_negative_gradient_of_the_xtb_energy(generated):
    data, _ = generated
    numbers, positions, energy, forces = data.structure(len(data) - 1)
    # One OpenMP thread, as in generate_md: in the test process xTB threads contend with everything else.
    with md._single_thread_env(), ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        xtb_energy, numeric = pool.submit(finite_difference_forces, numbers, positions, 1e-3).result()
    assert xtb_energy == pytest.approx(energy, abs=1e-6)
    np.testing.assert_allclose(forces, numeric, atol=1e-3)


def test_same_seed_gives_byte_identical_data_with_one_worker(generated, tmp_path, monkeypatch):
    save_atoms(tmp_path / "two_workers.npz", generated[0])
    monkeypatch.setattr(md.os, "cpu_count", lambda: 1)
    again, counts = md.generate_md(**SETTINGS)
    save_atoms(tmp_path / "one_worker.npz", again)
    assert (tmp_path / "one_worker.npz").read_bytes() == (tmp_path / "two_workers.npz").read_bytes()
    assert counts == generated[1]


class Failing(Calculator):
    """A harmonic well whose calculation number n fails when `fails(n)`: a stand-in for SCF failures."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, fails):
        super().__init__()
        self.fails, self.calls, self.origin = fails, 0, None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        if self.fails(self.calls):
            raise CalculationFailed("SCF did not converge")
        if self.origin is None:
            self.origin = self.atoms.positions.copy()
        shift = self.atoms.positions - self.origin
        self.results = {"energy": 5.0 * float((shift**2).sum()), "forces": -10.0 * shift}


def water_job(frames: int) -> md.Job:
    return md.Job("water", "O", frames, 300.0, 5, 0.5, 20, np.random.SeedSequence(0))


def test_an_scf_failure_is_retried_from_the_previous_frame(monkeypatch):
    monkeypatch.setattr(md, "xtb_calculator", lambda charge, multiplicity: Failing(lambda n: n == 40))
    block, info = md.trajectory(water_job(8))
    assert info["retried_scf"] == 1 and info["dropped_scf"] == 0 and info["kept"] == 8
    assert block.positions.shape == (8, 3, 3) and np.isfinite(block.forces).all()


def test_frames_failing_twice_are_dropped_and_counted(monkeypatch):
    monkeypatch.setattr(md, "xtb_calculator", lambda charge, multiplicity: Failing(lambda n: n >= 40))
    block, info = md.trajectory(water_job(8))
    assert 0 < info["kept"] < 8 and info["dropped_scf"] == 8 - info["kept"] and info["abandoned"]
    assert info["retried_scf"] == md.MAX_CONSECUTIVE_DROPS and len(block.energy) == info["kept"]


def test_a_molecule_whose_dynamics_stopped_early_is_named_with_the_fix(monkeypatch):
    monkeypatch.setattr(md, "xtb_calculator", lambda charge, multiplicity: Failing(lambda n: n >= 40))
    _, info = md.trajectory(water_job(8))
    notes = md.shortfall_notes([{"name": "water", **info}, {"name": "ethanol", "kept": 8, "dropped_scf": 0,
                                                            "abandoned": False}])
    assert len(notes) == 1 and notes[0].startswith(
        f"water: GFN2-xTB failed 3 times in a row, so its dynamics stopped after {info['kept']} of 8 frames")
    assert "lower data.source.temperature_K or timestep_fs" in notes[0]


def test_a_molecule_that_gives_no_frame_stops_the_data_stage(monkeypatch):
    def failed(job, ticks=None):
        block, info = trajectory(job, ticks)
        return (block, info) if job.name == "water" else (block._replace(
            positions=block.positions[:0], energy=block.energy[:0], forces=block.forces[:0]),
            {**info, "kept": 0, "dropped_scf": job.frames, "abandoned": True})
    trajectory = md.trajectory
    monkeypatch.setattr(md, "_run_parallel", lambda jobs, total, progress: [failed(job) for job in jobs])
    with pytest.raises(RunError, match=r"failed 3 times in a row for methane, which gave no frames \(the other "
                                       r"molecules did\); lower data.source.temperature_K or timestep_fs, or drop"):
        md.generate_md([("water", "O"), ("methane", "C")], 4, 300.0, 2, 0.5, 5, 0)


def test_unknown_molecule_and_too_few_frames_are_rejected():
    with pytest.raises(ValidationError, match="'unobtainium' is neither a known molecule .* nor a valid SMILES"):
        GenerateMD(generate="md", molecules=["water", "unobtainium"])
    assert GenerateMD(generate="md", molecules=["Aspirin", "CCN"]).smiles() == [MOLECULES["aspirin"], "CCN"]
    with pytest.raises(RunError, match=r"frames \(1\) must be at least the number of molecules \(2\)"):
        md.generate_md([("water", "O"), ("ethanol", "CCO")], 1, 300.0, 5, 0.5, 10, 0)


def test_malonaldehyde_is_the_md17_enol_not_propanedial():
    """MD17's malonaldehyde is (Z)-3-hydroxyacrylaldehyde, the enol whose OH can bond to the C=O; propanedial
    (O=CCC=O) has the same formula C3H4O2, so only the structure tells them apart."""
    from rdkit import Chem
    from rdkit.Chem import rdMolDescriptors

    mol = Chem.MolFromSmiles(MOLECULES["malonaldehyde"])
    assert rdMolDescriptors.CalcMolFormula(mol) == "C3H4O2"
    assert mol.HasSubstructMatch(Chem.MolFromSmarts("[OX2H1][CX3]=[CX3][CX3]=[OX1]"))
    c_c = mol.GetSubstructMatch(Chem.MolFromSmarts("C=C"))
    assert mol.GetBondBetweenAtoms(*c_c).GetStereo() == Chem.BondStereo.STEREOZ  # the OH on the side of the C=O


def test_progress_bar_counts_frames(xtb, capsys):
    data, _ = md.generate_md([("water", "O")], 3, 300.0, 5, 0.5, 10, 0, progress=True)
    assert len(data) == 3
    assert "3/3" in capsys.readouterr().err


def test_the_ase_pin_excludes_releases_without_thermalize_momenta():
    """The dynamics draw their first velocities with ase.md.velocitydistribution.thermalize_momenta,
    which ASE added in 3.29.0: an older ASE would fail only when the data stage starts."""
    import tomllib

    from packaging.requirements import Requirement

    from tests.conftest import REPO

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    ase = next(pin for pin in map(Requirement, project["dependencies"]) if pin.name == "ase")
    assert ase.specifier.contains("3.29.0") and not ase.specifier.contains("3.28.0")


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.8])
def test_autocorrelation_time_of_an_ar1_process_is_one_plus_phi_over_one_minus_phi(phi):
    from scipy.signal import lfilter

    # 200,000 samples: the estimate's relative spread is about sqrt(2(2M + 1)/n) for a window M ≈ 5τ, 3% at φ = 0.8.
    series = lfilter([1.0], [1.0, -phi], np.random.default_rng(0).normal(size=200_000))
    assert md.autocorrelation_time(series) == pytest.approx((1 + phi) / (1 - phi), rel=0.1)
    assert md.autocorrelation_time(series[:7]) is None and md.autocorrelation_time(np.ones(20)) == 1.0


def test_correlated_frames_are_named_with_the_stride_that_would_decorrelate_them(generated):
    _, counts = generated
    assert all(m["energy_autocorrelation_frames"] is not None for m in counts["molecules"])
    notes = md.correlation_notes([{"name": "ethanol", "energy_autocorrelation_frames": 3.2},
                                  {"name": "water", "energy_autocorrelation_frames": 1.1}], stride=10, timestep_fs=0.5)
    assert notes == ["ethanol: energies stay correlated over 3 kept frames (16 fs), so a random split puts test "
                     "frames beside training ones and a data size counts correlated frames; for independent "
                     "frames raise data.source.stride to about 32"]
