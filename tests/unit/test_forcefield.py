"""Force fields: symmetries, autograd forces, batching, registry, LR-plateau stop, and overfitting.

The physics tests run in float64 on models whose parameters all carry small seeded noise (SpookyNet
zero-initialises layers, so an untouched model would pass them vacuously). Labels come from an
element-pair Morse potential, differentiated by autograd, so the label forces are exact.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from chemspec.errors import RunError
from chemspec.runtime import neighbours
from chemspec.runtime.atoms import AtomsData
from chemspec.runtime.ff_models import FAMILIES
from chemspec.runtime.forcefield import ForceField
from chemspec.runtime.forcefield_train import baseline_errors, energy_reference, prior_energies, train_forcefield
from chemspec.runtime.neighbours import ForceFieldDataset, neighbour_pairs

FIT_FORCE_MAE_FRACTION = 0.10
"""Overfitting passes when the training-set force MAE is below this fraction of the label force std
(predicting zero forces scores about 0.8)."""
FIT_EPOCHS, FIT_BATCH, FIT_LR = 80, 10, 3e-3
"""Overfitting budget: 80 epochs of 5 steps, 10-30 s per model on one slow CPU thread. At 40 epochs SpookyNet's
force MAE ranged 0.06-0.42 of the label std over seeds 0-3 (the bound sat inside seed noise); at 80, 0.05-0.09."""
CUTOFF, N_RBF, WIDTH, DEPTH = 5.0, 16, 16, 2

SPOOKY = pytest.param("spookynet", marks=pytest.mark.skipif(
    importlib.util.find_spec("chemspec.runtime.spookynet") is None,
    reason="chemspec.runtime.spookynet not present"))
ALL = ["schnet", "painn", SPOOKY]

ETHANOL_Z = np.array([6, 6, 8, 1, 1, 1, 1, 1, 1])
ETHANOL_R = np.array([[1.1879, -0.3829, 0.0], [0.0, 0.5526, 0.0], [-1.1867, -0.2472, 0.0],
                      [-1.9237, 0.3850, 0.0], [2.0985, 0.2306, 0.0], [1.1184, -1.0093, 0.8869],
                      [1.1184, -1.0093, -0.8869], [0.0227, 1.1812, 0.8852], [0.0227, 1.1812, -0.8852]])
WATER_Z = np.array([8, 1, 1])
WATER_R = np.array([[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]])
RADIUS = {1: 0.31, 6: 0.76, 8: 0.66}
pytestmark = pytest.mark.usefixtures("one_thread")


def morse(numbers: np.ndarray, positions: np.ndarray, depth: float = 1.0, a: float = 1.8):
    """Sum over atom pairs of a Morse potential with r0 = sum of covalent radii; (energy, forces)."""
    r = torch.tensor(positions, dtype=torch.float64, requires_grad=True)
    r0 = torch.tensor([RADIUS[int(z)] for z in numbers], dtype=torch.float64)
    i, j = torch.triu_indices(len(numbers), len(numbers), 1)
    e = (depth * ((1 - torch.exp(-a * ((r[i] - r[j]).norm(dim=1) - r0[i] - r0[j]))) ** 2 - 1)).sum()
    (grad,) = torch.autograd.grad(e, r)
    return e.item(), -grad.numpy()


def atoms(*molecules) -> AtomsData:
    """AtomsData of (numbers, positions) molecules labelled by `morse`."""
    labels = [morse(z, r) for z, r in molecules]
    sizes = [len(z) for z, _ in molecules]
    return AtomsData(np.concatenate([z for z, _ in molecules]), np.concatenate([r for _, r in molecules]),
                     np.concatenate([f for _, f in labels]), np.array([e for e, _ in labels]),
                     np.concatenate([[0], np.cumsum(sizes)]))


def ethanols(n: int, seed: int = 0, sigma: float = 0.05) -> AtomsData:
    rng = np.random.default_rng(seed)
    return atoms(*[(ETHANOL_Z, ETHANOL_R + rng.normal(0, sigma, ETHANOL_R.shape)) for _ in range(n)])


def batch_of(data: AtomsData) -> dict[str, torch.Tensor]:
    dataset = ForceFieldDataset(data, CUTOFF, torch.float64)
    return dataset.collate(list(range(len(dataset))))


def noisy_module(family: str, seed: int = 0, noise: float = 0.1) -> ForceField:
    torch.manual_seed(seed)
    model = FAMILIES[family](WIDTH, DEPTH, CUTOFF, N_RBF).double()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(noise * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return ForceField(model).double()


def rotation(seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


@pytest.mark.parametrize("family", ALL)
def test_energy_invariant_forces_equivariant(family):
    module = noisy_module(family)
    batch = batch_of(ethanols(1, seed=3))
    energy, forces = module(batch)
    assert forces.abs().max() > 1e-3, "forces are ~0: the test would be vacuous"
    turn = rotation(7)
    moved = {**batch, "positions": batch["positions"] @ turn.T + torch.tensor([3.0, -1.5, 20.0])}
    energy_moved, forces_moved = module(moved)
    torch.testing.assert_close(energy_moved, energy, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(forces_moved, forces @ turn.T, rtol=1e-9, atol=1e-10)

    order = np.random.default_rng(1).permutation(len(ETHANOL_Z))
    data = ethanols(1, seed=3)
    permuted = batch_of(atoms((data.numbers[order], data.positions[order])))
    energy_permuted, forces_permuted = module(permuted)
    torch.testing.assert_close(energy_permuted, energy, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(forces_permuted, forces[torch.as_tensor(order)], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("family", ALL)
def test_forces_are_central_differences_of_the_energy(family):
    module = noisy_module(family, seed=2)
    batch = batch_of(ethanols(1, seed=4))
    _, forces = module(batch)
    h, numeric = 1e-4, torch.zeros_like(forces)
    for atom in range(forces.shape[0]):
        for axis in range(3):
            energies = []
            for step in (h, -h):
                positions = batch["positions"].clone()
                positions[atom, axis] += step
                energies.append(module({**batch, "positions": positions})[0].item())
            numeric[atom, axis] = -(energies[0] - energies[1]) / (2 * h)
    torch.testing.assert_close(forces, numeric, rtol=1e-5, atol=1e-5 * forces.abs().max().item())


@pytest.mark.parametrize("family", ALL)
def test_molecules_in_one_batch_do_not_interact(family):
    """Water placed on top of ethanol: any pair across molecules would change both energies."""
    module = noisy_module(family, seed=5)
    ethanol = (ETHANOL_Z, ETHANOL_R)
    water = (WATER_Z, WATER_R + np.array([0.1, 0.4, 0.2]))
    energy, forces = module(batch_of(atoms(ethanol, water)))
    alone = [module(batch_of(atoms(m))) for m in (ethanol, water)]
    torch.testing.assert_close(energy, torch.cat([e for e, _ in alone]), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(forces, torch.cat([f for _, f in alone]), rtol=1e-9, atol=1e-10)


def test_neighbour_lists_are_built_once_and_offset_in_batches(monkeypatch):
    data = atoms((ETHANOL_Z, ETHANOL_R), (WATER_Z, WATER_R), (ETHANOL_Z, ETHANOL_R * 1.8))
    dataset = ForceFieldDataset(data, 3.0)

    def refuse(*args, **kwargs):
        raise AssertionError("neighbour list recomputed after the dataset was built")

    monkeypatch.setattr(neighbours, "neighbour_pairs", refuse)
    batch = dataset.collate([2, 0])
    for _ in range(2):
        assert sum(len(b["energy"]) for b in dataset.loader(2, shuffle=True)) == 3
    positions = batch["positions"].double()
    expected = set()
    for m, (start, stop) in enumerate([(0, 9), (9, 18)]):
        distance = torch.cdist(positions[start:stop], positions[start:stop])
        expected |= {(start + i, start + j) for i, j in zip(*np.nonzero(distance.numpy() < 3.0)) if i != j}
    assert set(zip(batch["idx_i"].tolist(), batch["idx_j"].tolist())) == expected
    assert len(expected) < 2 * 9 * 8, "the stretched ethanol should lose some pairs at a 3 Å cutoff"
    assert batch["batch"].tolist() == [0] * 9 + [1] * 9
    torch.testing.assert_close(batch["energy"], torch.as_tensor(data.energy[[2, 0]]))
    i, j = neighbour_pairs(WATER_R, 1.0)
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 1), (0, 2), (1, 0), (2, 0)]


def test_registry_miss_lists_the_families():
    with pytest.raises(RunError, match=r"unknown force-field family 'mace'; families are painn, schnet, spookynet"):
        FAMILIES["mace"]
    data = ethanols(2)
    with pytest.raises(RunError, match=r"unknown force-field family 'nequip'.*painn, schnet, spookynet"):
        train_forcefield("nequip", 8, 1, CUTOFF, 8, data, data, data, {"learning_rate": 1e-3, "batch_size": 2}, 1)


def test_energy_shift_adds_per_element_references():
    peroxide = (np.array([8, 8, 1, 1]), np.array([[0, 0, 0], [1.45, 0, 0], [-0.3, 0.9, 0], [1.75, 0, 0.9]]))
    mixture = [(ETHANOL_Z, ETHANOL_R), (WATER_Z, WATER_R), peroxide, (np.array([1, 1]), np.eye(2, 3))]
    reference = {1: -13.6, 6: -1029.5, 8: -2041.3}
    data = atoms(*mixture)
    data = AtomsData(data.numbers, data.positions, data.forces,
                     np.array([sum(reference[int(z)] for z in m[0]) for m in mixture]), data.offsets)
    fitted = energy_reference(data, per_element=True)
    zero_forces = {"force_mae_meV_per_A": round(1000 * np.abs(data.forces).mean(), 3)}
    assert baseline_errors(data, data) == {"energy_mae_meV": 0.0, **zero_forces}
    assert baseline_errors(data, data, energies=False) == zero_forces, "a loss on forces alone"
    torch.testing.assert_close(fitted[[1, 6, 8]], torch.tensor([-13.6, -1029.5, -2041.3], dtype=torch.float64))
    assert energy_reference(data) == pytest.approx(data.energy.sum() / len(data.numbers))

    module = noisy_module("schnet")
    shifted = ForceField(module.model, energy_shift=fitted).double()
    batch = batch_of(data)
    (plain, forces), (moved, forces_shifted) = module(batch), shifted(batch)
    torch.testing.assert_close(moved - plain, torch.as_tensor(data.energy))
    torch.testing.assert_close(forces_shifted, forces)
    with pytest.raises(RunError, match=r"energy_shift must be a float or a \[100\] per-element tensor"):
        ForceField(module.model, energy_shift=torch.zeros(3))


@pytest.mark.parametrize("family", ALL)
def test_references_are_fitted_on_what_spookynets_zbl_term_leaves(family):
    """SpookyNet's ZBL repulsion gives ethanol about 28 eV before any training; references fitted on the raw
    energies left every energy that far off until the element biases had learnt to cancel it. SchNet and
    PaiNN have no such term."""
    reference = {1: -13.6, 6: -1029.5, 8: -2041.3}
    frames = [ETHANOL_R + np.random.default_rng(seed).normal(0, 0.05, ETHANOL_R.shape) for seed in range(6)]
    data = atoms(*[(ETHANOL_Z, r) for r in frames], *[(WATER_Z, WATER_R)] * 4)
    totals = [data.energy[s] + sum(reference[int(z)] for z in data.numbers[data.offsets[s]:data.offsets[s + 1]])
              for s in range(len(data))]
    data = AtomsData(data.numbers, data.positions, data.forces, np.array(totals), data.offsets)
    model = FAMILIES[family](WIDTH, DEPTH, CUTOFF, N_RBF).double()
    prior = prior_energies(model, ForceFieldDataset(data, CUTOFF, torch.float64))
    if family != "spookynet":
        assert prior is None
        return
    assert prior.min() > 10, "the ZBL term is tens of eV: without it taken off, the test would be vacuous"
    errors = {}
    for name, taken_off in (("fitted on E - ZBL", prior), ("fitted on E", None)):
        module = ForceField(model, energy_shift=energy_reference(data, per_element=True, prior=taken_off)).double()
        errors[name] = (module(batch_of(data))[0] - torch.as_tensor(data.energy)).abs()
    assert errors["fitted on E - ZBL"].mean() < 1.0 and errors["fitted on E"].min() > 10, errors


def test_an_element_of_validation_or_test_absent_from_training_is_refused():
    """Per-element references fitted on water give carbon none, so ethanol's energies would be off by its
    two carbons' ~2000 eV: refused before training."""
    water, ethanol, hp = atoms(*[(WATER_Z, WATER_R)] * 3), ethanols(3), {"learning_rate": 1e-3, "batch_size": 3}
    with pytest.raises(RunError, match=r"elements \[6\] of the validation split occur in no training structure: a "
                                       r"model never sees them, and no reference energy is fitted for them \(the "
                                       r"training split holds 3\); train on more structures \(data.sizes, or "
                                       r"hpo.tpe.data_size for TPE cells\)"):
        train_forcefield("schnet", 8, 1, CUTOFF, 8, water, ethanol, water, hp, 1, energy_shift="per_element")
    with pytest.raises(RunError, match=r"elements \[6\] of the test split occur in no training structure"):
        train_forcefield("schnet", 8, 1, CUTOFF, 8, water, water, ethanol, hp, 1, energy_shift="per_element")


