"""Steady-state training throughput of a cell, as metrics.json reports it (`train_tokens_per_s`).

The rate counts the tokens one rank trained between the end of the first tenth of its optimiser steps
(start-up, CUDA and compile warm-up, DDP launch all fall before it) and its last step, over the wall
time between those two step ends, with the GPU synchronised at both. DDP ranks' rates are summed by
the caller. A run that stops early (divergence, SIGTERM) or resumes past the first mark has none.
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
