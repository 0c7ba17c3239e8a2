"""SpookyNet: symmetries, forces, batching, ZBL, size and trainability, in float64 on small molecules.

A fresh SpookyNet is nearly constant (zero-initialised embeddings and last layers), so the physics tests
use a model whose parameters all carry small seeded noise."""

from __future__ import annotations

import pytest
import torch

from chemspec.runtime.spookynet import SpookyNet, neighbour_pairs
from chemspec.runtime.spookynet_blocks import orthogonal_random_features
from chemspec.specs.model import BOHR

ETHANOL_Z = [6, 6, 8, 1, 1, 1, 1, 1, 1]
ETHANOL_R = [[1.1879, -0.3829, 0.0000], [0.0000, 0.5526, 0.0000], [-1.1867, -0.2472, 0.0000],
             [-1.9237, 0.3850, 0.0000], [2.0985, 0.2306, 0.0000], [1.1184, -1.0093, 0.8869],
             [1.1184, -1.0093, -0.8869], [0.0227, 1.1812, 0.8852], [0.0227, 1.1812, -0.8852]]
WATER_Z = [8, 1, 1]
WATER_R = [[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]]
CUTOFF = 10 * BOHR


@pytest.fixture(autouse=True)
def float64_single_thread():
    """float64 throughout; one intra-op thread, since these tiny ops run many times slower when threads
    contend for a busy shared CPU."""
    previous_dtype, previous_threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(previous_dtype)
    torch.set_num_threads(previous_threads)


def make_model(seed: int = 0, noise: float = 0.2, **options) -> SpookyNet:
    torch.manual_seed(seed)
    model = SpookyNet(num_features=16, num_modules=2, **options)
    if noise:
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(noise * torch.randn(parameter.shape, generator=generator))
    return model


@pytest.fixture(scope="module")
def model() -> SpookyNet:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return make_model(electrostatics=True)
    finally:
        torch.set_default_dtype(previous)


def molecules(*parts):
    """(numbers, positions, batch, n_molecules) for a list of (Z list, R list) molecules."""
    numbers = torch.tensor([z for zs, _ in parts for z in zs])
    positions = torch.tensor([r for _, rs in parts for r in rs])
    batch = torch.tensor([m for m, (zs, _) in enumerate(parts) for _ in zs])
    return numbers, positions, batch, len(parts)


def energy(model, numbers, positions, batch, n_molecules):
    idx_i, idx_j = neighbour_pairs(positions, batch, CUTOFF)
    return model(numbers, positions, idx_i, idx_j, batch, n_molecules)


def forces(model, numbers, positions, batch, n_molecules):
    positions = positions.clone().requires_grad_(True)
    total = energy(model, numbers, positions, batch, n_molecules).sum()
    return -torch.autograd.grad(total, positions, create_graph=True)[0]


def random_rotation(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed)))
    return q


def test_neighbour_pairs_stay_within_molecules_and_cutoff():
    numbers, positions, batch, _ = molecules((ETHANOL_Z, ETHANOL_R), (WATER_Z, WATER_R))
    idx_i, idx_j = neighbour_pairs(positions, batch, 2.0)
    assert (idx_i != idx_j).all() and (batch[idx_i] == batch[idx_j]).all()
    assert ((positions[idx_i] - positions[idx_j]).norm(dim=1) < 2.0).all()
    assert set(zip(idx_i.tolist(), idx_j.tolist())) == set(zip(idx_j.tolist(), idx_i.tolist()))


def test_perturbed_network_depends_on_geometry(model):
    numbers, positions, batch, n = molecules((ETHANOL_Z, ETHANOL_R))
    idx_i, idx_j = neighbour_pairs(positions, batch, CUTOFF)
    stretched = positions * 1.05
    atomic = model.atomic_outputs(numbers, positions, idx_i, idx_j, batch, n)[0].sum()
    atomic_stretched = model.atomic_outputs(numbers, stretched, idx_i, idx_j, batch, n)[0].sum()
    assert abs((atomic - atomic_stretched).item()) > 1e-3