def test_spookynet_refuses_elements_beyond_radon_that_other_families_embed():
    hp = {"learning_rate": 1e-3, "batch_size": 2}
    water, francium = atoms((WATER_Z, WATER_R)), atoms((WATER_Z, WATER_R))
    francium = AtomsData(np.array([87, 1, 1]), francium.positions, francium.forces, francium.energy, francium.offsets)
    with pytest.raises(RunError, match=r"elements \[87\] are heavier than radon \(86\), where SpookyNet's table .*"
                                       r"train model.family schnet or painn"):
        train_forcefield("spookynet", 8, 1, CUTOFF, 8, water, water, francium, hp, 1)


def test_a_structure_with_coincident_atoms_is_refused_naming_it():
    broken = ethanols(3)
    positions = broken.positions.copy()
    positions[9 + 4] = positions[9 + 3] + [0.0, 0.0, 0.05]
    broken = AtomsData(broken.numbers, positions, broken.forces, broken.energy, broken.offsets)
    with pytest.raises(RunError, match=r"force-field data: structure 1 has two atoms 0\.05 Å apart, below 0\.1 Å: "
                                       r"coincident atoms make every model's forces NaN"):
        ForceFieldDataset(broken, CUTOFF)
    mixed = atoms((WATER_Z, WATER_R), (ETHANOL_Z, ETHANOL_R), (WATER_Z, np.zeros((3, 3))))
    with pytest.raises(RunError, match=r"structure 2 has two atoms 0 Å apart"):
        neighbours.check_atoms(mixed)


