"""Building blocks of SpookyNet (see `chemspec.runtime.spookynet`): activations, residual MLPs, the
electron-configuration table, the radial basis, per-molecule FAVOR+ attention and the physical terms.

Everything here is twice differentiable in the positions for distances 0 < r: branches use
`torch.where` on "safe" arguments, sums use out-of-place `index_add`, nothing is modified in place.
Units are Å and eV.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from chemspec.specs.model import BOHR

KE = 14.399645351950548  # e²/(4πε0) in eV·Å

_ORBITALS = ("1s", "2s", "2p", "3s", "3p", "4s", "3d", "4p", "5s", "4d", "5p", "6s", "4f", "5d", "6p")
_CAPACITY = {"s": 2, "p": 6, "d": 10, "f": 14}
_NOBLE_GASES = (2, 10, 18, 36, 54)
# Ground states that break the Madelung order: Z -> (orbital emptied, orbital filled, electrons moved)
_EXCEPTIONS = {24: ("4s", "3d", 1), 29: ("4s", "3d", 1), 41: ("5s", "4d", 1), 42: ("5s", "4d", 1),
               44: ("5s", "4d", 1), 45: ("5s", "4d", 1), 46: ("5s", "4d", 2), 47: ("5s", "4d", 1),
               57: ("4f", "5d", 1), 58: ("4f", "5d", 1), 64: ("4f", "5d", 1), 78: ("6s", "5d", 1),
               79: ("6s", "5d", 1)}
MAX_Z = 87  # the 20 columns cover the elements up to radon (Z = 86)


def _madelung(z: int) -> dict[str, int]:
    occupation, left = {}, z
    for orbital in _ORBITALS:
        occupation[orbital] = min(left, _CAPACITY[orbital[1]])
        left -= occupation[orbital]
    return occupation


def electron_configurations(max_z: int) -> torch.Tensor:
    """[max_z, 20]: Z, occupations 1s…6p, valence s/p/d/f counts; each column scaled to [0, 1]; row 0 zero.

    Valence electrons are those outside the preceding noble-gas core."""
    rows = [[0.0] * 20]
    for z in range(1, max_z):
        occupation = _madelung(z)
        if z in _EXCEPTIONS:
            emptied, filled, moved = _EXCEPTIONS[z]
            occupation[emptied] -= moved
            occupation[filled] += moved
        core = _madelung(max([g for g in _NOBLE_GASES if g < z], default=0))
        valence = {kind: sum(occupation[o] - core[o] for o in _ORBITALS if o[1] == kind) for kind in "spdf"}
        rows.append([z, *occupation.values(), *valence.values()])
    table = torch.tensor(rows, dtype=torch.get_default_dtype())
    return table / table.amax(0).clamp(min=1.0)


def softplus_inverse(x: float) -> float:
    return x + math.log(-math.expm1(-x))


def scatter_sum(source: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """[size, ...] sums of the rows of `source` by `index` (out of place), in float32 at least: under bf16
    autocast the linear layers give bf16 rows, which would lose the sum's precision (and index_add refuses
    a float32 total for them)."""
    dtype = torch.promote_types(source.dtype, torch.float32)
    return source.new_zeros((size, *source.shape[1:]), dtype=dtype).index_add(0, index, source.to(dtype))


def linear(n_in: int, n_out: int, bias: bool = True, zero: bool = False) -> nn.Linear:
    """A linear layer with orthogonal (or zero) weights and zero bias."""
    layer = nn.Linear(n_in, n_out, bias=bias)
    nn.init.zeros_(layer.weight) if zero else nn.init.orthogonal_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


class Swish(nn.Module):
    """α·x·σ(β·x) with learnable per-feature α (init 1) and β (init 1.702, a GELU-like start)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(num_features))
        self.beta = nn.Parameter(torch.full((num_features,), 1.702))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * x * torch.sigmoid(self.beta * x)