def test_energy_is_invariant_under_rotation_translation_and_permutation(model):
    numbers, positions, batch, n = molecules((ETHANOL_Z, ETHANOL_R))
    reference = energy(model, numbers, positions, batch, n)
    rotated = positions @ random_rotation(1).T + torch.tensor([3.0, -1.5, 7.0])
    permutation = torch.randperm(len(numbers), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(energy(model, numbers, rotated, batch, n), reference, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(energy(model, numbers[permutation], positions[permutation], batch, n), reference,
                               rtol=1e-10, atol=1e-10)


def test_forces_rotate_with_the_molecule(model):
    """On a geometry without mirror-image atoms: the keys' stabilising max over a molecule (the reference's
    too) has no derivative where two atoms tie, and there the forces are defined only up to its ε term."""
    numbers, positions, batch, n = molecules((ETHANOL_Z, ETHANOL_R))
    positions = positions + 0.02 * torch.randn(positions.shape, generator=torch.Generator().manual_seed(5))
    rotation = random_rotation(3)
    expected = forces(model, numbers, positions, batch, n) @ rotation.T
    torch.testing.assert_close(forces(model, numbers, positions @ rotation.T, batch, n), expected,
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("electrostatics", [False, True])
def test_forces_equal_finite_differences_of_the_energy(electrostatics):
    model = make_model(seed=4, electrostatics=electrostatics)
    numbers, positions, batch, n = molecules((ETHANOL_Z, ETHANOL_R))
    positions = positions + 0.05 * torch.randn(positions.shape, generator=torch.Generator().manual_seed(5))
    analytic = forces(model, numbers, positions, batch, n)
    numeric, step = torch.zeros_like(positions), 1e-5
    with torch.no_grad():
        for atom in range(len(numbers)):
            for axis in range(3):
                shift = torch.zeros_like(positions)
                shift[atom, axis] = step
                plus = energy(model, numbers, positions + shift, batch, n)
                minus = energy(model, numbers, positions - shift, batch, n)
                numeric[atom, axis] = -(plus - minus).sum() / (2 * step)
    assert analytic.abs().max() > 1e-2
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-5 * float(numeric.abs().max()))


def test_force_loss_backpropagates_to_every_learned_part(model):
    numbers, positions, batch, n = molecules((ETHANOL_Z, ETHANOL_R))
    model.zero_grad()
    forces(model, numbers, positions, batch, n).pow(2).sum().backward()
    for name in ("embedding.element.weight", "radial_basis.raw_alpha", "interactions.1.nonlocal_.mlp_q.linear.weight",
                 "interactions.0.local.radial_d.weight", "zbl.raw_apow"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().max() > 0, name
    model.zero_grad()


def test_molecules_in_one_batch_do_not_see_each_other(model):
    alone = [energy(model, *molecules(part)) for part in ((ETHANOL_Z, ETHANOL_R), (WATER_Z, WATER_R))]
    numbers, positions, batch, n = molecules((ETHANOL_Z, ETHANOL_R), (WATER_Z, WATER_R))
    shuffle = torch.randperm(len(numbers), generator=torch.Generator().manual_seed(6))
    together = energy(model, numbers[shuffle], positions[shuffle], batch[shuffle], n)  # overlapping, interleaved
    torch.testing.assert_close(together, torch.cat(alone), rtol=1e-12, atol=1e-12)


def test_random_features_estimate_the_softmax_kernel_without_bias():
    torch.manual_seed(0)
    omega = orthogonal_random_features(8, 160_000)
    q, k = torch.randn(2, 8) * 0.5

    def phi(x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x @ omega - x @ x / 2)

    # within 3% for seeds 0-9 here; LAPACK's sign pattern alone gave 0.57 against 0.70 for seed 0
    assert (phi(q) * phi(k)).mean().item() == pytest.approx(torch.exp(q @ k).item(), rel=0.05)
    first = torch.stack([orthogonal_random_features(4, 4)[:, 0] for _ in range(400)])
    assert 0.4 < (first > 0).double().mean(0).min() and (first > 0).double().mean(0).max() < 0.6, "no sign pattern"


def test_zbl_repulsion_rises_steeply_at_short_distance():
    numbers, batch = torch.tensor([1, 1]), torch.tensor([0, 0])
    distances = torch.linspace(0.2, 1.0, 9)

    def curve(model):
        return torch.cat([energy(model, numbers, torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, float(d)]]), batch, 1)
                          for d in distances]).detach()

    with_zbl, without = curve(make_model(noise=0.0)), curve(make_model(noise=0.0, zbl=False))
    assert (with_zbl.diff() < 0).all()
    assert with_zbl[1] - with_zbl[4] > 5.0  # E(0.3 Å) − E(0.6 Å) for H–H, in eV
    torch.testing.assert_close(without, without[:1].expand_as(without))  # the fresh network alone is flat


