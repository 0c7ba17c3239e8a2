"""A force-field train cell's model folder as an ASE calculator: it gives the energies and forces of the module
the cell saved, and refuses what that module cannot answer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.md.verlet import VelocityVerlet

from chemspec.errors import InputError
from chemspec.runtime.calculator import ForceFieldCalculator
from chemspec.runtime.ff_models import FAMILIES
from chemspec.runtime.forcefield import ForceField
from chemspec.runtime.neighbours import MAX_Z, ForceFieldDataset
from tests.unit.test_forcefield import ETHANOL_R, ETHANOL_Z, atoms

SHAPE = {"width": 8, "depth": 2, "cutoff": 5.0, "n_rbf": 16}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # the device tool runs this file on an H100 too


def saved(folder, family: str, dtype: torch.dtype = torch.float32) -> ForceField:
    """A module as a train cell saves it (model.pt and config.json in `folder`), with references for H, C, O."""
    torch.manual_seed(0)
    shift = torch.zeros(MAX_Z, dtype=torch.float64)
    shift[[1, 6, 8]] = torch.tensor([-13.6, -1029.8, -2041.3], dtype=torch.float64)
    module = ForceField(FAMILIES[family](*SHAPE.values()), energy_shift=shift).to(dtype).eval()
    folder.mkdir()
    torch.save(module.state_dict(), folder / "model.pt")
    (folder / "config.json").write_text(json.dumps({"family": family, **SHAPE}))
    return module


@pytest.mark.parametrize("family", ["schnet", "painn"])
def test_the_calculator_gives_the_saved_modules_energy_and_forces(tmp_path, family):
    module = saved(tmp_path / "model", family)
    ethanol = Atoms(numbers=ETHANOL_Z, positions=ETHANOL_R)
    ethanol.calc = ForceFieldCalculator(tmp_path / "model", device=DEVICE)
    energy, forces = module(ForceFieldDataset(atoms((ETHANOL_Z, ETHANOL_R)), SHAPE["cutoff"]).collate([0]))
    exact = DEVICE == "cpu"  # the same kernels; a GPU's float32 sums in another order
    assert ethanol.get_potential_energy() == pytest.approx(float(energy[0].detach()), rel=1e-12 if exact else 1e-7)
    np.testing.assert_allclose(ethanol.get_forces(), forces.detach().numpy(), rtol=1e-6 if exact else 1e-4,
                               atol=1e-9 if exact else 1e-5)
    assert ethanol.get_potential_energy() == pytest.approx(2 * -1029.8 - 2041.3 + 6 * -13.6, abs=50)


def test_a_cell_trained_in_float64_answers_in_float64(tmp_path):
    module = saved(tmp_path / "model", "painn", torch.float64)
    ethanol = Atoms(numbers=ETHANOL_Z, positions=ETHANOL_R)
    ethanol.calc = ForceFieldCalculator(tmp_path / "model")
    batch = ForceFieldDataset(atoms((ETHANOL_Z, ETHANOL_R)), SHAPE["cutoff"], torch.float64).collate([0])
    energy, forces = module(batch)
    assert {p.dtype for p in ethanol.calc.module.parameters()} == {torch.float64}
    assert ethanol.get_potential_energy() == float(energy[0].detach())
    np.testing.assert_array_equal(ethanol.get_forces(), forces.detach().numpy())


def test_ase_runs_md_on_it(tmp_path):
    saved(tmp_path / "model", "painn")
    ethanol = Atoms(numbers=ETHANOL_Z, positions=ETHANOL_R)
    ethanol.calc = ForceFieldCalculator(tmp_path / "model")
    start = ethanol.get_positions().copy()
    VelocityVerlet(ethanol, timestep=0.2 * units.fs).run(5)
    assert not np.allclose(ethanol.get_positions(), start) and np.isfinite(ethanol.get_forces()).all()


def test_an_element_the_cell_never_trained_on_and_a_folder_without_a_model_are_refused(tmp_path):
    saved(tmp_path / "model", "painn")
    ammonia = Atoms("NH3", positions=[[0, 0, 0], [0.94, 0, -0.38], [-0.47, 0.81, -0.38], [-0.47, -0.81, -0.38]])
    ammonia.calc = ForceFieldCalculator(tmp_path / "model")
    with pytest.raises(InputError, match=r"elements \[7\] occur in no structure this force field trained on"):
        ammonia.get_potential_energy()
    (tmp_path / "model" / "model.pt").unlink()
    with pytest.raises(InputError, match=r"model\.pt is missing, so .*model holds no trained force field"):
        ForceFieldCalculator(tmp_path / "model")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model.pt").write_bytes(b"")
    (tmp_path / "other" / "config.json").write_text(json.dumps({"family": "painn", "width": 8}))
    with pytest.raises(InputError, match=r"config\.json does not give a force field's family and shape"):
        ForceFieldCalculator(tmp_path / "other")


def test_periodic_atoms_a_charge_it_cannot_see_and_a_device_it_has_not_are_refused(tmp_path):
    saved(tmp_path / "model", "painn")
    calculator = ForceFieldCalculator(tmp_path / "model")
    cases = [({"pbc": True, "cell": [3.0, 3.0, 3.0]}, {}, r"the atoms are periodic \(pbc\)"),
             ({}, {"charge": 1, "multiplicity": 2}, r"charge 1, multiplicity 2 in atoms.info: this force field sees "
                                                    r"no charge or spin")]
    for options, info, said in cases:
        ethanol = Atoms(numbers=ETHANOL_Z, positions=ETHANOL_R, info=info, calculator=calculator, **options)
        with pytest.raises(InputError, match=said):
            ethanol.get_potential_energy()
    with pytest.raises(InputError, match=r"device 'gpu' is not a torch device"):
        ForceFieldCalculator(tmp_path / "model", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match=r"device 'cuda': this machine's torch sees no CUDA GPU"):
            ForceFieldCalculator(tmp_path / "model", device="cuda")


def saved_with_charge_spin(folder) -> None:
    torch.manual_seed(0)
    shift = torch.zeros(MAX_Z, dtype=torch.float64)
    shift[[1, 6, 8]] = torch.tensor([-13.6, -1029.8, -2041.3], dtype=torch.float64)
    module = ForceField(FAMILIES["spookynet"](*SHAPE.values(), charge_spin=True), energy_shift=shift).eval()
    with torch.no_grad():  # the embeddings' output layers start at zero, as trained weights do not stay
        for name, parameter in module.named_parameters():
            if "_embedding." in name and name.endswith("linear.weight"):
                parameter.normal_(std=0.5)
    folder.mkdir()
    torch.save(module.state_dict(), folder / "model.pt")
    (folder / "config.json").write_text(json.dumps({"family": "spookynet", **SHAPE, "charge_spin": True}))


def test_a_new_charge_or_multiplicity_in_atoms_info_is_computed_not_answered_from_the_last_state(tmp_path):
    """ASE compares positions, numbers, cell and pbc, not atoms.info: the cation's energy on the same Atoms
    object is the one a fresh calculator gives, not the neutral molecule's again."""
    saved_with_charge_spin(tmp_path / "spooky")
    ethanol = Atoms(numbers=ETHANOL_Z, positions=ETHANOL_R, calculator=ForceFieldCalculator(tmp_path / "spooky"))
    neutral = ethanol.get_potential_energy()
    ethanol.info.update(charge=1, multiplicity=2)
    cation = ethanol.get_potential_energy()
    fresh = Atoms(numbers=ETHANOL_Z, positions=ETHANOL_R, info={"charge": 1, "multiplicity": 2},
                  calculator=ForceFieldCalculator(tmp_path / "spooky"))
    assert cation == fresh.get_potential_energy() and cation != neutral
    ethanol.info.clear()
    assert ethanol.get_potential_energy() == neutral

    saved(tmp_path / "painn", "painn")
    ethanol.calc = ForceFieldCalculator(tmp_path / "painn")
    ethanol.get_potential_energy()
    ethanol.info.update(charge=-1, multiplicity=2)
    with pytest.raises(InputError, match=r"charge -1, multiplicity 2 in atoms.info: this force field sees no charge"):
        ethanol.get_potential_energy()


