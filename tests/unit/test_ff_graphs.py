"""Force-field training by CUDA graphs: padded batches of one shape, and a graphed step that trains as
the plain one does. On a CPU the step runs eagerly (the same padded path); on a GPU it is captured and
replayed, and the same tests check the replay."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chemspec.compiler import expand, identity
from chemspec.errors import RunError, SpecError
from chemspec.runtime.forcefield_train import energy_reference, train_forcefield
from chemspec.runtime.neighbours import PAD_ATOMS, PAD_PAIRS_PER_ATOM, ForceFieldDataset
from chemspec.specs import load_study
from tests.conftest import QUICKSTART
from tests.unit.test_forcefield import ALL, CUTOFF, ETHANOL_R, ETHANOL_Z, WATER_R, WATER_Z, atoms, noisy_module

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


def mixed(n: int, seed: int = 0):
    """Ethanols and waters alternating, jiggled: batches of several atom and pair counts."""
    rng = np.random.default_rng(seed)
    molecules = [(ETHANOL_Z, ETHANOL_R) if k % 2 else (WATER_Z, WATER_R) for k in range(n)]
    return atoms(*[(z, r + rng.normal(0, 0.05, r.shape)) for z, r in molecules])


@pytest.mark.parametrize("family", ALL)
def test_a_padded_batch_has_the_loss_and_gradients_of_the_real_one(family):
    data = mixed(7)
    dataset = ForceFieldDataset(data, CUTOFF, torch.float64)
    module = noisy_module(family)
    chosen = [0, 3, 5]  # a short last batch: 3 structures in slots for 5
    plain = dataset.collate(chosen)
    padded = dataset.collate_padded(chosen, 5, dataset.padded_shape(5))
    results = []
    for batch in (plain, padded):
        module.zero_grad()
        loss = module._errors(batch, create_graph=True)[0]
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in module.parameters() if p.grad is not None]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-12, atol=0)
    assert len(grads_a) == len(grads_b) > 0
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


def test_padded_batches_of_an_epoch_share_one_shape_and_hold_every_structure_once():
    data = mixed(11)
    dataset = ForceFieldDataset(data, CUTOFF)
    batches = list(dataset.loader(4, shuffle=True, seed=3, padded=True))
    assert len(batches) == 3
    for batch in batches:
        assert_padding_pairs_spread(batch)
    assert len({tuple((k, tuple(v.shape)) for k, v in sorted(b.items())) for b in batches}) == 1
    assert sum(int(b["molecule_weight"].sum()) for b in batches) == 11
    assert sum(int(b["atom_weight"].sum()) for b in batches) == len(data.numbers)
    last = batches[-1]
    assert last["molecule_weight"].tolist() == [1, 1, 1, 0, 0]
    pad = last["idx_i"][last["atom_weight"][last["idx_i"]] == 0]
    assert len(pad) > 0
    distance = (last["positions"][last["idx_j"]] - last["positions"][last["idx_i"]]).norm(dim=1)
    assert distance[last["atom_weight"][last["idx_i"]] == 0].min() > CUTOFF


def test_a_runs_padded_shape_is_its_largest_batch_not_any_batch():
    """One ethanol to five waters: over three epochs no batch of 4 draws four ethanols, so the run's
    shape is smaller than the any-batch bound, yet every batch of those epochs fits it."""
    rng = np.random.default_rng(0)
    data = atoms(*[(ETHANOL_Z, ETHANOL_R) if k % 6 == 0 else (WATER_Z, WATER_R + rng.normal(0, 0.05, WATER_R.shape))
                   for k in range(30)])
    dataset = ForceFieldDataset(data, CUTOFF)
    loader = dataset.loader(4, shuffle=True, seed=1, padded=True, epochs=3)
    atoms_shape, pairs_shape = loader.collate_fn.keywords["shape"]
    any_atoms, any_pairs = dataset.padded_shape(4)
    assert atoms_shape < any_atoms and pairs_shape < any_pairs
    real, spare = [], []
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            assert batch["positions"].shape == (atoms_shape, 3) and batch["idx_i"].shape == (pairs_shape,)
            real.append(int(batch["atom_weight"].sum()))
            padding_pairs = int((batch["atom_weight"][batch["idx_i"]] == 0).sum())
            spare.append(atoms_shape - real[-1] - max(PAD_ATOMS, -(-padding_pairs // PAD_PAIRS_PER_ATOM)))
            assert_padding_pairs_spread(batch)
    assert len(real) == 24 and sum(real) == 3 * len(data.numbers)
    assert min(spare) == 0


def assert_padding_pairs_spread(batch):
    """No padding atom ends more than PAD_PAIRS_PER_ATOM padding pairs: GPU atomics into one row serialise."""
    padding = batch["atom_weight"][batch["idx_i"]] == 0
    for ends in (batch["idx_i"][padding], batch["idx_j"][padding]):
        assert len(ends) == 0 or int(torch.bincount(ends).max()) <= PAD_PAIRS_PER_ATOM


def test_a_batch_beyond_the_padded_shape_is_refused_naming_the_shape():
    dataset = ForceFieldDataset(mixed(6), CUTOFF)
    with pytest.raises(RunError, match="does not fit the padded shape of 2 structures"):
        dataset.collate_padded([0, 1, 2], 2, dataset.padded_shape(2))


@pytest.mark.parametrize("family", ALL)
def test_graphed_training_follows_plain_training(family):
    """Same losses step by step, the plateau schedule's cut (patience 0) and gradient clipping included. The
    mean energy is the shift, SpookyNet's ZBL term not taken off, so that its validation loss stalls and
    the schedule cuts within the 6 epochs. On a CPU both run in float64: the padded batches sum in another
    order, and in float32 PaiNN's runs drifted 0.5% apart by the last epoch on one machine and not on another."""
    data = mixed(12)
    runs = {}
    for graphs in (False, True):
        runs[graphs] = train_forcefield(
            family, 16, 2, CUTOFF, 8, data, data, data, {"learning_rate": 3e-2, "batch_size": 5}, epochs=6,
            scheduler={"factor": 0.5, "patience": 0, "min_lr": 1e-7}, gradient_clip=0.5, seed=2,
            energy_shift=energy_reference(data), precision="32-true" if DEVICE.type == "cuda" else "64-true",
            accelerator="gpu" if DEVICE.type == "cuda" else "cpu", cuda_graphs=graphs)
    (plain, _), (graphed, module) = runs[False], runs[True]
    assert graphed["steps"] == plain["steps"] == 18
    # A GPU's index_add sums in no fixed order, so runs there drift apart at this rate (spikes in epoch
    # 2): graphed and plain differed by 2.0% at step 18 on an H200. On a CPU, in float64, by 4e-13 at most.
    rtol = 5e-2 if DEVICE.type == "cuda" else 1e-9
    np.testing.assert_allclose(sum(graphed["step_losses"], []), sum(plain["step_losses"], []), rtol=rtol)
    np.testing.assert_allclose(graphed["val_history"], plain["val_history"], rtol=rtol)
    assert graphed["force_mae_meV_per_A"] == pytest.approx(plain["force_mae_meV_per_A"], rel=rtol)
    rate = module.trainer.optimizers[0].param_groups[0]["lr"]
    assert float(rate) < 3e-2, "the plateau schedule cut the rate"
    assert (module.graphed.graph is not None) == (DEVICE.type == "cuda")
    if module.graphed.graph is not None:
        assert rate is module.graphed.rates[0], "the rate the graph reads is the one the schedule cut"
    for run in (plain, graphed):  # 18 steps: timed from step 5, after the graph's capture in step 4
        assert run["train_structures_per_s"] > 0
        assert (run["peak_gpu_memory_mb"] > 0) if DEVICE.type == "cuda" else run["peak_gpu_memory_mb"] is None


