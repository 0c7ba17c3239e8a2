"""SIGTERM under DDP: every rank stops at the same step, without making the host wait for each step.

Lightning 2.6 broadcasts rank 0's SIGTERM flag at the start of every DDP step and reads it on the
host (`.item()`), so the host waits for the GPU to finish each step before it queues the next one.
`AgreedStop` takes that broadcast's place: each step all-reduces (max) every rank's flag on the
device without waiting, and reads the result of the step LAG steps back (the host waits only if it
has run more than LAG steps ahead of the GPU). Every rank reads the same step's result at the same
step, so all stop together, up to LAG + 1 steps after the signal. The signal handler only notes it
(Lightning's own handler broadcasts from inside the handler, which deadlocks ranks that each receive
the signal). A signal during the last LAG steps of training is not acted on: the cell finishes and
writes its results, atomically, as it would have a moment later.

SLURM signals every process of a job step, loader workers included. PyTorch's workers die of a SIGTERM
that their parent did not send, and the parent then fails with "DataLoader worker ... killed by
signal" instead of checkpointing; `leave_sigterm_to_parent` keeps them alive until the parent stops.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections import deque

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader

LAG = 2


class AgreedStop:
    """Called by Lightning's training loop before each step in place of its SIGTERM broadcast."""

    def __init__(self, trainer: L.Trainer, requested: bool = False):
        self.trainer = trainer
        self.requested = requested
        self.pending: deque[tuple[torch.Tensor, torch.cuda.Event | None]] = deque()

    def note(self, signum: int, frame: object) -> None:
        self.requested = True

    def __call__(self) -> None:
        device = self.trainer.strategy.root_device
        flag = torch.full((1,), int(self.requested), dtype=torch.int32, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        event = None
        if device.type == "cuda":
            flag = flag.to("cpu", non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        self.pending.append((flag, event))
        if len(self.pending) <= LAG:
            return
        flag, event = self.pending.popleft()
        if event is not None:
            event.synchronize()
        if int(flag):
            self.trainer._signal_connector.received_sigterm = True
            with contextlib.suppress(Exception):
                dist.barrier()
            raise SIGTERMException()


class PreemptibleLoader(DataLoader):
    """A DataLoader whose workers are forked (on Linux, whatever Python's default start method) with
    SIGTERM and SIGINT blocked: a signal that reaches one before its worker_init_fn (`leave_sigterm_to_parent`)
    has run waits for it instead of killing the worker. The parent's main thread blocks SIGTERM only while
    the workers are forked; a signal then arriving is handled as usual once they stand."""

    def __init__(self, *args, **kwargs):
        if hasattr(signal, "sigwaitinfo") and kwargs.get("num_workers", 0) > 0:
            kwargs.setdefault("multiprocessing_context", "fork")  # forkserver's workers get the server's mask
        super().__init__(*args, **kwargs)

    def _get_iterator(self):
        if self.num_workers == 0 or not hasattr(signal, "sigwaitinfo"):
            return super()._get_iterator()
        before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            return super()._get_iterator()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)


def leave_sigterm_to_parent(worker_id: int) -> None:
    """A DataLoader worker_init_fn: this worker exits on its parent's SIGTERM (as PyTorch's own handler
    does) and ignores anyone else's, and ignores Ctrl-C, so a preempted or interrupted step's parent can
    checkpoint and shut it down."""
    if not hasattr(signal, "sigwaitinfo"):  # macOS: no SLURM there
        return
    parent = multiprocessing.parent_process().pid  # not getppid(): under forkserver that is the server
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops them

    def wait() -> None:
        while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent:
            pass
        os._exit(0)

    threading.Thread(target=wait, name="sigterm", daemon=True).start()
