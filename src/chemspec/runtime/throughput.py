"""Steady-state training throughput of a cell, as metrics.json reports it: a ChemGPT cell's
`train_tokens_per_s` with its model FLOP utilisation (MFU) and peak GPU memory, a force field's
`train_structures_per_s`.

The rate counts what one rank trained (ChemGPT: predicted tokens, L - 1 for a molecule of L tokens;
a force field: structures) from the end of the first tenth of its optimiser steps, or SETTLE_STEPS
after this process started training if that is later (start-up, CUDA and compile warm-up, a force
field's graph capture and DDP launch all fall before it), to its last step, over the wall time
between those two step ends less the validation runs in between, with the GPU synchronised at each
of those points. So a resumed run is timed over what it trained after resuming. DDP ranks' rates are
summed by the caller. A run that its module stops early is timed to the step it stopped at; one interrupted
before its last step, or with fewer than TIMED_STEPS steps after its warm-up, has none. MFU
counts (6N + 12·L·T·d) FLOPs per token (N non-embedding parameters, T the mean molecule length) over
the datasheet's dense bf16 peak and over a bf16 matmul timed on the card.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import lightning as L
import torch

WARMUP_FRACTION = 0.1
SETTLE_STEPS = 5
"""Steps after a process starts training before its rate is timed: a force field's CUDA graph runs
ff_graph.EAGER_STEPS eager steps and is captured in the next, each time a process starts."""
TIMED_STEPS = 3
"""Steps a rate is timed over at least: over two, a 7-step CPU cell reported 8x the rate of its neighbours."""


def _sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class Throughput(L.Callback):
    """Marks (time, items trained) at two step ends; `per_s` is this rank's rate between them. The items
    are the module's `tokens_seen`, or `count(step)`: those trained through that global step."""

    def __init__(self, count: Callable[[int], int] | None = None) -> None:
        self.count = count
        self.started = 0
        self.marks: dict[int, tuple[float, int]] = {}
        self.validating_s = 0.0
        self._validation_start: float | None = None

    def _steps(self, trainer: L.Trainer) -> tuple[int, int]:
        last = int(trainer.estimated_stepping_batches)
        return max(int(last * WARMUP_FRACTION), self.started + SETTLE_STEPS), last

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.started = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx) -> None:
        first, last = self._steps(trainer)
        step = trainer.global_step
        if step in (first, last) and first + TIMED_STEPS <= last and step not in self.marks:
            self.marks[step] = (_sync(module.device), self.count(step) if self.count else module.tokens_seen)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """A run that its module stopped early (a force field's learning rate at min_lr) is timed to its last step;
        one interrupted (a signal, an error) is not."""
        step, first = trainer.global_step, self._steps(trainer)[0]
        if len(self.marks) == 1 and first in self.marks and step >= first + TIMED_STEPS and not trainer.interrupted:
            self.marks[step] = (_sync(module.device), self.count(step) if self.count else module.tokens_seen)

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.marks and len(self.marks) < 2:
            self._validation_start = _sync(module.device)

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._validation_start is not None:
            self.validating_s += _sync(module.device) - self._validation_start
            self._validation_start = None

    def per_s(self) -> float | None:
        if len(self.marks) < 2:
            return None
        (start, done_start), (end, done_end) = (self.marks[k] for k in sorted(self.marks))
        return (done_end - done_start) / (end - start - self.validating_s)


def structures_through(step: int, structures: int, batch_size: int) -> int:
    """Structures trained through global `step` by batches of `batch_size` over epochs of `structures`
    (each epoch's last batch holds the rest)."""
    per_epoch = -(-structures // batch_size)
    epochs, batches = divmod(step, per_epoch)
    return epochs * structures + min(batches * batch_size, structures)


DATASHEET_BF16_FLOPS = {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H200": 989e12}
"""Dense bf16 peak FLOP/s of the SXM cards with a datasheet figure here, by the name CUDA reports
(PCIe and NVL parts have other peaks and other names)."""


def flops_per_token(params: int, n_layer: int, n_embd: int, mean_length: float) -> float:
    """Training FLOPs per token of a decoder: 6N for the weights, 12·L·T·d for attention.

    N leaves out the embedding, and with it the LM head tied to it (6·d·V more a token), as Kaplan et
    al. and issue 7's MFU count: under 1% of a 20M ChemGPT's FLOPs, but about 7% of a 0.1M one's."""
    return 6 * params + 12 * n_layer * mean_length * n_embd


def mean_length(tokens, rows, pad: int, chunk: int = 65536) -> float:
    """Mean count of non-pad tokens over `rows` of a token matrix, a chunk at a time."""
    counts = sum(int((tokens[rows[i:i + chunk]] != pad).sum()) for i in range(0, len(rows), chunk))
    return counts / max(len(rows), 1)


def mfu(rate: float | None, flops: float, devices: int, peak: float | None) -> float | None:
    """Model FLOP utilisation of `rate` tokens/s over `devices` cards of `peak` FLOP/s each."""
    if rate is None or not peak:
        return None
    return round(flops * rate / (devices * peak), 4)


def matmul_peak(device: torch.device) -> float:
    """bf16 FLOP/s of an 8192³ matrix product on this card: 20 of them timed, after 3 warm-ups."""
    a, b = (torch.randn(8192, 8192, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start = _sync(device)
    for _ in range(20):
        a @ b
    return 20 * 2 * 8192**3 / (_sync(device) - start)


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak GPU memory allocated on `device` since the last reset, in MiB; None on a CPU."""
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def utilisation(rate: float | None, flops: float, devices: int, device: torch.device) -> dict:
    """Peak GPU memory of this rank since the last reset, the bf16 matmul rate timed here, and MFU of
    `rate` (tokens/s over all `devices`) against both peaks; None on a CPU."""
    if device.type != "cuda":
        return {"peak_gpu_memory_mb": None, "matmul_bf16_tflops": None, "mfu_datasheet": None, "mfu_measured": None}
    measured = matmul_peak(device)
    return {"peak_gpu_memory_mb": peak_memory_mb(device), "matmul_bf16_tflops": round(measured / 1e12, 1),
            "mfu_datasheet": mfu(rate, flops, devices, DATASHEET_BF16_FLOPS.get(torch.cuda.get_device_name(device))),
            "mfu_measured": mfu(rate, flops, devices, measured)}