def test_a_cutoff_shorter_than_every_bond_is_refused_before_training():
    """At 0.1 Å no training structure has a neighbour pair: the model would predict zero forces and every
    cell would finish with the same force error, so the cell stops and says which setting to raise."""
    data, hp = ethanols(3), {"learning_rate": 1e-3, "batch_size": 3}
    with pytest.raises(RunError, match=r"model.cutoff 0.1 Å leaves no atom pair within reach in any of the 3 training "
                                       r"structures \(their closest atoms are 0.9\d+ Å apart\).*raise model.cutoff"):
        train_forcefield("schnet", 8, 1, 0.1, 8, data, data, data, hp, 1)
    metrics, _ = train_forcefield("schnet", 8, 1, 1.2, 8, data, data, data, hp, 1)
    assert metrics["epochs_trained"] == 1, "one C-H pair within reach is enough"


def test_plateau_at_min_lr_stops_training():
    """With a learning rate too small to move the loss, the plateau schedule (patience 0) cuts the rate
    to min_lr after the second epoch, and training stops there instead of running all 10 epochs."""
    data = ethanols(6)
    metrics, module = train_forcefield(
        "schnet", 8, 1, CUTOFF, 8, data, data, data, {"learning_rate": 1e-9, "batch_size": 3}, epochs=10,
        scheduler={"factor": 0.1, "patience": 0, "min_lr": 1e-10}, seed=1, precision="64-true")
    assert metrics["stop_reason"] == "min_lr"
    assert metrics["epochs"] == 10 and metrics["epochs_trained"] == 2
    assert len(metrics["step_losses"]) == 2 and len(metrics["val_history"]) == 2
    assert module.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-10)


