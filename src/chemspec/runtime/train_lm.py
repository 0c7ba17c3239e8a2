"""The tpe and train stages for ChemGPT: a GPT-Neo on the cell's split of the token store, under Lightning.

A TPE cell trains for its window of the full run's schedule and writes the loss log; a train cell trains for
max_epochs, scores the test set and writes the model in `save_pretrained` form beside its metrics.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from chemspec.compiler.cells import TrainCell, identity
from chemspec.runtime.io import read_array
from chemspec.runtime.split import read_rows
from chemspec.runtime.stack import training_stack
from chemspec.runtime.tpe import window_steps
from chemspec.runtime.train import (ctrl_c_as_error, device_name, quiet, stopped, strategy, trained_on,
                                    write_results)

if TYPE_CHECKING:
    import lightning as L
    import numpy as np

    from chemspec.runtime.chemgpt import ChemGPT


def run_chemgpt(cell: TrainCell, hp: dict) -> dict:
    import lightning as L
    import torch
    from transformers import AutoTokenizer

    from chemspec.runtime.chemgpt import PARAM_GROUPS, ChemGPT, evaluate, gpt_neo_config, loader, loader_workers
    from chemspec.runtime.faults import Faults, fault_for, nan_at
    from chemspec.runtime.resume import Resume
    from chemspec.runtime.throughput import Throughput

    quiet()
    data, split = Path(cell.data_dir), Path(cell.split_dir)
    tokens = read_array(data / "tokens.npy")
    rows = read_rows(split, (f"train-{cell.data_size}", "val", "test"), len(tokens))
    train_rows = rows[f"train-{cell.data_size}"]
    tokenizer = AutoTokenizer.from_pretrained(data / "tokenizer")
    L.seed_everything(cell.seed, workers=True, verbose=False)
    training = cell.training
    on_gpu = torch.cuda.is_available() and training.accelerator != "cpu"
    layout = {"pack_length": training.packing, "pin_memory": on_gpu}
    batches = loader(tokens, train_rows, hp["batch_size"], True, cell.seed,
                     loader_workers(training.num_workers, on_gpu), training.bucket_batches, distributed=True,
                     **layout)
    val = loader(tokens, rows["val"], 256, False, cell.seed, distributed=True, **layout)
    fault = fault_for(cell.name)
    resume = Resume(Path(cell.resume_dir), batches.sampler, hp["batch_size"], training.checkpoint_every_n_epochs,
                    tag={"identity": identity(cell), "hparams": hp, "param_groups": PARAM_GROUPS,
                         "data": trained_on(data, split, cell.data_size)})
    throughput = Throughput()
    trainer = L.Trainer(
        max_epochs=cell.epochs, accelerator=training.accelerator, devices=training.devices,
        strategy=strategy(training), precision=training.precision, logger=False, enable_checkpointing=False,
        callbacks=[Faults(fault), resume, throughput], enable_model_summary=False,
        enable_progress_bar=sys.stderr.isatty(), num_sanity_val_steps=0,
        gradient_clip_val=training.gradient_clip, deterministic=training.accelerator == "cpu",
        use_distributed_sampler=False)
    resume.tag["world_size"] = trainer.world_size  # a checkpoint of other shards is not resumed
    # Under DDP each rank steps through its share of the rows: the schedule and the TPE window follow it.
    per_rank = math.ceil(math.ceil(len(train_rows) / trainer.world_size) / hp["batch_size"])
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
        raise stopped(resume, f"{cell.name}: stopped by {resume.stopped_by}; checkpoint saved in {cell.resume_dir}"
                      ) from None
    wall, tokens_seen, rate = resume.elapsed(), module.tokens_seen, throughput.per_s()
    if trainer.world_size > 1:  # DDP: every rank runs this function; rank 0 alone writes the results
        sums = torch.tensor([float(tokens_seen), float("nan") if rate is None else rate], dtype=torch.float64,
                            device=trainer.strategy.root_device)
        sums = trainer.strategy.reduce(sums, reduce_op="sum").tolist()
        tokens_seen, rate = int(sums[0]), None if math.isnan(sums[1]) else sums[1]
        if not trainer.is_global_zero:
            return {"cell": cell.name, "status": "worker", "rank": trainer.global_rank}
    result = _result(cell, hp, trainer, module, tokens_seen, rate, wall, per_rank, tokens, train_rows)
    if cell.hparams is None and module.diverged is None:
        result["test_loss"] = evaluate(module, loader(tokens, rows["test"], 256, False, cell.seed, **layout),
                                       trainer.strategy.root_device, training.precision)

    def save_model(folder: Path) -> None:
        module.model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return write_results(cell, result, module.step_losses, save_model)


def _result(cell: TrainCell, hp: dict, trainer: L.Trainer, module: ChemGPT, tokens_seen: int, rate: float | None,
            wall: float, per_rank: int, tokens: np.ndarray, train_rows: np.ndarray) -> dict:
    """What the run measured: losses, steps, tokens, speed and utilisation, and where it ran."""
    from chemspec.runtime.chemgpt import non_embedding_parameters
    from chemspec.runtime.molecules import PAD
    from chemspec.runtime.throughput import flops_per_token, mean_length, utilisation

    params, config = non_embedding_parameters(module.model), module.model.config
    flops = flops_per_token(params, config.num_layers, config.hidden_size, mean_length(tokens, train_rows, PAD))
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
    return result
