"""SpookyNet (Unke et al., Nat. Commun. 12, 7273 (2021)), written from the paper's description. Å and eV.

Included:
- nuclear embedding E[Z] + W·d_Z with the fixed 20-dim electron-configuration vector d_Z (both zero-init);
- exponential Bernstein radial basis (log space, learnable α = softplus, start 0.5/bohr) × e^{−αr} × the
  smooth cutoff exp(−r²/((rc−r)(rc+r)));
- local interaction with s, p (r̂) and d (5 real l=2 harmonics) channels, invariants from Linear(F→2F) halves;
- nonlocal interaction: Performer FAVOR+ linear attention (F orthogonal random features, ε = 1e-4),
  per molecule (vectorised with per-molecule key maxima, no loop over molecules);
- interaction modules x ← post(x + local + nonlocal) after pre(x), outputs summed over modules;
- pre-activation residual blocks, learnable Swish (α=1, β=1.702), orthogonal init, zero-init last layers;
- optional charge and spin embeddings (`charge_spin`): each atom's query attends to a key of the molecule's
  total charge Q (its sign) or spin S (unpaired electrons; sign ignored), the value is linear in Q or S and
  feeds a bias-free residual MLP, so both are exactly zero for a neutral singlet; added to the nuclear
  embedding;
- output Linear(F→2) to atomic energy and charge + learnable per-element bias; charges shifted to sum to Q
  (0 where no charge is given);
- ZBL nuclear repulsion (on by default); optional electrostatics of the predicted charges
  (shielded Coulomb over all pairs of a molecule, no long-range cutoff), experimental: no loss trains
  the charges (there is no dipole loss), so the term is an arbitrary learned 1/r interaction, and the
  charges, shifted to sum to zero over the whole structure, let far-apart fragments exchange charge.
  Training never turns it on (`chemspec.runtime.ff_models` builds SpookyNet without it).
Not size-extensive within a structure: the nonlocal attention mixes all atoms of a structure, so two
fragments far apart (beyond the cutoff) still change each other's energies, as in the paper; structures
in one batch stay apart.
Not included: D4 dispersion and dipole outputs.

The energy is twice differentiable in the positions (forces by autograd, force losses by double backward).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from chemspec.runtime.spookynet_blocks import (
    MAX_Z, ExponentialBernstein, ResidualMLP, ZBLRepulsion, electron_configurations, electrostatic_energy,
    favor_attention, linear, orthogonal_random_features, residual_stack, scatter_sum, smooth_cutoff)
from chemspec.specs.model import BOHR


def neighbour_pairs(positions: torch.Tensor, batch: torch.Tensor, cutoff: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """All pairs i←j (both directions, i ≠ j) of atoms of the same molecule closer than `cutoff` (dense O(N²))."""
    with torch.no_grad():
        distance = torch.cdist(positions, positions)
        same = batch.unsqueeze(0) == batch.unsqueeze(1)
        same.fill_diagonal_(False)
        idx_i, idx_j = torch.nonzero(same & (distance < cutoff), as_tuple=True)
    return idx_i, idx_j


def l2_harmonics(u: torch.Tensor) -> torch.Tensor:
    """[P, 5] real l=2 harmonics of unit vectors, normalised alike so that they rotate orthogonally."""
    x, y, z = u.unbind(-1)
    s3 = math.sqrt(3.0)
    return torch.stack([s3 * x * y, s3 * x * z, s3 * y * z, s3 / 2 * (x * x - y * y), (3 * z * z - 1) / 2], -1)


class NuclearEmbedding(nn.Module):
    def __init__(self, num_features: int, max_z: int):
        super().__init__()
        self.register_buffer("configurations", electron_configurations(max_z))
        self.element = nn.Embedding(max_z, num_features)
        nn.init.zeros_(self.element.weight)
        self.configuration = linear(self.configurations.shape[1], num_features, bias=False, zero=True)

    def forward(self, numbers: torch.Tensor) -> torch.Tensor:
        return self.element(numbers) + self.configuration(self.configurations[numbers])


class ElectronicEmbedding(nn.Module):
    """Atom features from each molecule's total charge (`signed`: a key and value for each sign) or spin."""

    def __init__(self, num_features: int, signed: bool):
        super().__init__()
        self.signed, self.scale = signed, num_features ** -0.5
        channels = 2 if signed else 1
        self.query = linear(num_features, num_features)
        self.key = linear(channels, num_features, bias=False)
        self.value = linear(channels, num_features, bias=False)
        self.mlp = ResidualMLP(num_features, zero_init=True, bias=False)

    def forward(self, x: torch.Tensor, psi: torch.Tensor, batch: torch.Tensor, n_molecules: int) -> torch.Tensor:
        psi = torch.stack([psi.clamp(min=0), (-psi).clamp(min=0)], -1) if self.signed else psi.abs().unsqueeze(-1)
        key = self.key(psi / psi.clamp(min=1))[batch]  # the sign, and magnitudes below 1
        weight = F.softplus((self.query(x) * key).sum(-1) * self.scale)
        total = scatter_sum(weight, batch, n_molecules)
        return self.mlp((weight / (total[batch] + 1e-8)).unsqueeze(-1) * self.value(psi)[batch])