def test_a_force_field_study_may_ask_for_cuda_graphs_and_its_cells_carry_it(tmp_path):
    text = (QUICKSTART.parent / "quickstart-nff.yaml").read_text()
    (tmp_path / "graphs.yaml").write_text(text.replace("\ntraining:\n", "\ntraining:\n  compile: cuda-graphs\n"))
    graphed = expand(load_study(tmp_path / "graphs.yaml"))
    plain = expand(load_study(QUICKSTART.parent / "quickstart-nff.yaml"))
    key = next(iter(graphed.train))
    assert graphed.train[key].training.compile == "cuda-graphs"
    assert identity(graphed.train[key]) != identity(plain.train[key])


def test_a_nan_fault_under_cuda_graphs_diverges_at_the_step_it_names_as_plain_training_does():
    data = mixed(6)
    for graphs in (False, True):
        metrics, _ = train_forcefield("schnet", 8, 1, CUTOFF, 8, data, data, data,
                                      {"learning_rate": 1e-3, "batch_size": 2}, epochs=10, seed=1, fault=("nan", 4),
                                      accelerator="gpu" if DEVICE.type == "cuda" else "cpu", cuda_graphs=graphs)
        assert metrics["status"] == "diverged" and metrics["divergence"]["step"] == metrics["steps"] == 4, graphs


def test_fp16_loss_scaling_with_cuda_graphs_is_refused_for_force_fields(tmp_path):
    text = (QUICKSTART.parent / "quickstart-nff.yaml").read_text()
    (tmp_path / "s.yaml").write_text(text.replace("precision: 32-true", "precision: 16-mixed\n  compile: cuda-graphs"))
    with pytest.raises(SpecError, match=r"training.precision: 16-mixed scales the loss outside the step that "
                                        r"cuda-graphs records for model.family 'painn'"):
        load_study(tmp_path / "s.yaml")
