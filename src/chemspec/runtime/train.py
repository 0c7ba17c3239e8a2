"""The tpe and train stages: build the family's LightningModule from a cell, train it, write results.

A TPE cell trains for its budget and writes the loss log, which select estimates from; a train cell reads
its hyperparameters from its choice file of the selection, trains for max_epochs and writes metrics, the loss log and the
model in `save_pretrained` form.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import platform
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from chemspec.compiler.cells import TrainCell, identity
from chemspec.errors import ChemspecError, Interrupted, RunError
from chemspec.runtime.io import atomic_dir, read_array, read_json, staged, write_bytes, write_json
from chemspec.runtime.result_files import choice_problem, read_checked
from chemspec.runtime.split import read_rows
from chemspec.runtime.stack import training_stack
from chemspec.runtime.tpe import window_steps
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


def _quiet() -> None:
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


def _trained_on(data: Path, split: Path, size: int) -> dict:
    """The sha256 of the tokens and of the training and validation rows that the data and split stages
    recorded: a cell's identity names its data only by size, so a checkpoint written before the data or
    the split changed must not be resumed."""
    tokens, rows = read_json(data / "data.json")["sha256"], read_json(split / "split.json")["sha256"]
    return {"tokens.npy": tokens["tokens.npy"], **{name: rows[name] for name in (f"train-{size}.npy", "val.npy")}}


def _strategy(training: Training) -> DDPStrategy | str:
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
    """The error of a cell stopped at a checkpoint: a Ctrl-C's exits 130, as any Ctrl-C does."""
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

        _quiet()
        return run_forcefield(cell, hp, device_name())
    import lightning as L
    import torch
    from transformers import AutoTokenizer

    from chemspec.runtime.chemgpt import (PARAM_GROUPS, ChemGPT, evaluate, gpt_neo_config, loader, loader_workers,
                                          non_embedding_parameters)
    from chemspec.runtime.faults import Faults, fault_for, nan_at
    from chemspec.runtime.molecules import PAD
    from chemspec.runtime.resume import Resume, discard
    from chemspec.runtime.throughput import Throughput, flops_per_token, mean_length, utilisation

    _quiet()
    data, split = Path(cell.data_dir), Path(cell.split_dir)
    tokens = read_array(data / "tokens.npy")
    rows = read_rows(split, (f"train-{cell.data_size}", "val", "test"), len(tokens))
    tokenizer = AutoTokenizer.from_pretrained(data / "tokenizer")
    L.seed_everything(cell.seed, workers=True, verbose=False)
    training = cell.training
    on_gpu = torch.cuda.is_available() and training.accelerator != "cpu"
    layout = {"pack_length": training.packing, "pin_memory": on_gpu}
    batches = loader(tokens, rows[f"train-{cell.data_size}"], hp["batch_size"], True, cell.seed,
                     loader_workers(training.num_workers, on_gpu), training.bucket_batches, distributed=True,
                     **layout)
    val = loader(tokens, rows["val"], 256, False, cell.seed, distributed=True, **layout)
    fault = fault_for(cell.name)
    resume = Resume(Path(cell.resume_dir), batches.sampler, hp["batch_size"], training.checkpoint_every_n_epochs,
                    tag={"identity": identity(cell), "hparams": hp, "param_groups": PARAM_GROUPS,
                         "data": _trained_on(data, split, cell.data_size)})
    throughput = Throughput()
    trainer = L.Trainer(
        max_epochs=cell.epochs, accelerator=training.accelerator, devices=training.devices,
        strategy=_strategy(training), precision=training.precision, logger=False, enable_checkpointing=False,
        callbacks=[Faults(fault), resume, throughput], enable_model_summary=False,
        enable_progress_bar=sys.stderr.isatty(), num_sanity_val_steps=0,
        gradient_clip_val=training.gradient_clip, deterministic=training.accelerator == "cpu",
        use_distributed_sampler=False)
    resume.tag["world_size"] = trainer.world_size  # a checkpoint of other shards is not resumed
    # Under DDP each rank steps through its share of the rows: the schedule and the TPE window follow it.
    per_rank = math.ceil(math.ceil(len(rows[f"train-{cell.data_size}"]) / trainer.world_size) / hp["batch_size"])
    total_steps = per_rank * cell.epochs
    trainer.fit_loop.epoch_loop.max_steps = window_steps(cell.window, total_steps)
    module = ChemGPT(gpt_neo_config(cell.size, len(tokenizer)), hp["learning_rate"], training.optimizer,
                     training.scheduler, total_steps=total_steps,
                     nan_at=nan_at(fault), compile=training.compile,
                     activation_checkpointing=training.activation_checkpointing)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    interrupted = (f"{cell.name}: interrupted; re-run `dvc repro` to continue (from the last checkpoint in "
                   f"{cell.resume_dir}, if one was written)")
    try:
        with ctrl_c_as_error(trainer, interrupted):
            trainer.fit(module, batches, val, ckpt_path=resume.resume_from())
            if trainer.global_step % per_rank and module.diverged is None:
                trainer.validate(module, val, verbose=False)
    except SystemExit:
        if not trainer.received_sigterm:
            raise
        raise stopped(resume, f"{cell.name}: stopped by {resume.stopped_by}; checkpoint saved in {cell.resume_dir}; "
                      "re-run `dvc repro` to resume from it") from None
    wall = resume.elapsed()
    tokens_seen, rate = module.tokens_seen, throughput.per_s()
    if trainer.world_size > 1:  # DDP: every rank runs this function; rank 0 alone writes the results
        sums = torch.tensor([float(tokens_seen), float("nan") if rate is None else rate], dtype=torch.float64,
                            device=trainer.strategy.root_device)
        sums = trainer.strategy.reduce(sums, reduce_op="sum").tolist()
        tokens_seen, rate = int(sums[0]), None if math.isnan(sums[1]) else sums[1]
        if not trainer.is_global_zero:
            return {"cell": cell.name, "status": "worker", "rank": trainer.global_rank}
    params, config = non_embedding_parameters(module.model), module.model.config
    flops = flops_per_token(params, config.num_layers, config.hidden_size,
                            mean_length(tokens, rows[f"train-{cell.data_size}"], PAD))
    usage = utilisation(rate, flops, trainer.world_size, trainer.strategy.root_device)
    steps = int(trainer.global_step) if module.diverged is None else module.diverged["step"]
    result = {"cell": cell.name, "identity": identity(cell), "family": cell.family, "model": cell.size_name,
              "data_size": cell.data_size, "seed": cell.seed, "hparams": hp, "epochs": cell.epochs,
              "epochs_trained": round(steps / per_rank, 4),
              "window": cell.window, "steps": steps, "steps_per_epoch": per_rank,
              "span_epochs": cell.window * cell.epochs,
              "tokens_seen": tokens_seen,
              "params": params,
              "params_total": sum(p.numel() for p in module.model.parameters()),
              "val_loss": module.val_history[-1] if module.val_history else float("nan"),
              "val_history": module.val_history, "lr_history": module.lr_history, "wall_time_s": round(wall, 3),
              "train_tokens_per_s": None if rate is None else round(rate, 1), "flops_per_token": flops, **usage,
              "device": device_name(trainer.world_size), "stack": training_stack(), "status": "ok"}
    if module.diverged is not None:
        result.update(status="diverged", divergence=module.diverged, val_loss=None)
    out = Path(cell.out_dir)
    if cell.hparams is not None:
        with atomic_dir(out) as tmp:
            write_bytes(tmp / "loss.csv", loss_csv(module.step_losses))
            write_json(tmp / "estimate.json", result)
        discard(cell.resume_dir)
        return result
    if module.diverged is None:
        result["test_loss"] = evaluate(module, loader(tokens, rows["test"], 256, False, cell.seed, **layout),
                                       trainer.strategy.root_device, training.precision)
    with staged(out) as tmp:  # the model, its loss log and its metrics replace the old ones together
        module.model.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        write_bytes(tmp / "loss.csv", loss_csv(module.step_losses))
        write_json(tmp / "metrics.json", result)
    discard(cell.resume_dir)
    return result
