"""Training one force field: reference energies fitted on the training split, the Trainer, and the metrics.

`runtime.ff_models` holds the families and `runtime.forcefield` the LightningModule; this module holds
what a cell needs around them, so that each reads in one sitting.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import numpy as np
import torch
from scipy.spatial.distance import pdist

from chemspec.errors import RunError
from chemspec.runtime.atoms import (ELECTRONIC, UNTRAINED, element_counts, fit_reference_energies,
                                    untrained_elements)
from chemspec.runtime.atoms_states import several_states
from chemspec.runtime.faults import Faults, nan_at
from chemspec.runtime.ff_models import FAMILIES
from chemspec.runtime.forcefield import EV_TO_MEV, ForceField, _quiet, evaluate
from chemspec.runtime.neighbours import MAX_Z, ForceFieldDataset, check_atoms
from chemspec.runtime.resume import Resume
from chemspec.runtime.throughput import Throughput, peak_memory_mb, structures_through
from chemspec.runtime.tpe import window_steps
from chemspec.runtime.train import ctrl_c_as_error, stopped


def energy_reference(data, per_element: bool = False, prior: np.ndarray | None = None) -> float | torch.Tensor:
    """Energy shift from (training) data: the mean energy per atom, or per-element references fitted
    by least squares of the energies on element counts (a [MAX_Z] tensor, 0 for absent elements). `prior`,
    each structure's energy that the untrained model already gives (SpookyNet's ZBL term), is taken off
    the energies first, so that the shift and the prior together start at the data's energies."""
    check_atoms(data)
    if prior is not None:
        data = dataclasses.replace(data, energy=np.asarray(data.energy, dtype=np.float64) - prior)
    if not per_element:
        return float(np.asarray(data.energy, dtype=np.float64).sum() / len(data.numbers))
    table = torch.zeros(MAX_Z, dtype=torch.float64)
    for z, value in fit_reference_energies(data, np.arange(len(data.energy))).items():
        table[z] = value
    return table


def baseline_errors(train, test, energies: bool = True) -> dict[str, float]:
    """The test MAEs of a model that learned nothing, in the cell's units: energies from reference energies
    alone (fitted on `train` by element counts; left out where the loss does not train `energies`) and zero
    forces. A cell that does not beat them measures its untrained start."""
    zero = {"force_mae_meV_per_A": round(EV_TO_MEV * float(np.abs(test.forces).mean()), 3)}
    if not energies:
        return zero
    references = fit_reference_energies(train, np.arange(len(train.energy)))
    elements = np.array(sorted(references))
    predicted = element_counts(test.numbers, test.offsets, elements) @ np.array([references[z] for z in elements])
    return {"energy_mae_meV": round(EV_TO_MEV * float(np.abs(test.energy - predicted).mean()), 3), **zero}


@torch.no_grad()
def prior_energies(model: torch.nn.Module, dataset: ForceFieldDataset, chunk: int = 4096) -> np.ndarray | None:
    """Each structure's energy from the model's physical term at its initial constants (SpookyNet's ZBL
    repulsion: tens of eV for an organic molecule, which the network would otherwise have to learn to
    cancel); None for a model without one."""
    if getattr(model, "zbl", None) is None:
        return None
    parts = []
    for start in range(0, len(dataset), chunk):
        batch = dataset.collate(list(range(start, min(start + chunk, len(dataset)))))
        parts.append(model.repulsion(batch["numbers"], batch["positions"], batch["idx_i"], batch["idx_j"],
                                     batch["batch"], len(batch["n_atoms"])))
    return torch.cat(parts).to(torch.float64).numpy()


def _settings(value, defaults: dict) -> dict:
    """A mapping or a spec object (pydantic) read as a dict over `defaults`' keys."""
    if value is None:
        return dict(defaults)
    if hasattr(value, "model_dump"):  # a spec section may carry fields that force fields do not use
        value = value.model_dump()
    elif set(value) - set(defaults):
        raise RunError(f"unknown settings {sorted(set(value) - set(defaults))}; expected {sorted(defaults)}")
    return {k: value.get(k, v) for k, v in defaults.items()}