class Residual(nn.Module):
    """Pre-activation residual block x + W2·act(W1·act(x)); W2 starts at zero so the block starts as identity."""

    def __init__(self, num_features: int, bias: bool = True):
        super().__init__()
        self.act1, self.act2 = Swish(num_features), Swish(num_features)
        self.linear1 = linear(num_features, num_features, bias=bias)
        self.linear2 = linear(num_features, num_features, bias=bias, zero=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear2(self.act2(self.linear1(self.act1(x))))


def residual_stack(num_features: int, num_blocks: int = 1, bias: bool = True) -> nn.Sequential:
    return nn.Sequential(*(Residual(num_features, bias) for _ in range(num_blocks)))


class ResidualMLP(nn.Module):
    """Residual blocks, then act → Linear (zero-initialised where it is the last layer of a branch). Without
    `bias` it maps zero to zero."""

    def __init__(self, num_features: int, num_blocks: int = 1, zero_init: bool = False, bias: bool = True):
        super().__init__()
        self.residual = residual_stack(num_features, num_blocks, bias)
        self.act = Swish(num_features)
        self.linear = linear(num_features, num_features, bias=bias, zero=zero_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.act(self.residual(x)))


def smooth_cutoff(r: torch.Tensor, cutoff: float) -> torch.Tensor:
    """exp(−r²/((rc−r)(rc+r))) below rc, 0 above; smooth (all derivatives vanish) at rc."""
    inside = r < cutoff
    safe = torch.where(inside, r, torch.zeros_like(r))
    return torch.where(inside, torch.exp(-safe**2 / ((cutoff - safe) * (cutoff + safe))), torch.zeros_like(r))


class ExponentialBernstein(nn.Module):
    """b_v(r) = C(n,v)·e^{−αrv}·(1−e^{−αr})^{n−v}, v = 0…K−1, evaluated in log space, times e^{−αr}
    and the cutoff; α = softplus(raw) is learnable and starts at 0.5/bohr."""

    def __init__(self, num_rbf: int, alpha: float = 0.5 / BOHR):
        super().__init__()
        n = num_rbf - 1
        v = torch.arange(num_rbf, dtype=torch.get_default_dtype())
        self.register_buffer("v", v)
        self.register_buffer("n_minus_v", n - v)
        self.register_buffer("log_binomial", math.lgamma(n + 1) - torch.lgamma(v + 1) - torch.lgamma(n - v + 1))
        self.raw_alpha = nn.Parameter(torch.tensor(softplus_inverse(alpha)))

    def forward(self, r: torch.Tensor, cutoff_values: torch.Tensor) -> torch.Tensor:
        ar = F.softplus(self.raw_alpha) * r.unsqueeze(-1)
        log_b = self.log_binomial - ar * self.v + self.n_minus_v * torch.log(-torch.expm1(-ar))
        return cutoff_values.unsqueeze(-1) * torch.exp(log_b - ar)


def orthogonal_random_features(dim: int, num_features: int) -> torch.Tensor:
    """[dim, num_features] Performer projection: blocks of random orthogonal directions, uniform over the sphere
    (QR's Q with its columns' signs set by R's diagonal; LAPACK's alone points each block's k-th direction to
    negative k-th components), with chi-distributed norms: marginally each feature is a standard normal vector."""
    blocks = math.ceil(num_features / dim)
    q, r = torch.linalg.qr(torch.randn(blocks, dim, dim))
    q = q * torch.diagonal(r, dim1=-2, dim2=-1).sign().unsqueeze(-2)
    directions = q.transpose(-1, -2).reshape(blocks * dim, dim)[:num_features]
    norms = torch.randn(num_features, dim).norm(dim=1, keepdim=True)
    return (directions * norms).T.to(torch.get_default_dtype())


def favor_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, omega: torch.Tensor,
                    batch: torch.Tensor, n_molecules: int, eps: float = 1e-4) -> torch.Tensor:
    """Linear attention softmax(q·kᵀ/√d)·v ≈ φ(q)(φ(k)ᵀv)/(φ(q)·Σφ(k)), restricted to each molecule.

    φ(x) = (exp(ωᵀx' − |x'|²/2 − max) + ε)/√m with x' = x/d^¼; the max runs over each query's own
    features and over all key features of a molecule, so no molecule sees another's keys."""
    d, m = q.shape[-1], omega.shape[-1]

    def log_features(x: torch.Tensor) -> torch.Tensor:
        x = x / d**0.25
        return x @ omega - (x * x).sum(-1, keepdim=True) / 2

    log_q, log_k = log_features(q), log_features(k)
    phi_q = (torch.exp(log_q - log_q.amax(-1, keepdim=True)) + eps) / math.sqrt(m)
    key_max = log_k.new_zeros(n_molecules).scatter_reduce(0, batch, log_k.amax(-1), "amax", include_self=False)
    phi_k = (torch.exp(log_k - key_max[batch].unsqueeze(-1)) + eps) / math.sqrt(m)
    kv = scatter_sum(phi_k.unsqueeze(-1) * v.unsqueeze(1), batch, n_molecules)
    k_sum = scatter_sum(phi_k, batch, n_molecules)
    numerator = torch.einsum("nm,nmf->nf", phi_q, kv[batch])
    return numerator / (phi_q * k_sum[batch]).sum(-1, keepdim=True)


