"""Neural force fields (the energy models of `runtime.ff_models`) in a LightningModule that owns model,
loss and optimiser.

Forces are -dE/dR by autograd (with create_graph while training, so that the force loss can be
differentiated). Training needs a Trainer with inference_mode=False (validation takes gradients for
forces) and no torch.compile (it does not support the double backward of the force loss).
"""

from __future__ import annotations

import logging
import warnings
from functools import partial

import lightning as L
import torch
from torch import nn

from chemspec.errors import RunError
from chemspec.runtime.ff_graph import GraphedStep, StepOptimizer
from chemspec.runtime.neighbours import MAX_Z
from chemspec.runtime.precision import MIXED

EV_TO_MEV = 1000.0
CHECK_EVERY = 25  # steps between checks for a non-finite loss: each check waits for the GPU


class ForceField(L.LightningModule):
    """Energy model + loss w_E·L(E) + w_F·L(F) + AdamW/Adam + torch's ReduceLROnPlateau on val_loss.

    Predicted energy = model + Σ_atoms energy_shift[Z] (a float shift is the same for
    every element). Training stops when the plateau schedule brings the rate down to min_lr
    (`stop_reason` "min_lr"), or at the first non-finite loss (`diverged`: its step and the last finite
    loss; checked every CHECK_EVERY steps and before each epoch's validation); `train_forcefield`
    records "max_epochs" otherwise.

    An epoch's bookkeeping (the divergence check of its last steps, its loss log, the plateau step) is
    done by validation's end, before the epoch-end checkpoint (runtime.resume) is written: Lightning
    steps an epoch-interval scheduler after that checkpoint and runs no epoch-end hook again in a
    resumed run. A checkpoint carries this state, so a resumed run ends as an uninterrupted one.

    With `cuda_graphs` the step is a `GraphedStep` (runtime.ff_graph) on padded batches, under manual
    optimisation, clipping the gradient norm to `gradient_clip` itself (Lightning clips otherwise).
    """

    def __init__(self, model: nn.Module, loss: str = "l1", energy_weight: float = 0.01,
                 forces_weight: float = 0.99, learning_rate: float = 1e-3, optimizer: str = "adamw",
                 weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
                 plateau_factor: float = 0.5, patience: int = 50, min_lr: float = 1e-7,
                 energy_shift: float | torch.Tensor = 0.0, nan_at: int | None = None, cuda_graphs: bool = False,
                 gradient_clip: float | None = None):
        super().__init__()
        if loss not in ("l1", "mse"):
            raise RunError(f"loss kind {loss!r} is not one of l1, mse")
        if optimizer not in ("adamw", "adam"):
            raise RunError(f"optimizer {optimizer!r} is not one of adamw, adam")
        self.model = model
        self.loss_kind, self.energy_weight, self.forces_weight = loss, float(energy_weight), float(forces_weight)
        self.learning_rate, self.optimizer_name = float(learning_rate), optimizer
        self.weight_decay, self.betas = float(weight_decay), tuple(betas)
        self.plateau_factor, self.patience, self.min_lr = float(plateau_factor), int(patience), float(min_lr)
        shift = torch.as_tensor(energy_shift, dtype=torch.float64)
        self.register_buffer("energy_shift", shift.expand(MAX_Z).clone() if shift.ndim == 0 else shift.clone())
        if self.energy_shift.shape != (MAX_Z,):
            raise RunError(f"energy_shift must be a float or a [{MAX_Z}] per-element tensor; "
                           f"got shape {tuple(self.energy_shift.shape)}")
        self.step_losses: list[list[float]] = []
        self.val_history: list[float] = []
        self.val_metrics: dict[str, float] = {}
        self.stop_reason: str | None = None
        self.diverged: dict | None = None
        self.nan_at = nan_at
        self.plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self._plateau_state: dict | None = None
        self._epoch: list[torch.Tensor] = []
        self._sums: torch.Tensor | None = None
        self.cuda_graphs, self.gradient_clip = cuda_graphs, gradient_clip
        self.automatic_optimization = not cuda_graphs
        self.graphed: GraphedStep | None = None

    def forward(self, batch: dict[str, torch.Tensor], create_graph: bool = False):
        """(energy [molecules] float64 in eV, forces [atoms, 3] in eV/Å) of a collated batch."""
        with torch.enable_grad():
            positions = batch["positions"].detach().requires_grad_(True)
            electronic = ({key: batch.get(key) for key in ("charge", "spin")}
                          if getattr(self.model, "charge_spin", False) else {})
            raw = self.model(batch["numbers"], positions, batch["idx_i"], batch["idx_j"], batch["batch"],
                             batch["n_atoms"].shape[0], **electronic)
            (grad,) = torch.autograd.grad(raw.sum(), positions, create_graph=create_graph)
        shift = raw.new_zeros(raw.shape, dtype=torch.float64).index_add(
            0, batch["batch"], self.energy_shift.to(torch.float64)[batch["numbers"]])
        return raw.to(torch.float64) + shift, -grad

    def _errors(self, batch, create_graph: bool) -> tuple[torch.Tensor, ...]:
        """(loss of the batch, energy errors, energy errors per atom, force errors)."""
        energy, forces = self(batch, create_graph=create_graph)
        d_e = energy - batch["energy"]
        d_n = d_e / batch["n_atoms"]
        d_f = forces - batch["forces"]
        error = torch.abs if self.loss_kind == "l1" else torch.square
        if "molecule_weight" in batch:  # a padded batch (collate_padded): the mean over what is real
            w_m, w_a = batch["molecule_weight"], batch["atom_weight"]
            loss = (self.energy_weight * (w_m * error(d_e)).sum() / w_m.sum()
                    + self.forces_weight * (w_a[:, None] * error(d_f)).sum() / (3 * w_a.sum()))
        else:
            loss = self.energy_weight * error(d_e).mean() + self.forces_weight * error(d_f).mean()
        return loss, d_e, d_n, d_f

    def _sums_of(self, batch, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss of the batch, error sums: |dE|, dE², |dE/n|, (dE/n)², |dF|, dF², molecules, components)."""
        loss, d_e, d_n, d_f = self._errors(batch, create_graph)
        d_f = d_f.detach().to(torch.float64)
        count = partial(torch.full, (), dtype=torch.float64, device=d_f.device)  # no host copy, so no sync
        sums = torch.stack([d_e.abs().sum(), d_e.square().sum(), d_n.abs().sum(), d_n.square().sum(),
                            d_f.abs().sum(), d_f.square().sum(), count(d_e.numel()), count(d_f.numel())])
        return loss, sums.detach()

    def metrics(self, sums: torch.Tensor) -> dict[str, float]:
        """Loss (as in training, over a whole split) and MAEs in meV from accumulated error sums."""
        ae, se, an, sn, af, sf, m, c = sums.tolist()
        m, c = max(m, 1.0), max(c, 1.0)
        e_term, f_term = (se / m, sf / c) if self.loss_kind == "mse" else (ae / m, af / c)
        return {"loss": self.energy_weight * e_term + self.forces_weight * f_term,
                "energy_mae_meV": EV_TO_MEV * ae / m, "energy_mae_per_atom_meV": EV_TO_MEV * an / m,
                "force_mae_meV_per_A": EV_TO_MEV * af / c, "energy_rmse_meV": EV_TO_MEV * (se / m) ** 0.5,
                "force_rmse_meV_per_A": EV_TO_MEV * (sf / c) ** 0.5}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        faulted = self.global_step == self.nan_at  # read before a manual step counts this one
        if self.graphed is not None:
            if faulted:  # the loss is the graph's, so poison what it reads
                batch = {**batch, "positions": batch["positions"] * float("nan")}
            losses = []
            self.optimizers().step(closure=lambda: losses.append(self.graphed.step(batch)))
            loss = losses[0]
        else:
            loss = self._errors(batch, create_graph=True)[0]
            if faulted:
                loss = loss * float("nan")
        self._epoch.append(loss.detach())
        if len(self._epoch) % CHECK_EVERY == 0:
            self._check_finite()
        return loss

    def on_train_start(self) -> None:
        self._epoch = [loss.to(self.device) for loss in self._epoch]  # restored on the CPU
        if self.stop_reason is not None:  # a checkpoint written as training stopped
            self.trainer.should_stop = True

    def on_validation_epoch_start(self) -> None:
        if self.trainer.state.fn == "fit":
            self.end_epoch()

    def on_train_epoch_end(self) -> None:  # an epoch that max_steps cuts short is not validated
        self.end_epoch()

    def end_epoch(self) -> None:
        """File this epoch's losses (idempotent): also called after fit, since a run whose checkpoint is
        at its last step (rerun after it was killed in its final validation) trains no epoch to end."""
        self._check_finite()
        if self._epoch:
            self.step_losses.append(torch.stack(self._epoch).double().cpu().tolist())
        self._epoch = []

    def _check_finite(self) -> None:
        """Cut this epoch's log at its first non-finite loss and stop training there."""
        if self.diverged is not None or not self._epoch:
            return
        checked = (len(self._epoch) - 1) // CHECK_EVERY * CHECK_EVERY  # what earlier checks saw finite
        finite = torch.isfinite(torch.stack(self._epoch[checked:])).tolist()
        if all(finite):
            return
        bad = checked + finite.index(False)
        self._epoch = self._epoch[:bad]
        kept = [v for epoch in self.step_losses for v in epoch] + [float(v) for v in self._epoch]
        self.diverged = {"step": sum(len(epoch) for epoch in self.step_losses) + bad,
                         "last_finite_loss": kept[-1] if kept else None}
        self.stop_reason = "diverged"
        self.trainer.should_stop = True

    def validation_step(self, batch, batch_idx: int) -> None:
        _, sums = self._sums_of(batch, create_graph=False)
        self._sums = sums if self._sums is None else self._sums + sums

    def on_validation_epoch_end(self) -> None:
        if self._sums is None:
            return
        sums = self.trainer.strategy.reduce(self._sums, reduce_op="sum")
        self._sums = None
        self.val_metrics = self.metrics(sums)
        if not self.trainer.sanity_checking and self.diverged is None:
            self.val_history.append(self.val_metrics["loss"])
            if self.trainer.state.fn == "fit":
                self._step_plateau(self.val_metrics["loss"])
        self.log("val_loss", self.val_metrics["loss"], sync_dist=False)

    def _step_plateau(self, loss: float) -> None:
        self.plateau.step(loss)
        if self.graphed is not None:
            self.graphed.sync_rates()
        if max(group["lr"] for group in self.plateau.optimizer.param_groups) <= self.min_lr * (1 + 1e-9):
            self.stop_reason = "min_lr"
            self.trainer.should_stop = True

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["chemspec"] = {"step_losses": self.step_losses, "epoch_losses": [float(v) for v in self._epoch],
                                  "val_history": self.val_history, "val_metrics": self.val_metrics,
                                  "stop_reason": self.stop_reason, "diverged": self.diverged,
                                  "plateau": self.plateau.state_dict()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["chemspec"]
        self.step_losses, self.val_history = state["step_losses"], state["val_history"]
        self.val_metrics, self.stop_reason = state["val_metrics"], state["stop_reason"]
        self.diverged = state["diverged"]
        self._epoch = [torch.tensor(v, dtype=torch.float64) for v in state["epoch_losses"]]
        self._plateau_state = state["plateau"]

    def configure_optimizers(self):
        kind = torch.optim.AdamW if self.optimizer_name == "adamw" else torch.optim.Adam
        optimizer = kind(self.parameters(), lr=self.learning_rate, betas=self.betas,
                         weight_decay=self.weight_decay, capturable=self.cuda_graphs and self.device.type == "cuda")
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=self.plateau_factor, patience=self.patience, min_lr=self.min_lr, eps=0.0)
        if self._plateau_state is not None:
            self.plateau.load_state_dict(self._plateau_state)
        if not self.cuda_graphs:
            return optimizer
        self.graphed = GraphedStep(lambda batch: self._errors(batch, create_graph=True)[0], list(self.parameters()),
                                   optimizer, self.gradient_clip)
        return StepOptimizer(optimizer)


@torch.no_grad()
def evaluate(module: ForceField, batches, precision: str = "32-true") -> dict[str, float]:
    """Loss and MAEs of a whole split (forces by autograd, no graph kept), under the autocast of a mixed
    `precision` as validation ran, so that test and validation errors compare."""
    was_training = module.training
    module.eval()
    total = None
    dtype = MIXED.get(precision)
    for batch in batches:
        batch = {k: v.to(module.device) for k, v in batch.items()}
        batch = {k: v.to(module.dtype) if v.is_floating_point() and k != "energy" else v for k, v in batch.items()}
        with torch.autocast(module.device.type, dtype=dtype, enabled=dtype is not None):
            sums = module._sums_of(batch, create_graph=False)[1]
        total = sums if total is None else total + sums
    module.train(was_training)
    return module.metrics(total if total is not None else torch.zeros(8, dtype=torch.float64))


def _quiet() -> None:
    # schnetpack imports pytorch_lightning, which re-points lightning's rank-zero messages at its logger
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*(num_workers|does not have many workers|LeafSpec|"
                                              r"smaller than the logging interval|dataloader is not resumable).*")