LOSS = {"kind": "l1", "energy": 0.01, "forces": 0.99}
OPTIMIZER = {"name": "adamw", "weight_decay": 0.0, "betas": (0.9, 0.999)}
SCHEDULER = {"factor": 0.5, "patience": 50, "min_lr": 1e-7}
EVAL_BATCH = 256  # structures a batch while validating and testing


def _check_elements(model_name: str, train, val, test) -> None:
    """A RunError for elements that SpookyNet cannot embed or that `val` or `test` hold and `train` lacks."""
    trained = np.unique(np.asarray(train.numbers)).tolist()
    if model_name == "spookynet":
        from chemspec.runtime.spookynet_blocks import MAX_Z as SPOOKYNET_MAX_Z

        heavy = sorted({int(z) for split in (train, val, test) for z in np.unique(np.asarray(split.numbers))
                        if z >= SPOOKYNET_MAX_Z})
        if heavy:
            raise RunError(f"elements {heavy} are heavier than radon (86), where SpookyNet's table of electron "
                           "configurations ends; train model.family schnet or painn on these data, or drop the "
                           "structures that hold them")
    for name, split in (("validation", val), ("test", test)):
        if missing := untrained_elements(split, trained):
            raise RunError(f"elements {missing} of the {name} split {UNTRAINED} (the training split holds "
                           f"{len(train.energy)}); train on more structures (data.sizes, or hpo.tpe.data_size for "
                           "TPE cells) or another seed so that every training set holds every element, or drop "
                           "those structures from the data")


def _check_states(model_name: str, charge_spin: bool, splits) -> None:
    """Structures of several charges or multiplicities need a model that sees them."""
    states = sum((split.states() for split in splits), Counter())
    if not charge_spin and (problem := several_states(states, model_name)):
        raise RunError(f"the structures have {problem}")


def _fingerprint(*splits) -> str:
    """sha256 of the structures of `splits`, so that a checkpoint trained on other data is not resumed."""
    digest = hashlib.sha256()
    for split in splits:
        stored = [getattr(split, key) for key in ELECTRONIC if getattr(split, key) is not None]
        for array in (split.numbers, split.positions, split.forces, split.energy, split.offsets, *stored):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _check_reach(dataset: ForceFieldDataset, data, cutoff: float) -> None:
    """Refuse a cutoff that leaves every training structure of two or more atoms without a pair: the
    model would see no geometry, predict zero forces and still train to a finished cell."""
    several = dataset.n_atoms > 1
    if not several.any() or (dataset.n_pairs[several] > 0).any():
        return
    offsets, positions = np.asarray(data.offsets), np.asarray(data.positions, dtype=np.float64)
    closest = min(float(np.min(pdist(positions[a:b]))) for a, b in zip(offsets[:-1], offsets[1:]) if b - a > 1)
    raise RunError(f"model.cutoff {cutoff:g} Å leaves no atom pair within reach in any of the {int(several.sum())} "
                   f"training structures (their closest atoms are {closest:.3g} Å apart): the model would see no "
                   "geometry and predict zero forces; raise model.cutoff (4–6 Å is usual for molecules)")


