"""The force-field families: SchNet and PaiNN from schnetpack (representation and Atomwise head only),
SpookyNet from `chemspec.runtime.spookynet`. Every family is an energy model `forward(numbers,
positions, idx_i, idx_j, batch, n_molecules) -> energies [n_molecules]`."""

from __future__ import annotations

import typing
import warnings
from collections.abc import Callable

import torch
from torch import nn

from chemspec.errors import RunError
from chemspec.runtime.neighbours import MAX_Z


def import_schnetpack():
    """schnetpack 2.0.4 on torch >= 2.6: restore the `T_co` that its data loader still imports."""
    import torch.utils.data.dataloader as dataloader

    if not hasattr(dataloader, "T_co"):
        dataloader.T_co = typing.TypeVar("T_co", covariant=True)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="tensorboard")
    try:
        import schnetpack
    except ImportError as exc:
        raise RunError(f"SchNet and PaiNN need schnetpack (pip install schnetpack==2.0.4): {exc}") from exc
    return schnetpack


class SchnetpackEnergy(nn.Module):
    """A schnetpack representation with an Atomwise energy head, summed per molecule."""

    def __init__(self, representation: nn.Module, width: int):
        super().__init__()
        spk = import_schnetpack()
        self.keys = spk.properties
        self.representation = representation
        self.head = spk.atomistic.Atomwise(n_in=width, n_out=1, aggregation_mode=None,
                                           output_key="atomic_energy", per_atom_output_key="atomic_energy")

    def forward(self, numbers, positions, idx_i, idx_j, batch, n_molecules: int) -> torch.Tensor:
        p = self.keys
        inputs = {p.Z: numbers, p.R: positions, p.Rij: positions[idx_j] - positions[idx_i],
                  p.idx_i: idx_i, p.idx_j: idx_j, p.idx_m: batch}
        atomic = self.head(self.representation(inputs))["atomic_energy"].squeeze(-1)
        return atomic.new_zeros(n_molecules).index_add(0, batch, atomic)


def _schnetpack(representation: str):
    """A builder of schnetpack's SchNet or PaiNN: they take the same arguments."""

    def build(width: int, depth: int, cutoff: float, n_rbf: int) -> nn.Module:
        spk = import_schnetpack()
        rep = getattr(spk.representation, representation)(
            n_atom_basis=width, n_interactions=depth, max_z=MAX_Z,
            radial_basis=spk.nn.GaussianRBF(n_rbf=n_rbf, cutoff=cutoff), cutoff_fn=spk.nn.CosineCutoff(cutoff))
        return SchnetpackEnergy(rep, width)

    return build


def _spookynet(width: int, depth: int, cutoff: float, n_rbf: int, charge_spin: bool = False) -> nn.Module:
    from chemspec.runtime.spookynet import SpookyNet

    return SpookyNet(num_features=width, num_modules=depth, cutoff=cutoff, num_rbf=n_rbf, charge_spin=charge_spin)


class _Registry(dict):
    def __missing__(self, name):
        raise RunError(f"unknown force-field family {name!r}; families are {', '.join(sorted(self))}")


FAMILIES: dict[str, Callable[[int, int, float, int], nn.Module]] = _Registry(
    schnet=_schnetpack("SchNet"), painn=_schnetpack("PaiNN"), spookynet=_spookynet)
"""family -> builder(width, depth, cutoff, n_rbf) of an energy model (spookynet's also takes charge_spin);
a miss raises RunError."""
