"""Throughput and MFU of a ChemGPT cell: the FLOP count, the mean length, and what a CPU reports."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chemspec.runtime.throughput import Throughput, flops_per_token, mean_length, utilisation


def test_flops_per_token_is_six_n_plus_attention():
    # the 201M anchor: 16 layers x 1024, 35.8 tokens a molecule
    assert flops_per_token(201_492_480, 16, 1024, 35.8) == pytest.approx(6 * 201_492_480 + 12 * 16 * 35.8 * 1024)
    assert flops_per_token(0, 2, 64, 10.0) == pytest.approx(15_360)


def test_mean_length_counts_non_pad_tokens_of_the_given_rows_across_chunks():
    pad = 0
    tokens = np.array([[5, 6, 7, 0], [5, 0, 0, 0], [5, 6, 0, 0], [5, 6, 7, 8]], dtype=np.int16)
    assert mean_length(tokens, np.array([0, 1, 2]), pad, chunk=2) == pytest.approx(2.0)
    assert mean_length(tokens, np.array([3]), pad) == pytest.approx(4.0)
    assert mean_length(tokens, np.array([], dtype=int), pad) == 0


def test_a_cpu_run_reports_no_gpu_memory_and_no_mfu():
    assert utilisation(1e5, 1e9, 1, torch.device("cpu")) == {
        "peak_gpu_memory_mb": None, "mfu_datasheet": None, "mfu_measured": None}


def test_a_rate_needs_both_marks():
    clock = Throughput()
    assert clock.tokens_per_s() is None
    clock.marks = {10: (1.0, 1_000), 100: (3.0, 9_000)}
    assert clock.tokens_per_s() == pytest.approx(4_000)