def test_a_finished_run_reports_its_structures_per_second_and_a_stopped_one_none():
    data = ethanols(7)
    done, _ = train_forcefield("schnet", 8, 1, CUTOFF, 8, data, data, data, {"learning_rate": 1e-3, "batch_size": 3},
                               epochs=10, seed=1)
    assert done["steps"] == 30 and 0 < done["train_structures_per_s"] < float("inf")
    assert done["peak_gpu_memory_mb"] is None  # on a CPU
    stopped, _ = train_forcefield("schnet", 8, 1, CUTOFF, 8, data, data, data,
                                  {"learning_rate": 1e-3, "batch_size": 3}, epochs=10, seed=1, fault=("nan", 28))
    assert stopped["status"] == "diverged" and stopped["train_structures_per_s"] is None


def test_a_nan_loss_marks_the_run_diverged_with_its_step_and_stops_it():
    from chemspec.runtime.io import to_json

    data = ethanols(6)
    metrics, _ = train_forcefield("schnet", 8, 1, CUTOFF, 8, data, data, data, {"learning_rate": 1e-3, "batch_size": 2},
                                  epochs=10, seed=1, fault=("nan", 4))
    assert metrics["status"] == "diverged" and metrics["stop_reason"] == "diverged"
    assert metrics["divergence"]["step"] == metrics["steps"] == 4
    assert metrics["divergence"]["last_finite_loss"] == metrics["step_losses"][-1][-1]
    assert sum(map(len, metrics["step_losses"])) == 4 and metrics["epochs_trained"] == pytest.approx(4 / 3, abs=1e-4)
    assert metrics["val_loss"] is None and metrics["force_mae_meV_per_A"] is None
    assert b"NaN" not in to_json(metrics)


