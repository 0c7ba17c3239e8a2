"""Packed batches: every molecule once, attention and positions per molecule, the padded loss, one shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chemspec.errors import SpecError
from chemspec.runtime.chemgpt import ChemGPT, gpt_neo_config, loader
from chemspec.runtime.molecules import BOS, EOS, PAD
from chemspec.runtime.packing import IGNORE, fixed_rows, pack, place, row_count
from chemspec.specs import load_study
from chemspec.specs.training import Optimizer, Scheduler
from tests.conftest import tiny_study, write_spec

MAX_LENGTH = 20


def _tokens(rows: int = 60, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tokens = np.full((rows, MAX_LENGTH), PAD, dtype=np.int16)
    for r in range(rows):
        n = int(rng.integers(3, MAX_LENGTH + 1))
        tokens[r, :n] = [BOS, *rng.integers(4, 30, n - 2), EOS]
    return tokens


def _molecules(batch: dict[str, torch.Tensor]) -> list[tuple[int, ...]]:
    found = []
    for ids, segments in zip(batch["input_ids"], batch["segments"]):
        for s in segments.unique().tolist():
            if s:
                found.append(tuple(ids[segments == s].tolist()))
    return found


def test_first_fit_decreasing_fills_rows_and_keeps_molecules_whole():
    row, start, used = place(np.array([6, 5, 5, 4, 3, 2, 2, 1]), 10)
    assert used == 3
    for r in range(used):
        spans = sorted((start[i], start[i] + n) for i, n in enumerate([6, 5, 5, 4, 3, 2, 2, 1]) if row[i] == r)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])) and spans[-1][1] <= 10


def test_every_molecule_is_packed_once_with_positions_and_targets_of_its_own():
    tokens = torch.from_numpy(_tokens()).long()
    batch = pack(tokens, 32)
    rows, length = batch["input_ids"].shape
    assert length == 32 and rows == row_count(place((tokens != PAD).sum(1).numpy(), 32)[2])
    expected = sorted(tuple(r[r != PAD].tolist()) for r in tokens)
    assert sorted(_molecules(batch)) == expected
    starts = batch["position_ids"] == 0
    real = batch["segments"] > 0
    assert (batch["input_ids"][starts & real] == BOS).all(), "every molecule starts its own positions"
    assert (batch["labels"][starts | ~real] == IGNORE).all(), "no [BOS] is a target, no padding either"
    assert int((batch["labels"] != IGNORE).sum()) == int((tokens != PAD).sum()) - len(tokens)
    assert int(batch["attention_mask"].sum()) == int((tokens != PAD).sum())


def test_the_molecule_index_lists_each_molecules_positions_in_order_in_fixed_slots():
    tokens = torch.from_numpy(_tokens()).long()
    batch = pack(tokens, 32, slots=64)
    index = batch["molecules"]
    assert index.dtype == torch.int32 and index.shape == (64, 32), "slots x the power of two >= width 20"
    flat_ids = batch["input_ids"].flatten()
    for m, row in enumerate(tokens):
        n = int((row != PAD).sum())
        assert flat_ids[index[m, :n].long()].tolist() == row[:n].tolist()
        assert (index[m, n:] == -1).all()
    assert (index[len(tokens):] == -1).all(), "empty slots past the batch's molecules"
    assert sorted(index[index >= 0].tolist()) == torch.nonzero(batch["segments"].flatten()).flatten().tolist()


def test_fixed_rows_hold_the_batches_heaviest_in_tokens_even_of_a_skewed_length_mix():
    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(4, 12, 3000), rng.integers(40, 60, 1000)])
    batches = sorted((rng.choice(lengths, 64, replace=False) for _ in range(5000)), key=lambda b: -int(b.sum()))
    rows = fixed_rows(lengths, 64, 64)
    assert max(place(b, 64)[2] for b in batches[:40]) <= rows, "heavy batches hold more long molecules"


def test_fixed_rows_hold_every_random_batch_and_waste_at_most_two_rows():
    rng = np.random.default_rng(3)
    lengths = rng.normal(36, 5, 5000).clip(8, 57).astype(int)
    rows = fixed_rows(lengths, 256, 256)
    assert all(place(rng.choice(lengths, 256, replace=False), 256)[2] <= rows for _ in range(300))
    bound = 256 * lengths.mean() + 4 * lengths.std() * 16
    assert rows <= -(-bound // 256) + 2


def test_row_counts_round_to_few_shapes_without_drowning_small_batches():
    assert [row_count(used) for used in (0, 1, 5, 12, 31, 37, 38, 40, 73)] == [1, 1, 5, 12, 32, 40, 40, 40, 80]


def test_a_molecule_longer_than_a_row_is_refused():
    with pytest.raises(ValueError, match="a molecule of 20 tokens does not fit packed rows of 16"):
        pack(torch.from_numpy(_tokens(rows=200)).long(), 16)


def test_packed_batches_give_the_loss_and_gradients_of_padded_batches():
    torch.manual_seed(0)
    config = gpt_neo_config({"n_layer": 2, "n_embd": 32, "n_head": 4, "max_length": MAX_LENGTH}, 30)
    module = ChemGPT(config, 1e-3, Optimizer(), Scheduler(), total_steps=1)
    tokens = _tokens()
    results = []
    for pack_length in (None, 48):  # packed rows may be longer than the model's positions
        module.zero_grad()
        batch = next(iter(loader(tokens, np.arange(len(tokens)), len(tokens), False, 0, pack_length=pack_length)))
        total, count = module.token_loss(batch)
        (total / count).backward()
        results.append((total.detach(), count, {n: p.grad.clone() for n, p in module.named_parameters()}))
    (padded, n_padded, g_padded), (packed, n_packed, g_packed) = results
    assert int(n_padded) == int(n_packed)
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-4)
    for name, grad in g_padded.items():
        torch.testing.assert_close(g_packed[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_every_packed_batch_of_a_loader_has_one_shape_the_short_last_one_included():
    tokens = _tokens(rows=500, seed=1)
    packed = loader(tokens, np.arange(500), 64, True, 0, pack_length=64)
    padded = loader(tokens, np.arange(500), 64, True, 0)
    assert len(packed) == len(padded) == 8
    rows = fixed_rows((tokens != PAD).sum(1), 64, 64)
    assert {tuple(b["input_ids"].shape) for b in packed} == {(rows, 64)}
    assert rows < MAX_LENGTH, "fewer rows than a batch of the longest molecules would need"


def test_a_batch_that_overflows_the_fixed_rows_gets_a_rounded_count_of_its_own():
    tokens = torch.from_numpy(_tokens(rows=60)).long()
    used = place((tokens != PAD).sum(1).numpy(), 32)[2]
    assert pack(tokens, 32, rows=used + 3)["input_ids"].shape == (used + 3, 32)
    assert pack(tokens, 32, rows=used - 1)["input_ids"].shape == (row_count(used), 32)


@pytest.mark.parametrize("overrides,message", [
    ({"training.packing": 32}, r"training.packing: rows of 32 positions cannot hold the molecules of model.sizes"),
    ({"training.packing": 128, "training.bucket_batches": 4}, "training.packing: set it or training.bucket_batches, not both"),
    ({"training.compile": "cuda-graphs"}, "training.compile: cuda-graphs records a graph for every batch shape"),
])
def test_packing_settings_that_cannot_work_are_refused_with_the_key_to_change(tmp_path, overrides, message):
    with pytest.raises(SpecError, match=message):
        load_study(write_spec(tmp_path / "s.yaml", tiny_study(**overrides)))