class LocalInteraction(nn.Module):
    def __init__(self, num_features: int, num_rbf: int):
        super().__init__()
        self.num_features = num_features
        self.radial_s, self.radial_p, self.radial_d = (linear(num_rbf, num_features, bias=False) for _ in "spd")
        self.mlp_x, self.mlp_s, self.mlp_p, self.mlp_d = (ResidualMLP(num_features) for _ in "xspd")
        self.project_p = linear(num_features, 2 * num_features, bias=False)
        self.project_d = linear(num_features, 2 * num_features, bias=False)
        self.out = ResidualMLP(num_features, zero_init=True)

    def forward(self, x: torch.Tensor, rbf: torch.Tensor, p_ij: torch.Tensor, d_ij: torch.Tensor,
                idx_i: torch.Tensor, idx_j: torch.Tensor) -> torch.Tensor:
        n, f = x.shape
        g_s = self.radial_s(rbf)
        g_p = p_ij.unsqueeze(-1) * self.radial_p(rbf).unsqueeze(1)
        g_d = d_ij.unsqueeze(-1) * self.radial_d(rbf).unsqueeze(1)
        s = self.mlp_x(x) + scatter_sum(g_s * self.mlp_s(x)[idx_j], idx_i, n)
        p = scatter_sum(g_p * self.mlp_p(x)[idx_j].unsqueeze(1), idx_i, n)
        d = scatter_sum(g_d * self.mlp_d(x)[idx_j].unsqueeze(1), idx_i, n)
        p1, p2 = self.project_p(p).split(f, dim=-1)
        d1, d2 = self.project_d(d).split(f, dim=-1)
        return self.out(s + (p1 * p2).sum(1) + (d1 * d2).sum(1))


class NonlocalInteraction(nn.Module):
    def __init__(self, num_features: int):
        super().__init__()
        self.mlp_q, self.mlp_k, self.mlp_v = (ResidualMLP(num_features) for _ in "qkv")
        self.register_buffer("omega", orthogonal_random_features(num_features, num_features))

    def forward(self, x: torch.Tensor, batch: torch.Tensor, n_molecules: int) -> torch.Tensor:
        return favor_attention(self.mlp_q(x), self.mlp_k(x), self.mlp_v(x), self.omega, batch, n_molecules)


class InteractionModule(nn.Module):
    """x ← post(x + local(pre(x)) + nonlocal(pre(x))); returns the new x and this module's output y."""

    def __init__(self, num_features: int, num_rbf: int):
        super().__init__()
        self.pre = residual_stack(num_features)
        self.local = LocalInteraction(num_features, num_rbf)
        self.nonlocal_ = NonlocalInteraction(num_features)
        self.post = residual_stack(num_features)
        self.output = ResidualMLP(num_features)

    def forward(self, x, rbf, p_ij, d_ij, idx_i, idx_j, batch, n_molecules):
        x = self.pre(x)
        x = self.post(x + self.local(x, rbf, p_ij, d_ij, idx_i, idx_j) + self.nonlocal_(x, batch, n_molecules))
        return x, self.output(x)


