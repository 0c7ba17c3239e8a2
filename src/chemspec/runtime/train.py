"""The tpe and train stages: check a cell's inputs, hand it to its family's training (train_lm, train_ff), write
what it returns.

A TPE cell trains for its budget and writes the loss log, which select estimates from; a train cell reads
its hyperparameters from its choice file of the selection, trains for max_epochs and writes metrics, the loss log
and the model.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import platform
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from chemspec.compiler.cells import TrainCell, identity
from chemspec.errors import ChemspecError, Interrupted, RunError
from chemspec.runtime.io import atomic_dir, read_json, staged, write_bytes, write_json
from chemspec.runtime.result_files import choice_problem, read_checked
from chemspec.specs.model import FORCE_FIELDS

if TYPE_CHECKING:
    import lightning as L
    from lightning.pytorch.strategies import DDPStrategy

    from chemspec.runtime.resume import Resume
    from chemspec.specs.training import Training

# Gradient buckets larger than DDP's default of 25 MB (BENCHMARKS.md, "Larger gradient buckets").
DDP_BUCKET_MB = 100
# MKL may pick kernels by memory alignment, so two processes can sum the same loss differently in the
# last bits; strict conditional reproducibility makes CPU results repeatable across runs and jobs.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")


def _require_inputs(cell: TrainCell) -> None:
    """A RunError naming the first missing input and the stage that writes it."""
    data = "atoms.npz" if cell.family in FORCE_FIELDS else "tokens.npy"
    inputs = {Path(cell.data_dir) / data: "data", Path(cell.split_dir) / f"train-{cell.data_size}.npy": "split"}
    if cell.hparams is None:
        inputs[Path(cell.selected)] = "select"
    for path, stage in inputs.items():
        if not path.is_file():
            raise RunError(f"{cell.name}: {path} is missing; run the {stage} stage first "
                           f"(`dvc repro {stage}`, or `dvc repro` for the whole pipeline)")


def _hparams(cell: TrainCell) -> dict | None:
    _require_inputs(cell)
    if cell.hparams is not None:
        return cell.hparams
    return read_checked(cell.selected, "select", choice_problem, ("hparams",))["hparams"]


def quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*(num_workers|does not have many workers|LeafSpec).*")


def device_name(devices: int = 1) -> str:
    """The card (or CPU) a cell trained on, with how many of them: '2x NVIDIA H100 80GB HBM3'."""
    import torch

    if torch.cuda.is_available():
        return f"{devices}x {torch.cuda.get_device_name(0)}"
    cpu = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return cpu if devices == 1 else f"{devices}x {cpu}"


def loss_csv(log: list[list[float]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", "step", "loss"])
    step = 0
    for epoch, losses in enumerate(log):
        for loss in losses:
            writer.writerow([epoch, step, repr(float(loss))])
            step += 1
    return out.getvalue().encode()


def trained_on(data: Path, split: Path, size: int) -> dict:
    """The sha256 of the tokens and of the training and validation rows that the data and split stages
    recorded: a cell's identity names its data only by size, so a checkpoint written before the data or
    the split changed must not be resumed."""
    tokens, rows = read_json(data / "data.json")["sha256"], read_json(split / "split.json")["sha256"]
    return {"tokens.npy": tokens["tokens.npy"], **{name: rows[name] for name in (f"train-{size}.npy", "val.npy")}}


def strategy(training: Training) -> DDPStrategy | str:
    """Lightning's DDP for more than one device, with gradients reduced in buckets of DDP_BUCKET_MB
    that the gradients then view (no copy back out after the all-reduce); its own choice for one."""
    import torch
    from lightning.pytorch.strategies import DDPStrategy

    gpus = torch.cuda.device_count() if training.accelerator != "cpu" else 0
    several = gpus > 1 if training.devices == "auto" else training.devices > 1
    return DDPStrategy(bucket_cap_mb=DDP_BUCKET_MB, gradient_as_bucket_view=True) if several else "auto"


def _gated(cell: TrainCell) -> dict:
    """A rank that select did not keep (hpo.tpe.margin): recorded, not trained, left out of the fits."""
    result = {"cell": cell.name, "identity": identity(cell), "family": cell.family, "model": cell.size_name,
              "data_size": cell.data_size, "hparams": None, "epochs": 0, "params": 0, "val_loss": None,
              "wall_time_s": 0.0, "status": "gated", "reason": f"rank {cell.rank} was not kept by select"}
    with staged(cell.out_dir) as tmp:
        write_json(tmp / "model" / "gated.json", result)
        write_bytes(tmp / "loss.csv", loss_csv([]))
        write_json(tmp / "metrics.json", result)
    return result


@contextlib.contextmanager
def ctrl_c_as_error(trainer: L.Trainer, message: str) -> Iterator[None]:
    """Lightning ends a Ctrl-C in fit or validate with exit(1) and no word: raise Interrupted instead."""
    try:
        yield
    except SystemExit:
        if trainer.interrupted and not trainer.received_sigterm:
            raise Interrupted(message) from None
        raise


def stopped(resume: Resume, message: str) -> ChemspecError:
    """The error of a cell stopped at a checkpoint, with what resumes it (what started it: a launch's job or a
    `dvc repro`): a Ctrl-C's exits 130, as any Ctrl-C does."""
    from chemspec.launch_stop import LAUNCH_ENV

    message += f"; re-run {'`chemspec launch`' if os.environ.get(LAUNCH_ENV) else '`dvc repro`'} to resume from it"
    return Interrupted(message) if resume.stopped_by == "SIGINT" else RunError(message)


def _check_accelerator(cell: TrainCell) -> None:
    import torch

    if cell.training.accelerator == "gpu" and not torch.cuda.is_available():
        raise RunError(f"{cell.name}: training.accelerator is gpu, but torch {torch.__version__} finds no CUDA GPU "
                       "here; run on a GPU machine, or set training.accelerator to auto or cpu and recompile")


def run_training(cell: TrainCell) -> dict:
    _check_accelerator(cell)
    hp = _hparams(cell)
    if hp is None:
        return _gated(cell)
    if cell.family in FORCE_FIELDS:
        from chemspec.runtime.train_ff import run_forcefield

        quiet()
        return run_forcefield(cell, hp, device_name())
    from chemspec.runtime.train_lm import run_chemgpt

    return run_chemgpt(cell, hp)


def write_results(cell: TrainCell, result: dict, step_losses: list[list[float]],
                  save_model: Callable[[Path], None]) -> dict:
    """A TPE cell's loss log and estimate; a train cell's model (`save_model` writes it into the folder it is
    given), loss log and metrics, which replace the old ones together. The resume checkpoint goes after."""
    from chemspec.runtime.resume import discard

    if cell.hparams is not None:
        with atomic_dir(Path(cell.out_dir)) as tmp:
            write_bytes(tmp / "loss.csv", loss_csv(step_losses))
            write_json(tmp / "estimate.json", result)
    else:
        with staged(Path(cell.out_dir)) as tmp:
            (tmp / "model").mkdir()
            save_model(tmp / "model")
            write_bytes(tmp / "loss.csv", loss_csv(step_losses))
            write_json(tmp / "metrics.json", result)
    discard(cell.resume_dir)
    return result
