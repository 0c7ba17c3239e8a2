"""Length bucketing: every row once an epoch, batches of similar length, deterministic, resumable; a
bucketed or packed study trains the same steps as a plain one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chemspec.runtime.chemgpt import PAD, loader
from chemspec.runtime.resume import EpochSampler

ROWS, WIDTH = 1000, 60


def _tokens() -> np.ndarray:
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, WIDTH, ROWS)
    tokens = np.full((ROWS, WIDTH), PAD, dtype=np.int16)
    for row, n in enumerate(lengths):
        tokens[row, :n] = rng.integers(4, 30, n)
    return tokens


def _epoch(bucket_batches: int | None, epoch: int = 0, seed: int = 0) -> list[torch.Tensor]:
    batches = loader(_tokens(), np.arange(ROWS), 32, True, seed, bucket_batches=bucket_batches)
    batches.sampler.set_epoch(epoch)
    return [batch["input_ids"] for batch in batches]


def test_bucketed_batches_see_every_row_once_and_pad_far_less():
    plain, bucketed = _epoch(None), _epoch(10)
    assert len(bucketed) == len(plain) == -(-ROWS // 32)
    seen = sorted(tuple(row[row != PAD].tolist()) for batch in bucketed for row in batch)
    assert seen == sorted(tuple(row[row != PAD].tolist()) for batch in plain for row in batch)

    def padding(batches):
        return sum(int((b == PAD).sum()) for b in batches) / sum(b.numel() for b in batches)

    assert padding(plain) > 0.3 and padding(bucketed) < 0.25 * padding(plain)
    assert len(bucketed[-1]) == ROWS % 32, "the short batch stays last"


def test_bucketing_is_a_pure_function_of_seed_and_epoch():
    first = _epoch(10, epoch=1)
    assert all(torch.equal(a, b) for a, b in zip(first, _epoch(10, epoch=1)))
    assert not all(torch.equal(a, b) for a, b in zip(first, _epoch(10, epoch=2)))
    widths = [b.shape[1] for b in first[:-1]]
    assert widths != sorted(widths), "batches are shuffled, not served short to long"


def test_a_resumed_epoch_continues_the_same_bucketed_order():
    lengths = torch.as_tensor((_tokens() != PAD).sum(1))
    whole = EpochSampler(ROWS, 3, True, lengths, 32, 10)
    whole.set_epoch(2)
    resumed = EpochSampler(ROWS, 3, True, lengths, 32, 10)
    resumed.set_epoch(2)
    resumed.skip(2, 5 * 32)
    assert list(resumed) == list(whole)[5 * 32:]


@pytest.mark.parametrize("size", [31, 32, 33])
def test_every_row_once_whatever_the_remainder(size):
    sampler = EpochSampler(size, 0, True, torch.arange(size), 32, 2)
    assert sorted(sampler) == list(range(size))


@pytest.mark.parametrize("layout", [{"training.bucket_batches": 4}, {"training.packing": 64}])
def test_a_bucketed_or_packed_study_trains_the_same_steps_under_an_identity_of_its_own(tmp_path, monkeypatch,
                                                                                      layout):
    from chemspec import api
    from chemspec.compiler import expand, identity
    from chemspec.specs import load_study
    from tests.conftest import tiny_study, write_spec

    monkeypatch.chdir(tmp_path)
    plain = expand(load_study(write_spec(tmp_path / "plain.yaml", tiny_study())))
    api.compile(write_spec(tmp_path / "s.yaml", tiny_study(**layout)))
    cells = api.load_cells("params.yaml")
    assert identity(cells.train["xs-200"]) != identity(plain.train["xs-200"])
    api.run("data")
    api.run("split")
    result = api.run("tpe", "params.yaml", "lr3e-3-bs32")
    assert result["status"] == "ok" and result["steps"] == 13


def test_a_skip_holds_for_every_iteration_of_its_epoch_and_ends_with_it():
    sampler = EpochSampler(100, 3)
    sampler.set_epoch(1)
    whole = list(sampler)
    sampler.skip(1, 40)
    assert list(sampler) == list(sampler) == whole[40:], "a loader may begin an epoch more than once"
    sampler.set_epoch(2)
    assert sorted(sampler) == list(range(100))
