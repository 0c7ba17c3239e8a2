"""ChemGPT's loader workers outlive a SIGTERM that SLURM sends them as they start (runtime.preempt)."""

from __future__ import annotations

import os
import signal
import subprocess

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from chemspec.runtime.chemgpt import loader
from chemspec.runtime.preempt import PreemptibleLoader, leave_sigterm_to_parent

pytestmark = pytest.mark.skipif(not hasattr(signal, "sigwaitinfo"), reason="SLURM's signals are Linux's")


def _signalled_before_init(worker_id: int) -> None:
    """SIGTERM from another process, as slurmstepd sends it, before the worker's own set-up has run."""
    subprocess.run(["kill", "-s", "TERM", str(os.getpid())], check=True)
    leave_sigterm_to_parent(worker_id)


def _batches(kind: type[DataLoader]) -> list[torch.Tensor]:
    data = TensorDataset(torch.arange(8))
    return [b[0] for b in kind(data, batch_size=4, num_workers=2, worker_init_fn=_signalled_before_init)]


def test_a_worker_signalled_before_its_set_up_still_serves_every_batch():
    batches = _batches(PreemptibleLoader)
    assert torch.equal(torch.cat(batches), torch.arange(8))
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, set()), "the parent's mask is restored"


def test_without_the_blocked_fork_the_same_signal_kills_the_worker():
    with pytest.raises(RuntimeError, match=r"DataLoader worker .*(exited unexpectedly|killed by signal)"):
        _batches(DataLoader)


def test_chemgpts_loader_forks_its_workers_that_way():
    tokens = np.ones((8, 4), dtype=np.int64)
    batches = loader(tokens, np.arange(8), 4, False, 0, workers=2)
    assert isinstance(batches, PreemptibleLoader)
    assert batches.multiprocessing_context.get_start_method() == "fork", "forkserver's workers get its mask"
