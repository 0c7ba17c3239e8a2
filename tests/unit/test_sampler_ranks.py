"""EpochSampler under DDP: every rank a share of the epoch, and a resumed rank continues its own share."""

from __future__ import annotations

import pytest
import torch

import chemspec.runtime.resume as resume
from chemspec.runtime.resume import EpochSampler


def _rank(monkeypatch, rank: int, world: int) -> None:
    monkeypatch.setattr(resume, "_rank_and_world", lambda: (rank, world))


def _shares(monkeypatch, size: int, world: int, **kwargs) -> list[list[int]]:
    shares = []
    for rank in range(world):
        _rank(monkeypatch, rank, world)
        sampler = EpochSampler(size, 7, distributed=True, **kwargs)
        sampler.set_epoch(3)
        shares.append(list(sampler))
        assert len(sampler) == len(shares[-1]) == -(-size // world)
    return shares


@pytest.mark.parametrize("size", [10, 11, 3])
def test_the_ranks_share_one_epoch_order_and_pad_it_like_distributed_sampler(monkeypatch, size):
    whole = EpochSampler(size, 7)
    whole.set_epoch(3)
    order = list(whole)
    shares = _shares(monkeypatch, size, 4)
    interleaved = [share[i] for i in range(len(shares[0])) for share in shares]
    assert interleaved == (order * 4)[:len(interleaved)], "rank r takes positions r, r + 4, ..."
    assert set(interleaved) == set(range(size))


def test_bucketed_shares_cover_every_row(monkeypatch):
    shares = _shares(monkeypatch, 200, 2, lengths=torch.arange(200) % 17, batch_size=16, window=3)
    assert sorted(shares[0] + shares[1]) == list(range(200))


def test_a_resumed_rank_skips_only_its_own_trained_rows(monkeypatch):
    for rank in (0, 1):
        _rank(monkeypatch, rank, 2)
        whole, resumed = EpochSampler(101, 7, distributed=True), EpochSampler(101, 7, distributed=True)
        for sampler in (whole, resumed):
            sampler.set_epoch(1)
        resumed.skip(1, 3 * 8)
        assert list(resumed) == list(whole)[3 * 8:]


def test_a_sampler_not_marked_distributed_ignores_the_world(monkeypatch):
    _rank(monkeypatch, 1, 2)
    sampler = EpochSampler(10, 7, shuffle=False)
    assert list(sampler) == list(range(10)) and len(sampler) == 10


def _evaluation_shares(monkeypatch, size: int, world: int) -> list[list[int]]:
    shares = []
    for rank in range(world):
        _rank(monkeypatch, rank, world)
        sampler = EpochSampler(size, 7, shuffle=False, distributed=True)
        shares.append(list(sampler))
        assert len(sampler) == len(shares[-1])
    return shares


@pytest.mark.parametrize(("size", "world"), [(1001, 2), (10, 3), (4, 4)])
def test_evaluation_shares_score_every_row_once(monkeypatch, size, world):
    """Padding a validation order would score its first rows twice: val_loss would depend on the GPU count."""
    shares = _evaluation_shares(monkeypatch, size, world)
    assert sorted(row for share in shares for row in share) == list(range(size))


def test_an_evaluation_split_smaller_than_the_world_gives_every_rank_a_row(monkeypatch):
    assert _evaluation_shares(monkeypatch, 2, 4) == [[0], [1], [0], [1]]
