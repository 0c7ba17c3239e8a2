"""The tpe and train stages for force fields: SchNet, PaiNN or SpookyNet on a cell's split of the atoms store.

Per-element reference energies are fitted on the cell's training structures only and subtracted
inside the model's energy shift, so mixed-molecule data (ANI-1x) trains sensibly.
"""

from __future__ import annotations

from pathlib import Path

from chemspec.compiler.cells import TrainCell, identity
from chemspec.runtime.io import write_json
from chemspec.runtime.split import read_rows
from chemspec.runtime.stack import training_stack


def run_forcefield(cell: TrainCell, hp: dict, device: str) -> dict:
    import torch

    from chemspec.runtime.atoms import load_atoms
    from chemspec.runtime.faults import fault_for
    from chemspec.runtime.forcefield_train import train_forcefield
    from chemspec.runtime.train import write_results

    data = load_atoms(Path(cell.data_dir) / "atoms.npz")
    split = Path(cell.split_dir)
    parts = {name: data.subset(rows)
             for name, rows in read_rows(split, (f"train-{cell.data_size}", "val", "test"), len(data)).items()}
    training = cell.training
    size = cell.size
    metrics, module = train_forcefield(
        cell.family, size["width"], size["depth"], size["cutoff"], size["n_rbf"], parts[f"train-{cell.data_size}"],
        parts["val"], parts["test"], hp, cell.epochs, window=cell.window, loss=training.loss, seed=cell.seed,
        accelerator=training.accelerator, precision=training.precision, optimizer=training.optimizer,
        scheduler=training.scheduler, energy_shift="per_element", gradient_clip=training.gradient_clip,
        fault=fault_for(cell.name), resume_dir=cell.resume_dir, checkpoint_every=training.checkpoint_every_n_epochs,
        cuda_graphs=training.compile == "cuda-graphs", charge_spin=size.get("charge_spin", False))
    step_losses = metrics.pop("step_losses")
    result = {"cell": cell.name, "identity": identity(cell), "model": cell.size_name, "data_size": cell.data_size,
              "seed": cell.seed,
              **metrics, "device": device, "stack": training_stack()}
    if cell.hparams is not None:
        result["span_epochs"] = cell.window * cell.epochs

    def save_model(folder: Path) -> None:
        torch.save(module.state_dict(), folder / "model.pt")
        write_json(folder / "config.json", {"family": cell.family, **size})

    return write_results(cell, result, step_losses, save_model)