def test_a_loss_on_forces_alone_reports_no_energy_error():
    """Forces fix a model's energy only up to a constant, which a loss without its energy term never trains:
    its energy MAE measured that constant, and the fit gave it a power law (outside review)."""
    data = ethanols(6)
    metrics, _ = train_forcefield("schnet", 8, 1, CUTOFF, 8, data, data, data, {"learning_rate": 1e-3, "batch_size": 3},
                                  epochs=2, seed=1, loss={"kind": "l1", "energy": 0.0, "forces": 1.0})
    assert metrics["energy_mae_meV"] is metrics["energy_mae_per_atom_meV"] is None
    assert metrics["force_mae_meV_per_A"] > 0 and "energy_mae_meV" not in metrics["baseline"]


def test_test_errors_are_computed_under_the_autocast_validation_ran_under():
    data = ethanols(6)
    metrics, _ = train_forcefield("schnet", 8, 1, CUTOFF, 8, data, data, data, {"learning_rate": 1e-3, "batch_size": 3},
                                  epochs=2, seed=1, precision="bf16-mixed")
    assert metrics["test_loss"] == pytest.approx(metrics["val"]["loss"], rel=1e-9)
    assert metrics["force_mae_meV_per_A"] == pytest.approx(metrics["val"]["force_mae_meV_per_A"], rel=1e-9)


