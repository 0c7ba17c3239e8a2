"""A force-field training step replayed from one CUDA graph (`training.compile: cuda-graphs`).

At batch 100 of 9-atom molecules a PaiNN step launches over a thousand small kernels (the force
loss's double backward most of them), and the host spends longer launching them than the GPU spends
running them. `GraphedStep` records the whole step once, as one graph: forward, forces by autograd,
the loss's backward, gradient clipping and the optimiser's update; every later step copies its
batch into the graph's inputs and replays it. That needs batches of one shape (`collate_padded`),
an optimiser whose state and learning rate live on the GPU (capturable=True, the rate a tensor), and
manual optimisation in Lightning, whose optimiser step (`StepOptimizer`) runs the replay. On a CPU
the same step runs eagerly, so a spec that asks for graphs trains the same way on either.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

EAGER_STEPS = 3
"""Steps run eagerly, on a side stream, before the capture: they create the optimiser's state and let
autograd and the libraries set themselves up, which must not happen inside a capture."""


class GraphedStep:
    """`step(batch)` trains on one padded batch and returns its loss (detached); see the module's text."""

    def __init__(self, loss: Callable[[dict], torch.Tensor], parameters: list[torch.nn.Parameter],
                 optimizer: torch.optim.Optimizer, gradient_clip: float | None):
        self.loss, self.parameters, self.optimizer, self.clip = loss, parameters, optimizer, gradient_clip
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: dict[str, torch.Tensor] = {}
        self.output: torch.Tensor | None = None
        self.rates: list[torch.Tensor] = []
        self.steps = 0

    def _eager(self, batch: dict) -> torch.Tensor:
        loss = self.loss(batch)
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.clip)
        self.optimizer.step()
        return loss.detach()

    def sync_rates(self) -> None:
        """Hand the graph a learning rate that a scheduler set as a float: the graph reads the tensor."""
        for group, rate in zip(self.optimizer.param_groups, self.rates):
            if group["lr"] is not rate:
                rate.fill_(float(group["lr"]))
                group["lr"] = rate

    def step(self, batch: dict) -> torch.Tensor:
        device = next(iter(batch.values())).device
        self.steps += 1
        if device.type != "cuda" or self.steps <= EAGER_STEPS:
            self.optimizer.zero_grad(set_to_none=True)
            if device.type != "cuda":
                return self._eager(batch)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                loss = self._eager(batch)
            torch.cuda.current_stream().wait_stream(side)
            return loss
        if self.graph is None:
            self._capture(batch, device)
        for key, value in batch.items():
            self.inputs[key].copy_(value, non_blocking=True)
        self.graph.replay()
        return self.output.clone()

    def _capture(self, batch: dict, device: torch.device) -> None:
        self.rates = [torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
                      for group in self.optimizer.param_groups]
        self.sync_rates()
        self.inputs = {key: value.clone() for key, value in batch.items()}
        self.optimizer.zero_grad(set_to_none=True)  # gradients are then written, not added, on every replay
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = self._eager(self.inputs)


class StepOptimizer(torch.optim.Optimizer):
    """What Lightning steps when a force field trains by `GraphedStep`: `step(closure)` runs the closure,
    which replays the graph that already holds the inner optimiser's update. State, parameter groups
    and checkpoints are the inner optimiser's."""

    def __init__(self, inner: torch.optim.Optimizer):  # no Optimizer.__init__: every field is the inner one's
        self.inner = inner

    @property
    def param_groups(self):
        return self.inner.param_groups

    @property
    def state(self):
        return self.inner.state

    @property
    def defaults(self):
        return self.inner.defaults

    def step(self, closure=None):
        return closure() if closure is not None else None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state_dict) -> None:
        self.inner.load_state_dict(state_dict)
