"""Packed batches: several molecules per row, so a step computes on real tokens in one batch shape.

A batch is still `batch_size` molecules (same steps, same order, same loss as padded batches). Its
molecules are placed into rows of `length` positions by first-fit decreasing. A loader fixes the row
count from its molecules' lengths (`fixed_rows`: enough for nearly every batch), so every batch of
a run, its short last batch included, has one shape: torch.compile needs no dynamic shapes and its
CUDA graph is recorded once. Each new shape costs a recompilation (about 30 s at
201M parameters), which a cell of shapes that varied from batch to batch paid several times
(BENCHMARKS.md). A rarer, larger batch gets its row count rounded up to a multiple of ROW_QUANTUM.

Each row carries, beside its token ids:
- `position_ids`: positions restart at 0 for every molecule (a molecule's logits do not depend on
  where in the row it sits);
- `segments`: the molecule's number in the batch (from 1) and 0 for padding; a query attends only
  to keys of its own segment (ChemGPT turns this into the attention mask, on the device);
- `labels`: IGNORE at padding and at each molecule's first token, so nothing predicts a molecule's
  [BOS] from the previous molecule's [EOS]: the targets are exactly those of the padded layout.

and `molecules` [slots, block] int32, the flat position of each molecule's tokens, -1 past its end
(runtime.molecule_attention's index: attention on a GPU reads it instead of a dense mask). Its
shape is fixed too: `slots` molecules (a loader's batch size), `block` from the token rows' width.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from chemspec.runtime.molecules import PAD

IGNORE = -100
ROW_QUANTUM = 8
SIGMAS = 4.0
SAMPLES = 32


def place(lengths: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, int]:
    """First-fit decreasing: (row, start) of every molecule and the number of rows used."""
    row, start = np.zeros(len(lengths), dtype=np.int64), np.zeros(len(lengths), dtype=np.int64)
    free: list[int] = []
    for i in np.argsort(-lengths, kind="stable").tolist():
        n = int(lengths[i])
        r = next((k for k, space in enumerate(free) if space >= n), len(free))
        if r == len(free):
            free.append(length)
        row[i], start[i] = r, length - free[r]
        free[r] -= n
    return row, start, len(free)


def row_count(used: int) -> int:
    """`used` rounded up to a multiple of ROW_QUANTUM, or of a smaller power of two for batches of
    under 4·ROW_QUANTUM rows, so that small batches are not mostly padding."""
    quantum = min(ROW_QUANTUM, 1 << max(0, (used // 4).bit_length() - 1))
    return -(-max(used, 1) // quantum) * quantum


def fixed_rows(lengths: np.ndarray, batch_size: int, length: int) -> int:
    """Rows of `length` positions that hold a batch of `batch_size` of these molecules, drawn at
    random, with up to SIGMAS standard deviations more tokens than a batch's mean: the most rows that
    first-fit decreasing used on SAMPLES seeded batches drawn from the lengths tilted (`_tilted`) so
    that a batch's mean token count is that bound. Such batches hold the longer molecules that real
    batches of that many tokens hold; plain batches topped up with more molecules of average length
    pack better than those and gave a row too few for about one MOSES batch in 8,000 (a new shape,
    so a recompilation), and plain batches alone gave a row too many."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) <= batch_size:
        return max(1, place(lengths, length)[2])
    bound = batch_size * lengths.mean() + SIGMAS * lengths.std() * math.sqrt(batch_size)
    bound = min(bound, np.partition(lengths, -batch_size)[-batch_size:].sum())
    values, weights = _tilted(lengths, bound / batch_size)
    rng = np.random.default_rng(0)
    rows = math.ceil(bound / length)
    for _ in range(SAMPLES):
        rows = max(rows, place(rng.choice(values, batch_size, p=weights), length)[2])
    return rows


def _tilted(lengths: np.ndarray, mean: float) -> tuple[np.ndarray, np.ndarray]:
    """The distinct lengths and their frequencies times exp(θ·z) (z: standardised length), with θ
    found by bisection so that the mean length is `mean`: the law of a molecule in batches
    conditioned on that many tokens."""
    values, counts = np.unique(lengths, return_counts=True)
    z = (values - lengths.mean()) / max(float(lengths.std()), 1e-9)
    low, high = 0.0, 50.0
    for _ in range(60):
        theta = (low + high) / 2
        weights = counts * np.exp(theta * z - (theta * z).max())
        weights = weights / weights.sum()
        low, high = (theta, high) if weights @ values < mean else (low, theta)
    return values, weights


def pack(ids: torch.Tensor, length: int, rows: int | None = None, slots: int | None = None) -> dict[str, torch.Tensor]:
    """A packed batch from right-padded token rows [molecules, width]; `length` >= every molecule;
    `rows`: the row count of every batch that fits (default: this batch's rounded, `row_count`);
    `slots`: molecules listed in `molecules` (default: this batch's)."""
    lengths = (ids != PAD).sum(1).numpy()
    if lengths.max(initial=0) > length:
        raise ValueError(f"a molecule of {lengths.max()} tokens does not fit packed rows of {length}")
    row, start, used = place(lengths, length)
    rows = rows if rows is not None and used <= rows else row_count(used)
    molecule = np.repeat(np.arange(len(lengths)), lengths)
    offset = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    flat = torch.from_numpy(row[molecule] * length + start[molecule] + offset)
    input_ids = torch.full((rows * length,), PAD, dtype=torch.long)
    input_ids[flat] = ids[ids != PAD].long()
    position_ids = torch.zeros(rows * length, dtype=torch.long)
    position_ids[flat] = torch.from_numpy(offset)
    segments = torch.zeros(rows * length, dtype=torch.long)
    segments[flat] = torch.from_numpy(molecule + 1)
    labels = input_ids.masked_fill(segments == 0, IGNORE)
    labels[torch.from_numpy(row * length + start)[torch.from_numpy(lengths) > 0]] = IGNORE
    batch = {"input_ids": input_ids, "position_ids": position_ids, "segments": segments, "labels": labels}
    batch = {k: v.view(rows, length) for k, v in batch.items()}
    batch["attention_mask"] = (batch["segments"] > 0).long()
    batch["molecules"] = molecule_index(flat, lengths, max(slots or 0, len(lengths)), block_size(ids.shape[1]))
    return batch


def block_size(width: int) -> int:
    """Slots per molecule for token rows `width` wide: a power of two, at least 16 (tl.dot's least)."""
    return max(16, 1 << (max(width, 1) - 1).bit_length())


def molecule_index(flat: torch.Tensor, lengths: np.ndarray, slots: int, block: int) -> torch.Tensor:
    """[slots, block] int32: row m lists the flat positions `flat` of molecule m's tokens, then -1."""
    index = torch.full((slots, block), -1, dtype=torch.int32)
    columns = torch.arange(block)
    index[:len(lengths)][columns < torch.from_numpy(lengths)[:, None]] = flat.int()
    return index


def attention_mask(segments: torch.Tensor) -> torch.Tensor:
    """[rows, 1, length, length] boolean: query and key in the same segment (causality is the model's)."""
    return segments[:, None, :, None] == segments[:, None, None, :]