def train_forcefield(model_name: str, width: int, depth: int, cutoff: float, n_rbf: int, train, val, test,
                     hparams: Mapping, epochs: int, window: float = 1.0, loss: Mapping | None = None,
                     seed: int = 0,
                     accelerator: str = "cpu", precision: str = "32-true", optimizer: Mapping | None = None,
                     scheduler: Mapping | None = None, energy_shift: float | torch.Tensor | str = "mean",
                     gradient_clip: float | None = None,
                     fault: tuple[str, int] | None = None, resume_dir: str | Path | None = None,
                     checkpoint_every: int = 1, cuda_graphs: bool = False,
                     charge_spin: bool = False) -> tuple[dict, ForceField]:
    """Train one force field; returns (metrics, trained ForceField).

    `window` < 1 stops after that share of the `epochs`' steps (a TPE run), validating where it stops.
    `hparams` holds learning_rate and batch_size; `loss` kind/energy/forces; `optimizer`
    name/weight_decay/betas; `scheduler` factor/patience/min_lr. `energy_shift` is a float or a
    per-element tensor, or "mean" / "per_element" to fit it on `train`. The MAE keys are on `test`
    (evaluated in batches of EVAL_BATCH); `val` holds the same
    metrics on the validation split after training. An element of `val` or `test` that `train` lacks
    is a RunError: it would have no reference energy, and the model would never have seen it. `fault` is
    a test's injected fault (runtime/faults.py).

    With `resume_dir`, a checkpoint is written there every `checkpoint_every` epochs and on SIGTERM, and
    training resumes from one written for the same settings and data (runtime.resume); the caller
    deletes the folder (`resume.discard`) once it has written the results. `cuda_graphs` trains on
    padded batches by one CUDA graph of the whole step (runtime.ff_graph; eagerly on a CPU).
    `charge_spin` builds SpookyNet with its charge and spin embeddings; without it, structures of more
    than one charge and multiplicity are a RunError.
    """
    builder = FAMILIES[model_name]
    _check_elements(model_name, train, val, test)
    _check_states(model_name, charge_spin, (train, val, test))
    loss_cfg, opt_cfg = _settings(loss, LOSS), _settings(optimizer, OPTIMIZER)
    sched_cfg = _settings(scheduler, SCHEDULER)
    if isinstance(energy_shift, str) and energy_shift not in ("mean", "per_element"):
        raise RunError(f"energy_shift {energy_shift!r} is not a number, a tensor, 'mean' or 'per_element'")
    dtype = torch.float64 if precision.startswith("64") else torch.float32
    sets = {"train": ForceFieldDataset(train, cutoff, dtype)}
    _check_reach(sets["train"], train, cutoff)
    sets.update((name, ForceFieldDataset(data, cutoff, dtype)) for name, data in (("val", val), ("test", test)))
    L.seed_everything(seed, workers=True, verbose=False)
    model = builder(width, depth, cutoff, n_rbf, **({"charge_spin": True} if charge_spin else {}))
    if isinstance(energy_shift, str):
        prior = prior_energies(model, sets["train"])
        energy_shift = energy_reference(train, per_element=energy_shift == "per_element",
                                        prior=prior)
    _quiet()
    module = ForceField(model, loss=loss_cfg["kind"],
                        energy_weight=loss_cfg["energy"], forces_weight=loss_cfg["forces"],
                        learning_rate=hparams["learning_rate"], optimizer=opt_cfg["name"],
                        weight_decay=opt_cfg["weight_decay"], betas=opt_cfg["betas"],
                        plateau_factor=sched_cfg["factor"], patience=sched_cfg["patience"],
                        min_lr=sched_cfg["min_lr"], energy_shift=energy_shift,
                        nan_at=(nan_at(fault) or (None, None))[0], cuda_graphs=cuda_graphs, gradient_clip=gradient_clip)
    batches = sets["train"].loader(hparams["batch_size"], shuffle=True, seed=seed,
                                   pin_memory=accelerator != "cpu" and torch.cuda.is_available(), padded=cuda_graphs,
                                   epochs=epochs)
    settings = {"family": model_name, "shape": [width, depth, cutoff, n_rbf], "hparams": dict(hparams),
                "epochs": epochs, "window": window, "seed": seed, "accelerator": accelerator, "precision": precision,
                "loss": loss_cfg, "optimizer": opt_cfg, "scheduler": sched_cfg,
                "energy_scale": 1.0, "per_atom": False,  # as checkpoints written before 2026-12-07 hold them
                "energy_shift": torch.as_tensor(energy_shift).tolist(),
                "gradient_clip": gradient_clip, "data": _fingerprint(train, val),
                **({"cuda_graphs": True} if cuda_graphs else {}), **({"charge_spin": True} if charge_spin else {})}
    resume = (Resume(Path(resume_dir), batches.sampler, hparams["batch_size"], checkpoint_every, settings)
              if resume_dir is not None else None)
    throughput = Throughput(lambda step: structures_through(step, len(train), hparams["batch_size"]))
    trainer = L.Trainer(max_epochs=epochs, max_steps=window_steps(window, len(batches) * epochs),
                        accelerator=accelerator, devices=1, precision=precision,
                        inference_mode=False, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0,
                        gradient_clip_val=None if cuda_graphs else gradient_clip, deterministic=accelerator == "cpu",
                        callbacks=[Faults(fault), throughput, *([resume] if resume else [])])
    settings["world_size"] = trainer.world_size
    if trainer.strategy.root_device.type == "cuda" and torch.cuda.is_initialized():  # before CUDA starts there is no peak to reset, and resetting fails
        torch.cuda.reset_peak_memory_stats(trainer.strategy.root_device)
    start = time.perf_counter()
    again = f"continue (from the last checkpoint in {resume_dir}, if one was written)" if resume else "train it again"
    try:
        with ctrl_c_as_error(trainer, f"{model_name} cell interrupted; re-run `dvc repro` to {again}"):
            trainer.fit(module, batches, sets["val"].loader(EVAL_BATCH),
                        ckpt_path=resume.resume_from() if resume else None)
            module.end_epoch()
            if trainer.global_step % len(batches) and module.diverged is None:
                trainer.validate(module, sets["val"].loader(EVAL_BATCH), verbose=False)
    except SystemExit:
        if not trainer.received_sigterm:
            raise
        if resume:
            raise stopped(resume, f"{model_name} cell stopped by {resume.stopped_by} after {trainer.global_step} "
                          f"steps; checkpoint saved in {resume_dir}") from None
        raise RunError(f"{model_name} cell stopped by SIGTERM after {trainer.global_step} steps; without a resume "
                       "folder no checkpoint was kept, so re-running trains it again from the start") from None
    wall = resume.elapsed() if resume else time.perf_counter() - start
    rate = throughput.per_s() if module.diverged is None else None
    peak_mb = peak_memory_mb(trainer.strategy.root_device)
    steps = int(trainer.global_step) if module.diverged is None else module.diverged["step"]
    tested = (evaluate(module.to(trainer.strategy.root_device), sets["test"].loader(EVAL_BATCH), precision)
              if module.diverged is None else dict.fromkeys(("energy_mae_meV", "force_mae_meV_per_A",
                                                             "energy_mae_per_atom_meV", "loss")))
    if loss_cfg["energy"] == 0:  # forces fix the energy only up to a constant, which nothing then trained
        tested.update(energy_mae_meV=None, energy_mae_per_atom_meV=None)
    return {"family": model_name, "width": width, "depth": depth, "capacity": width * depth,
            "params": sum(p.numel() for p in module.model.parameters()),
            "energy_mae_meV": tested["energy_mae_meV"], "force_mae_meV_per_A": tested["force_mae_meV_per_A"],
            "energy_mae_per_atom_meV": tested["energy_mae_per_atom_meV"], "test_loss": tested["loss"],
            "baseline": baseline_errors(train, test, energies=loss_cfg["energy"] > 0),
            "val_loss": module.val_history[-1] if module.val_history and module.diverged is None else None,
            "val": module.val_metrics, "val_history": module.val_history,
            "epochs": epochs, "epochs_trained": round(steps / len(batches), 4), "steps": steps,
            "steps_per_epoch": len(batches),
            "stop_reason": module.stop_reason or ("window" if window < 1 else "max_epochs"),
            "step_losses": module.step_losses,
            **({"status": "ok"} if module.diverged is None else
               {"status": "diverged", "divergence": module.diverged}),
            "hparams": dict(hparams), "wall_time_s": round(wall, 3),
            "train_structures_per_s": None if rate is None else round(rate, 1),
            "peak_gpu_memory_mb": peak_mb}, module
