"""Throughput of a cell and MFU of a ChemGPT cell: which steps are timed, validation left out, the FLOP count."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import chemspec.runtime.throughput as throughput
from chemspec.runtime.throughput import (Throughput, flops_per_token, mean_length, mfu, structures_through,
                                         utilisation)


def _drive(clock: Throughput, steps: range, total: int, now: list[float], validate_after: int | None = None) -> None:
    """Step a Throughput through `steps` of a `total`-step run, 100 tokens and 1 s a step."""
    module = SimpleNamespace(device=torch.device("cpu"), tokens_seen=0)
    for step in steps:
        now[0] += 1.0
        module.tokens_seen = 100 * step
        clock.on_train_batch_end(SimpleNamespace(estimated_stepping_batches=total, global_step=step), module, None,
                                 None, step)
        if step == validate_after:
            clock.on_validation_start(None, module)
            now[0] += 30.0
            clock.on_validation_end(None, module)


@pytest.fixture
def now(monkeypatch) -> list[float]:
    clock = [0.0]
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: clock[0])
    return clock


def test_the_rate_runs_from_the_first_tenth_of_the_steps_to_the_last(now):
    clock = Throughput()
    _drive(clock, range(1, 101), 100, now)
    assert sorted(clock.marks) == [10, 100]
    assert clock.per_s() == pytest.approx(100.0)


def test_validation_between_the_marks_is_left_out_and_before_them_is_not_counted(now):
    clock = Throughput()
    _drive(clock, range(1, 6), 100, now, validate_after=5)
    _drive(clock, range(6, 101), 100, now, validate_after=50)
    assert clock.validating_s == pytest.approx(30.0)
    assert clock.per_s() == pytest.approx(100.0)


def test_an_unfinished_or_too_short_run_has_no_rate(now):
    stopped, tiny, short = Throughput(), Throughput(), Throughput()
    _drive(stopped, range(1, 60), 100, now)
    _drive(tiny, range(1, 2), 1, now)
    _drive(short, range(1, 6), 5, now)
    assert stopped.per_s() is None and tiny.marks == {} and tiny.per_s() is None and short.per_s() is None


def test_a_rate_is_timed_over_three_steps_at_least(now):
    """A 7-step cell was timed over its last 2 steps, and reported 8x the rate of its neighbours."""
    seven, eight = Throughput(), Throughput()
    _drive(seven, range(1, 8), 7, now)
    _drive(eight, range(1, 9), 8, now)
    assert seven.per_s() is None and sorted(eight.marks) == [5, 8]


def test_a_run_its_module_stopped_early_is_timed_to_its_last_step_and_an_interrupted_one_is_not(now):
    """A force field stopped at min_lr, its status ok, read '-' for its speed."""
    module = SimpleNamespace(device=torch.device("cpu"), tokens_seen=0)
    stopped, interrupted = Throughput(), Throughput()
    for clock, broken in ((stopped, False), (interrupted, True)):
        _drive(clock, range(1, 60), 100, now, validate_after=59)
        module.tokens_seen = 100 * 59
        clock.on_train_end(SimpleNamespace(estimated_stepping_batches=100, global_step=59, interrupted=broken), module)
    assert sorted(stopped.marks) == [10, 59] and stopped.per_s() == pytest.approx(100.0)
    assert interrupted.per_s() is None


def test_the_first_steps_after_a_start_or_resume_are_not_timed(now):
    """A force field's CUDA graph runs three eager steps and is captured in the fourth, in every process."""
    fresh = Throughput()
    _drive(fresh, range(1, 31), 30, now)
    resumed = Throughput()
    resumed.on_train_start(SimpleNamespace(global_step=40), None)
    _drive(resumed, range(41, 101), 100, now)
    assert sorted(fresh.marks) == [5, 30] and sorted(resumed.marks) == [45, 100]
    assert resumed.per_s() == pytest.approx(100.0)


def test_structures_count_each_epochs_short_last_batch():
    # 7 structures in batches of 3: steps of 3, 3 and 1 structures an epoch
    assert [structures_through(step, 7, 3) for step in range(8)] == [0, 3, 6, 7, 10, 13, 14, 17]
    assert structures_through(300, 6, 3) == 900


def test_a_count_by_step_replaces_the_modules_tokens(now):
    clock = Throughput(lambda step: structures_through(step, 7, 3))
    _drive(clock, range(1, 31), 30, now)
    assert sorted(clock.marks) == [5, 30]
    assert clock.per_s() == pytest.approx((70 - 13) / 25)


def test_flops_per_token_is_six_n_plus_attention():
    # the 201M anchor: 16 layers x 1024, 35.8 tokens a molecule
    assert flops_per_token(201_492_480, 16, 1024, 35.8) == pytest.approx(1_215_993_446.4)
    assert flops_per_token(0, 2, 64, 10.0) == pytest.approx(15_360)


def test_mfu_divides_by_every_card_and_needs_a_rate_and_a_peak():
    assert mfu(300_000.0, 1.2e9, 1, 989e12) == pytest.approx(0.364, abs=1e-4)
    assert mfu(600_000.0, 1.2e9, 2, 989e12) == pytest.approx(0.364, abs=1e-4)
    assert mfu(None, 1.2e9, 1, 989e12) is None and mfu(1.0, 1.2e9, 1, None) is None


def test_only_sxm_names_have_a_datasheet_peak():
    table = throughput.DATASHEET_BF16_FLOPS
    assert table["NVIDIA H200"] == table["NVIDIA H100 80GB HBM3"] == 989e12
    assert "NVIDIA H100 PCIe" not in table and "NVIDIA H200 NVL" not in table


def test_mean_length_counts_non_pad_tokens_of_the_given_rows_across_chunks():
    pad = 0
    tokens = np.array([[5, 6, 7, 0], [5, 0, 0, 0], [5, 6, 0, 0], [5, 6, 7, 8]], dtype=np.int16)
    assert mean_length(tokens, np.array([0, 1, 2]), pad, chunk=2) == pytest.approx(2.0)
    assert mean_length(tokens, np.array([3]), pad) == pytest.approx(4.0)
    assert mean_length(tokens, np.array([], dtype=int), pad) == 0


def test_a_cpu_run_reports_no_gpu_memory_and_no_mfu():
    assert set(utilisation(1e5, 1e9, 1, torch.device("cpu")).values()) == {None}
