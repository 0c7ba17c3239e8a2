"""Steady-state training throughput of a ChemGPT cell, as metrics.json reports it: `train_tokens_per_s`,
its model FLOP utilisation (MFU) and the peak GPU memory.

The rate counts the tokens one rank trained between the end of the first tenth of its optimiser steps
(start-up, CUDA and compile warm-up, DDP launch all fall before it) and its last step, over the wall
time between those two step ends, with the GPU synchronised at both. DDP ranks' rates are summed by
the caller. A run that stops early (divergence, SIGTERM) or resumes past the first mark has none.
MFU counts (6N + 12·L·T·d) FLOPs per trained token (N non-embedding parameters, T the mean molecule
length in tokens) over the datasheet's dense bf16 peak and over a bf16 matmul measured on the card.
"""

from __future__ import annotations

import time

import lightning as L
import torch

WARMUP_FRACTION = 0.1


class Throughput(L.Callback):
    """Marks (time, tokens) at two step ends; `tokens_per_s` is this rank's rate between them."""

    def __init__(self) -> None:
        self.marks: dict[int, tuple[float, int]] = {}

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx) -> None:
        last = int(trainer.estimated_stepping_batches)
        first = max(1, int(last * WARMUP_FRACTION))
        step = trainer.global_step
        if step in (first, last) and first < last and step not in self.marks:
            if module.device.type == "cuda":
                torch.cuda.synchronize(module.device)
            self.marks[step] = (time.perf_counter(), module.tokens_seen)

    def tokens_per_s(self) -> float | None:
        if len(self.marks) < 2:
            return None
        (start, tokens_start), (end, tokens_end) = (self.marks[k] for k in sorted(self.marks))
        return (tokens_end - tokens_start) / (end - start)


DATASHEET_BF16_FLOPS = {"H100": 989e12, "H200": 989e12}
"""Dense bf16 peak FLOP/s of the cards with a datasheet figure here (SXM parts), by name substring."""


def flops_per_token(params: int, n_layer: int, n_embd: int, mean_length: float) -> float:
    """Training FLOPs per token of a decoder: 6N for the weights, 12·L·T·d for attention."""
    return 6 * params + 12 * n_layer * mean_length * n_embd


def mean_length(tokens, rows, pad: int, chunk: int = 65536) -> float:
    """Mean count of non-pad tokens over `rows` of a token matrix, a chunk at a time."""
    counts = sum(int((tokens[rows[i:i + chunk]] != pad).sum()) for i in range(0, len(rows), chunk))
    return counts / max(len(rows), 1)


def matmul_peak(device: torch.device) -> float:
    """bf16 FLOP/s of an 8192³ matrix product on this card: 20 of them timed, after 3 warm-ups."""
    a, b = (torch.randn(8192, 8192, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(20):
        a @ b
    torch.cuda.synchronize(device)
    return 20 * 2 * 8192**3 / (time.perf_counter() - start)


def utilisation(rate: float | None, flops: float, devices: int, device: torch.device) -> dict:
    """Peak GPU memory of this rank and MFU of `rate` (tokens/s over all `devices`), against the card's
    datasheet bf16 peak and against its measured matmul rate; None on a CPU or without a rate."""
    if device.type != "cuda":
        return {"peak_gpu_memory_mb": None, "mfu_datasheet": None, "mfu_measured": None}
    memory = torch.cuda.max_memory_allocated(device) / 2**20
    name = torch.cuda.get_device_name(device)
    datasheet = next((v for k, v in DATASHEET_BF16_FLOPS.items() if k in name), None)
    achieved = None if rate is None else flops * rate / devices
    return {"peak_gpu_memory_mb": round(memory, 1),
            "mfu_datasheet": None if achieved is None or datasheet is None else round(achieved / datasheet, 4),
            "mfu_measured": None if achieved is None else round(achieved / matmul_peak(device), 4)}