class ZBLRepulsion(nn.Module):
    """Ziegler–Biersack–Littmark screened nuclear repulsion, per atom, with learnable (softplus) constants.

    E = ke/2 Σ_{i≠j} Zi·Zj/r · Σ_k c_k e^{−a_k r/a}·f_cut(r), a = 0.8854·a0/(Zi^p + Zj^p), Σ c_k = 1."""

    def __init__(self):
        super().__init__()
        self.raw_adiv = nn.Parameter(torch.tensor(softplus_inverse(1 / (0.8854 * BOHR))))
        self.raw_apow = nn.Parameter(torch.tensor(softplus_inverse(0.23)))
        self.raw_c = nn.Parameter(torch.tensor([softplus_inverse(c) for c in (0.18175, 0.50986, 0.28022, 0.02817)]))
        self.raw_a = nn.Parameter(torch.tensor([softplus_inverse(a) for a in (3.19980, 0.94229, 0.40290, 0.20162)]))

    def forward(self, numbers: torch.Tensor, r: torch.Tensor, cutoff_values: torch.Tensor,
                idx_i: torch.Tensor, idx_j: torch.Tensor) -> torch.Tensor:
        z = numbers.to(r.dtype)
        zp = z ** F.softplus(self.raw_apow)
        inverse_a = (zp[idx_i] + zp[idx_j]) * F.softplus(self.raw_adiv)
        c = F.softplus(self.raw_c)
        screening = (c / c.sum() * torch.exp(-F.softplus(self.raw_a) * (inverse_a * r).unsqueeze(-1))).sum(-1)
        pair = z[idx_i] * z[idx_j] / r * screening * cutoff_values
        return scatter_sum(KE / 2 * pair, idx_i, numbers.shape[0])


def _switch(r: torch.Tensor, on: float, off: float) -> torch.Tensor:
    """Smooth step from 1 (r ≤ on) to 0 (r ≥ off)."""
    x = (r - on) / (off - on)

    def bump(t: torch.Tensor) -> torch.Tensor:
        positive = t > 0
        return torch.where(positive, torch.exp(-1 / torch.where(positive, t, torch.ones_like(t))), torch.zeros_like(t))

    return bump(1 - x) / (bump(x) + bump(1 - x))


def electrostatic_energy(charges: torch.Tensor, positions: torch.Tensor, idx_i: torch.Tensor,
                         idx_j: torch.Tensor, batch: torch.Tensor, n_molecules: int, cutoff: float) -> torch.Tensor:
    """[n_molecules] Coulomb energy of the atomic charges over all intramolecular pairs (both directions),
    shielded at short range: 1/√(r²+1) below cutoff/4, switching smoothly to 1/r above 3·cutoff/4."""
    r = (positions[idx_j] - positions[idx_i]).pow(2).sum(-1).sqrt()
    switch = _switch(r, cutoff / 4, 3 * cutoff / 4)
    kernel = switch / torch.sqrt(r**2 + 1) + (1 - switch) / r
    pair = KE / 2 * charges[idx_i] * charges[idx_j] * kernel
    return scatter_sum(pair, batch[idx_i], n_molecules)
