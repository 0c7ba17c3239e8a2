"""Neighbour lists and batching for force fields.

Pairs within the cutoff are found once per structure, when the dataset is built (isolated molecules,
no periodic boundaries), and kept as flat arrays. A batch gathers its structures' atoms and pairs
with index arithmetic only: no distance is computed on the CPU after construction, in any epoch.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from chemspec.errors import RunError
from chemspec.runtime.atoms import Frames
from chemspec.runtime.geometry import MIN_DISTANCE, first_coincident
from chemspec.runtime.resume import EpochSampler

MAX_Z = 100
"""Largest atomic number + 1 that the models embed (schnetpack's default `max_z`)."""
PAD_ATOMS = 2
"""Fewest atoms of a padded batch's padding molecule: its padding pairs need two ends."""
PAD_PAIRS_PER_ATOM = 16
"""Most padding pairs that end on one padding atom: GPU atomics that add into one row run one at a time,
and a few thousand padding pairs on two atoms made a step several times slower (BENCHMARKS.md, PaiNN run 5)."""
SHAPE_SCAN = 10_000_000
"""Most structures (epochs × dataset) whose batches `padded_shape` sums to find the largest: about 2 s on one core."""


def neighbour_pairs(positions: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Ordered pairs (i, j), i != j, of one structure closer than `cutoff` (both directions), vectorised."""
    positions = np.asarray(positions, dtype=np.float64)
    distance = np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)
    within = distance < cutoff
    np.fill_diagonal(within, False)
    idx_i, idx_j = np.nonzero(within)
    return idx_i.astype(np.int64), idx_j.astype(np.int64)


def _ranges(starts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Concatenation of arange(start, start + count) over rows, without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.long)
    first = torch.cumsum(counts, 0) - counts
    return torch.repeat_interleave(starts - first, counts, output_size=total) + torch.arange(total)


def _batch_sums(counts: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Sums of `counts` over the runs of `batch_size` that cut them (the last may be short)."""
    return torch.nn.functional.pad(counts, (0, -len(counts) % batch_size)).view(-1, batch_size).sum(1)


def check_atoms(data) -> None:
    """Consistent array shapes in an AtomsData-like object; a RunError says what is wrong."""
    offsets, numbers = np.asarray(data.offsets), np.asarray(data.numbers)
    n_structures, n_atoms = len(data.energy), len(numbers)
    problems = []
    if offsets.ndim != 1 or len(offsets) != n_structures + 1 or offsets[0] != 0 or offsets[-1] != n_atoms:
        problems.append(f"offsets must run 0..{n_atoms} with {n_structures + 1} entries")
    elif np.any(np.diff(offsets) <= 0):
        problems.append("every structure needs at least one atom (offsets must increase)")
    if np.shape(data.positions) != (n_atoms, 3) or np.shape(data.forces) != (n_atoms, 3):
        problems.append(f"positions and forces must be [{n_atoms}, 3]; got {np.shape(data.positions)} "
                        f"and {np.shape(data.forces)}")
    if n_atoms and (numbers.min() < 1 or numbers.max() >= MAX_Z):
        problems.append(f"atomic numbers must lie in 1..{MAX_Z - 1}")
    if problems:
        raise RunError("force-field data: " + "; ".join(problems))
    if coincident := _first_coincident(offsets, np.asarray(data.positions, dtype=np.float64)):
        raise RunError(f"force-field data: structure {coincident[0]} has two atoms {coincident[1]:.3g} Å apart, below "
                       f"{MIN_DISTANCE} Å: coincident atoms make every model's forces NaN; remove it from the data "
                       "file and rerun the data stage")


def _first_coincident(offsets: np.ndarray, positions: np.ndarray) -> tuple[int, float] | None:
    """`first_coincident` over structures of every size, each size's structures as one block."""
    sizes, found = np.diff(offsets), []
    for size in np.unique(sizes):
        index = np.flatnonzero(sizes == size)
        block = positions[offsets[index][:, None] + np.arange(size)]
        if hit := first_coincident([Frames(np.zeros(size), block, np.zeros(len(index)), block)]):
            found.append((int(index[hit[0]]), hit[1]))
    return min(found, default=None)


class ForceFieldDataset(Dataset):
    """Structures of an AtomsData with their neighbour pairs precomputed; `collate` builds batches.

    Items are structure indices; use `loader()` (or `DataLoader(..., collate_fn=dataset.collate)`).
    Positions and forces take `dtype` (the model's); energies stay float64 so that large total
    energies keep their precision until the loss. Where some structure is not a neutral singlet, batches
    also carry each molecule's `charge` (e) and `spin` (unpaired electrons, multiplicity − 1) in `dtype`.
    """

    def __init__(self, data, cutoff: float, dtype: torch.dtype = torch.float32):
        check_atoms(data)
        self.cutoff = float(cutoff)
        offsets = np.asarray(data.offsets, dtype=np.int64)
        positions = np.asarray(data.positions, dtype=np.float64)
        pairs_i, pairs_j, n_pairs = [], [], np.zeros(len(offsets) - 1, dtype=np.int64)
        for s in range(len(offsets) - 1):
            i, j = neighbour_pairs(positions[offsets[s]:offsets[s + 1]], self.cutoff)
            pairs_i.append(i)
            pairs_j.append(j)
            n_pairs[s] = len(i)
        empty = np.zeros(0, dtype=np.int64)
        self.numbers = torch.as_tensor(np.asarray(data.numbers, dtype=np.int64))
        self.positions = torch.as_tensor(positions).to(dtype)
        self.forces = torch.as_tensor(np.asarray(data.forces, dtype=np.float64)).to(dtype)
        self.energy = torch.as_tensor(np.asarray(data.energy, dtype=np.float64))
        self.atom_offsets = torch.as_tensor(offsets[:-1])
        self.n_atoms = torch.as_tensor(np.diff(offsets))
        self.pair_offsets = torch.as_tensor(np.concatenate([[0], np.cumsum(n_pairs)[:-1]]).astype(np.int64))
        self.n_pairs = torch.as_tensor(n_pairs)
        self.idx_i = torch.as_tensor(np.concatenate(pairs_i) if pairs_i else empty)
        self.idx_j = torch.as_tensor(np.concatenate(pairs_j) if pairs_j else empty)
        self.electronic = None
        if not data.neutral_singlets():
            self.electronic = {"charge": torch.as_tensor(data.electronic("charge")).to(dtype),
                               "spin": torch.as_tensor(data.electronic("multiplicity") - 1).to(dtype)}

    def __len__(self) -> int:
        return len(self.energy)

    def __getitem__(self, index: int) -> int:
        return int(index)

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """A batch: atoms of the chosen structures concatenated, pair indices shifted into the batch."""
        s = torch.as_tensor(indices, dtype=torch.long)
        n_atoms, n_pairs = self.n_atoms[s], self.n_pairs[s]
        atoms = _ranges(self.atom_offsets[s], n_atoms)
        pairs = _ranges(self.pair_offsets[s], n_pairs)
        start = torch.cumsum(n_atoms, 0) - n_atoms
        shift = torch.repeat_interleave(start, n_pairs, output_size=len(pairs))
        electronic = {key: value[s] for key, value in (self.electronic or {}).items()}
        return {"numbers": self.numbers[atoms], "positions": self.positions[atoms],
                "forces": self.forces[atoms], "energy": self.energy[s], "n_atoms": n_atoms,
                "batch": torch.repeat_interleave(torch.arange(len(s)), n_atoms, output_size=len(atoms)),
                "idx_i": self.idx_i[pairs] + shift, "idx_j": self.idx_j[pairs] + shift, **electronic}

    def padded_shape(self, batch_size: int, sampler: EpochSampler | None = None, epochs: int = 0) -> tuple[int, int]:
        """(atoms, pairs) that hold any batch of `batch_size` structures and the padding structure; with a
        `sampler`, only the batches it draws in its first `epochs` epochs, which on structures of mixed
        sizes is a smaller shape: less padding to compute in every step. Beyond SHAPE_SCAN structures
        drawn in all, any batch is assumed, so that the scan stays quick. Each batch keeps a padding
        atom for every PAD_PAIRS_PER_ATOM of its padding pairs (`collate_padded`)."""
        if sampler is None or not 0 < epochs * len(self) <= SHAPE_SCAN:
            k = min(batch_size, len(self))
            pairs = int(torch.topk(self.n_pairs, k).values.sum()) + 1
            spare = PAD_PAIRS_PER_ATOM * self.n_atoms - self.n_pairs
            atoms = max(int(torch.topk(self.n_atoms, k).values.sum()) + PAD_ATOMS,
                        -(-(pairs + int(torch.topk(spare, k).values.clamp(min=0).sum())) // PAD_PAIRS_PER_ATOM))
            return atoms, pairs
        orders = [sampler.order(epoch) for epoch in range(epochs)]
        atoms = torch.cat([_batch_sums(self.n_atoms[order], batch_size) for order in orders])
        pairs = torch.cat([_batch_sums(self.n_pairs[order], batch_size) for order in orders])
        most_pairs = int(pairs.max()) + 1
        padding = torch.clamp(-(-(most_pairs - pairs) // PAD_PAIRS_PER_ATOM), min=PAD_ATOMS)
        return int((atoms + padding).max()), most_pairs

    def collate_padded(self, indices: list[int], batch_size: int, shape: tuple[int, int]) -> dict[str, torch.Tensor]:
        """A batch of one shape whatever its structures: `batch_size` + 1 molecules, `shape` atoms and pairs.

        The structures come first, as `collate` gives them; empty molecule slots follow (a short last
        batch), then one padding molecule of hydrogens spaced twice the cutoff apart on a line, whose
        padding pairs join neighbours on that line in turn, beyond the cutoff: they add nothing to any
        energy or force, and no one atom ends all of them. `molecule_weight` and `atom_weight` are 1 for
        what is real and 0 for the padding, so a loss weighted by them is the loss of the real batch;
        empty slots count one atom, so that energies per atom stay finite."""
        real = self.collate(indices)
        n, (atoms, pairs) = len(indices), shape
        n_real, p_real = len(real["numbers"]), len(real["idx_i"])
        if n > batch_size or n_real + PAD_ATOMS > atoms or p_real > pairs:
            raise RunError(f"a batch of {n} structures ({n_real} atoms, {p_real} pairs) does not fit the padded "
                           f"shape of {batch_size} structures, {atoms} atoms, {pairs} pairs")
        pad, dtype = atoms - n_real, real["positions"].dtype
        line = torch.zeros(pad, 3, dtype=dtype)
        line[:, 0] = 2 * self.cutoff * torch.arange(1, pad + 1, dtype=dtype)
        slots = torch.ones(batch_size + 1, dtype=torch.long)
        slots[:n], slots[-1] = real["n_atoms"], pad
        weight = torch.zeros(batch_size + 1, dtype=dtype)
        weight[:n] = 1
        spread = torch.arange(pairs - p_real)
        pair_i, pair_j = n_real + spread % pad, n_real + (spread + 1) % pad
        electronic = {key: torch.cat([real[key], torch.zeros(batch_size + 1 - n, dtype=dtype)])
                      for key in ("charge", "spin") if key in real}
        return {**electronic, "numbers": torch.cat([real["numbers"], torch.ones(pad, dtype=torch.long)]),
                "positions": torch.cat([real["positions"], line]),
                "forces": torch.cat([real["forces"], torch.zeros(pad, 3, dtype=dtype)]),
                "energy": torch.cat([real["energy"], torch.zeros(batch_size + 1 - n, dtype=torch.float64)]),
                "n_atoms": slots, "batch": torch.cat([real["batch"], torch.full((pad,), batch_size)]),
                "idx_i": torch.cat([real["idx_i"], pair_i]), "idx_j": torch.cat([real["idx_j"], pair_j]),
                "molecule_weight": weight,
                "atom_weight": torch.cat([torch.ones(n_real, dtype=dtype), torch.zeros(pad, dtype=dtype)])}

    def loader(self, batch_size: int, shuffle: bool = False, seed: int = 0, pin_memory: bool = False,
               padded: bool = False, epochs: int = 0) -> DataLoader:
        """Batches in an order drawn from (seed, epoch) alone, so that a resumed run takes the batches an
        uninterrupted one would (runtime.resume); `pin_memory` lets the copy to the GPU overlap its work.
        `padded` batches all have one shape (`collate_padded`), as a CUDA graph of the step needs: the
        shape of the largest batch of the first `epochs` epochs, or of any batch when `epochs` is 0."""
        sampler = EpochSampler(len(self), seed, shuffle)
        collate = (partial(self.collate_padded, batch_size=batch_size,
                           shape=self.padded_shape(batch_size, sampler, epochs)) if padded else self.collate)
        return DataLoader(self, batch_size=batch_size, sampler=sampler, collate_fn=collate, pin_memory=pin_memory)