def test_parameter_count_grows_quadratically_with_width():
    def per_module(width: int) -> int:
        return sum(p.numel() for p in SpookyNet(num_features=width, num_modules=1).interactions[0].parameters())

    small, large = per_module(32), per_module(64)
    assert 33 < large / 64**2 < 40
    assert 3.6 < large / small < 4.1
    assert (sum(p.numel() for p in SpookyNet(num_features=32, num_modules=3).parameters())
            - sum(p.numel() for p in SpookyNet(num_features=32, num_modules=2).parameters())) == small


def test_max_z_beyond_radon_is_refused():
    with pytest.raises(ValueError, match="max_z must be between 2 and 87"):
        SpookyNet(max_z=95)


def test_training_fits_energies_of_distorted_molecules():
    generator = torch.Generator().manual_seed(7)
    base = torch.tensor(ETHANOL_R)
    parts = [(ETHANOL_Z, (base + 0.1 * torch.randn(base.shape, generator=generator)).tolist()) for _ in range(20)]
    numbers, positions, batch, n = molecules(*parts)
    idx_i, idx_j = neighbour_pairs(positions, batch, CUTOFF)
    distances = (positions[idx_i] - positions[idx_j]).norm(dim=1)
    target = torch.zeros(n).index_add(0, batch[idx_i], torch.exp(-distances))  # a smooth function of geometry
    model = make_model(noise=0.0)
    steps = 300
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    losses = []
    for _ in range(steps):
        optimiser.zero_grad()
        loss = (model(numbers, positions, idx_i, idx_j, batch, n) - target).pow(2).mean()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10
    assert losses[-1] < target.var() / 10  # it learned the geometry, not only the offset


def test_bf16_autocast_gives_the_float32_energy_and_forces_within_bf16_rounding():
    """Under bf16-mixed (the force fields' GPU precision) the linear layers give bf16 rows, and the sums over
    neighbours and molecules accumulate them in float32; here on the CPU's autocast, as on a GPU's."""
    model = make_model(seed=8, electrostatics=True, charge_spin=True).float()
    numbers, positions, batch, n = molecules((ETHANOL_Z, ETHANOL_R), (WATER_Z, WATER_R))
    positions = positions.float()
    extra = (torch.tensor([0.0, 1.0], dtype=torch.float32), torch.tensor([0.0, 1.0], dtype=torch.float32))
    reference = forces(lambda *args: model(*args, *extra), numbers, positions, batch, n)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = forces(lambda *args: model(*args, *extra), numbers, positions, batch, n)
        total = energy(lambda *args: model(*args, *extra), numbers, positions, batch, n)
    assert total.dtype == torch.float32 and torch.isfinite(mixed).all()
    torch.testing.assert_close(mixed.float(), reference, rtol=0, atol=0.02 * float(reference.detach().abs().max()))
    exact = energy(lambda *args: model(*args, *extra), numbers, positions, batch, n)
    torch.testing.assert_close(total, exact, rtol=0, atol=0.02 * float(exact.detach().abs().max()))