def test_a_state_the_electrons_cannot_have_and_atoms_without_atoms_are_refused(tmp_path):
    saved_with_charge_spin(tmp_path / "spooky")
    calculator = ForceFieldCalculator(tmp_path / "spooky")
    cases = [({"multiplicity": 2}, r"atoms.info: charge 0 leaves 26 electrons, which cannot have multiplicity 2"),
             ({"charge": 1.5}, r"atoms.info: charge 1.5 must be a whole number"),
             ({"multiplicity": 0}, r"atoms.info: multiplicity 0 must be a whole number from 1")]
    for info, said in cases:
        ethanol = Atoms(numbers=ETHANOL_Z, positions=ETHANOL_R, info=info, calculator=calculator)
        with pytest.raises(InputError, match=said + r".*; set atoms.info\['charge'\] and atoms.info\['multiplicity'\]"):
            ethanol.get_potential_energy()
    with pytest.raises(InputError, match=r"the atoms hold no atom; give a structure of at least one atom"):
        Atoms(calculator=calculator).get_potential_energy()
    hydroxyl = Atoms("OH", positions=[[0, 0, 0], [0.97, 0, 0]], calculator=calculator)
    with pytest.raises(InputError, match=r"charge 0 leaves 9 electrons, which cannot have multiplicity 1 "
                                         r"\(0 unpaired\) "
                                         r"\(neither is given, so it reads as a neutral singlet\)"):
        hydroxyl.get_potential_energy()
    hydroxyl.info["multiplicity"] = 2
    assert np.isfinite(hydroxyl.get_potential_energy())
    saved(tmp_path / "painn", "painn")
    radical = Atoms("OH", positions=[[0, 0, 0], [0.97, 0, 0]], calculator=ForceFieldCalculator(tmp_path / "painn"))
    assert np.isfinite(radical.get_potential_energy()), "a model without charge_spin reads it as it trained on it"