def test_sigterm_stops_a_force_field_cell_with_an_error_not_a_clean_exit():
    data = ethanols(6)
    with pytest.raises(RunError, match="stopped by SIGTERM after 2 steps.*trains it again from the start"):
        train_forcefield("schnet", 8, 1, CUTOFF, 8, data, data, data, {"learning_rate": 1e-3, "batch_size": 2},
                         epochs=10, seed=1, fault=("term", 2))


@pytest.mark.parametrize("family", ALL)
def test_overfits_fifty_structures(family):
    data = ethanols(50, seed=11)
    metrics, module = train_forcefield(
        family, WIDTH, DEPTH, CUTOFF, N_RBF, data, data, data,
        {"learning_rate": FIT_LR, "batch_size": FIT_BATCH}, epochs=FIT_EPOCHS,
        scheduler={"factor": 0.5, "patience": 20, "min_lr": 1e-5}, seed=0)
    label_std = float(data.forces.std())
    print(f"\n{family}: force MAE {metrics['force_mae_meV_per_A']:.1f} meV/Å = "
          f"{metrics['force_mae_meV_per_A'] / 1000 / label_std:.3f} × label std ({label_std:.3f} eV/Å); "
          f"energy MAE {metrics['energy_mae_meV']:.1f} meV; {metrics['wall_time_s']:.1f} s; "
          f"{metrics['params']} parameters")
    assert metrics["force_mae_meV_per_A"] / 1000 < FIT_FORCE_MAE_FRACTION * label_std
    assert metrics["stop_reason"] == "max_epochs" and metrics["epochs"] == metrics["epochs_trained"] == FIT_EPOCHS
    assert [len(epoch) for epoch in metrics["step_losses"]] == [50 // FIT_BATCH] * FIT_EPOCHS
    assert np.mean(metrics["step_losses"][-1]) < 0.2 * np.mean(metrics["step_losses"][0])
    assert metrics["capacity"] == WIDTH * DEPTH
    assert metrics["params"] == sum(p.numel() for p in module.model.parameters()) > 0
    assert metrics["val"]["force_mae_meV_per_A"] == pytest.approx(metrics["force_mae_meV_per_A"], rel=1e-3)
    nothing = metrics["baseline"]  # one molecule: the reference energies predict the mean energy
    assert nothing["energy_mae_meV"] == pytest.approx(1000 * np.abs(data.energy - data.energy.mean()).mean(), abs=1e-3)
    assert nothing["force_mae_meV_per_A"] == pytest.approx(1000 * np.abs(data.forces).mean(), abs=1e-3)
    assert metrics["force_mae_meV_per_A"] < 0.2 * nothing["force_mae_meV_per_A"]


def test_a_tpe_run_says_it_stopped_at_its_window_not_at_max_epochs():
    """A TPE cell's summary read `epochs=3, epochs_trained=1, stop_reason=max_epochs` (outside review)."""
    data = ethanols(20, seed=3)
    metrics, _ = train_forcefield("painn", WIDTH, DEPTH, CUTOFF, N_RBF, data, data, data,
                                  {"learning_rate": 1e-3, "batch_size": 10}, epochs=3, window=1 / 3, seed=0)
    assert (metrics["stop_reason"], metrics["steps"], metrics["epochs_trained"]) == ("window", 2, 1.0)