class SpookyNet(nn.Module):
    """Total energies [n_molecules] in eV from atomic numbers and positions in Å, and with `charge_spin` from
    each molecule's total charge (e) and spin (unpaired electrons); without, molecules are neutral singlets."""

    def __init__(self, num_features: int = 64, num_modules: int = 3, cutoff: float = 10 * BOHR, num_rbf: int = 16,
                 max_z: int = 87, zbl: bool = True, electrostatics: bool = False, charge_spin: bool = False):
        super().__init__()
        if not 2 <= max_z <= MAX_Z:
            raise ValueError(f"max_z must be between 2 and {MAX_Z} (the electron configurations cover H to Rn); "
                             f"got {max_z}")
        self.cutoff = cutoff
        self.embedding = NuclearEmbedding(num_features, max_z)
        self.charge_spin = charge_spin
        if charge_spin:
            self.charge_embedding = ElectronicEmbedding(num_features, signed=True)
            self.spin_embedding = ElectronicEmbedding(num_features, signed=False)
        self.radial_basis = ExponentialBernstein(num_rbf)
        self.interactions = nn.ModuleList(InteractionModule(num_features, num_rbf) for _ in range(num_modules))
        self.head = linear(num_features, 2, bias=False)
        self.element_bias = nn.Parameter(torch.zeros(max_z, 2))
        self.zbl = ZBLRepulsion() if zbl else None
        self.electrostatics = electrostatics

    def atomic_outputs(self, numbers, positions, idx_i, idx_j, batch, n_molecules, charge=None, spin=None):
        """Atomic energies [N] (eV, without the physical terms) and charges [N] (e, summing to each molecule's
        `charge`, 0 where none is given)."""
        return self._atomic(numbers, positions, idx_i, idx_j, batch, n_molecules, charge, spin)[:2]

    def repulsion(self, numbers, positions, idx_i, idx_j, batch, n_molecules) -> torch.Tensor:
        """The ZBL term of each molecule's energy [n_molecules] in eV (zeros without it)."""
        if self.zbl is None:
            return positions.new_zeros(n_molecules)
        r = (positions[idx_j] - positions[idx_i]).pow(2).sum(-1).sqrt()
        atoms = self.zbl(numbers, r, smooth_cutoff(r, self.cutoff), idx_i, idx_j)
        return scatter_sum(atoms, batch, n_molecules)

    def _embedding(self, numbers, batch, n_molecules, charge, spin) -> torch.Tensor:
        x = self.embedding(numbers)
        if not self.charge_spin:
            return x
        terms = [module(x, psi, batch, n_molecules)
                 for module, psi in ((self.charge_embedding, charge), (self.spin_embedding, spin)) if psi is not None]
        return x + sum(terms) if terms else x

    def _atomic(self, numbers, positions, idx_i, idx_j, batch, n_molecules, charge, spin):
        vectors = positions[idx_j] - positions[idx_i]
        r = vectors.pow(2).sum(-1).sqrt()
        unit = vectors / r.unsqueeze(-1)
        cutoff_values = smooth_cutoff(r, self.cutoff)
        rbf = self.radial_basis(r, cutoff_values)
        d_ij = l2_harmonics(unit)
        x, summed = self._embedding(numbers, batch, n_molecules, charge, spin), 0
        for module in self.interactions:
            x, y = module(x, rbf, unit, d_ij, idx_i, idx_j, batch, n_molecules)
            summed = summed + y
        energies, charges = (self.head(summed) + self.element_bias[numbers]).unbind(-1)
        count = scatter_sum(torch.ones_like(charges), batch, n_molecules)  # no host sync
        total = scatter_sum(charges, batch, n_molecules)
        excess = total if charge is None else total - charge
        return energies, charges - (excess / count)[batch], r, cutoff_values

    def forward(self, numbers: torch.LongTensor, positions: torch.Tensor, idx_i: torch.LongTensor,
                idx_j: torch.LongTensor, batch: torch.LongTensor, n_molecules: int,
                charge: torch.Tensor | None = None, spin: torch.Tensor | None = None) -> torch.Tensor:
        energies, charges, r, cutoff_values = self._atomic(numbers, positions, idx_i, idx_j, batch, n_molecules,
                                                           charge, spin)
        if self.zbl is not None:
            energies = energies + self.zbl(numbers, r, cutoff_values, idx_i, idx_j)
        total = scatter_sum(energies, batch, n_molecules)
        if self.electrostatics:
            all_i, all_j = neighbour_pairs(positions, batch, math.inf)
            total = total + electrostatic_energy(charges, positions, all_i, all_j, batch, n_molecules, self.cutoff)
        return total
