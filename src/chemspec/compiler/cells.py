"""Expand a study into cells: one resolved, typed unit of work per pipeline stage.

A cell is the contract between the compiler and the runtime: it holds every value its stage needs
(settings and file paths), so a stage never opens the study file. A cell's identity is the sha256 of
the canonical JSON of the fields that change its result -- never paths, worker counts or names -- so
two specs that differ only in bookkeeping give cells of the same identity.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from chemspec.specs import Study
from chemspec.specs.data import SAMPLE, AtomsFileSource, GenerateMD
from chemspec.specs.model import GNNModel
from chemspec.specs.study import Executor
from chemspec.specs.training import Training


class Cell(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataCell(Cell):
    study: str
    seed: int
    kind: str
    source: dict[str, Any]
    representation: str | None
    max_length: int
    out_dir: str
    check_units: bool = True
    """Whether the data stage refuses file values implausible in their energy unit: where the study left the
    unit to the format's default. A check, not a result, so not part of the identity; params written
    before it existed check."""


class SplitCell(Cell):
    seed: int
    sizes: list[int]
    validation: int
    test: int
    data_dir: str
    out_dir: str


class TrainCell(Cell):
    """A training run: a TPE run when it has fixed hyperparameters and stops at `window`, a full run otherwise."""

    name: str
    family: str
    size_name: str
    size: dict[str, Any]
    data_size: int
    epochs: int
    window: float = 1.0
    """Share of the run's optimiser steps to train: a TPE run follows the full run's learning-rate schedule
    and stops at hpo.tpe.budget_fraction of its steps, mid-epoch if need be."""
    seed: int
    training: Training
    hparams: dict[str, Any] | None
    """Fixed hyperparameters (TPE cells); None reads rank `rank` from the selection."""
    rank: int
    group: str
    """Which selection the hyperparameters come from: '*' (one for the study) or a model size."""
    estimator: dict[str, Any]
    data_dir: str
    split_dir: str
    selected: str | None
    out_dir: str
    resume_dir: str


class SampleCell(Cell):
    """Sample molecules from one trained ChemGPT cell and score them against its training and test sets."""

    name: str
    data_size: int
    representation: str
    samples: int
    temperature: float
    top_k: int
    top_p: float
    batch_size: int
    seed: int
    fcd_molecules: int
    """Valid molecules FCD is scored on (generation.fcd_count()). Added 2026-12-05, when FCD moved from
    every valid sample to this fixed count: in the identity, it makes every sample cell compiled before
    score again once, and no train cell."""
    accelerator: str
    train_identity: str
    """Identity of the training cell sampled: a retrained model is a new sample."""
    train_dir: str
    data_dir: str
    split_dir: str
    reference_dir: str
    out_dir: str


class ReferenceCell(Cell):
    """The test set's ChemNet statistics and molecular properties, which every sample cell scores against,
    and FCD's floor: the FCD of `fcd_molecules` real molecules from outside the test set, drawn by `seed`."""

    fcd_molecules: int
    seed: int
    accelerator: str
    data_dir: str
    split_dir: str
    out_dir: str


class SelectCell(Cell):
    keep: int
    margin: float | None
    estimator: str
    tpe_dirs: dict[str, str]
    groups: dict[str, list[str]]
    """Selection group ('*' or a model size) -> the TPE cells ranked against each other."""
    out: str


class CalibrationCell(Cell):
    """Compare each TPE estimate with the converged loss of the same configuration."""

    tpe_dirs: dict[str, str]
    full_dirs: dict[str, str]
    budget_fraction: float
    estimator: dict[str, Any]
    keep: int
    out_dir: str


class FitCell(Cell):
    study: str
    family: str
    """The model family: the plots name the axes by what it trains on and how it counts parameters."""
    laws: list[str]
    confidence: float
    bootstrap: int
    metrics: dict[str, str]
    generation: dict[str, str]
    """Train cell key -> its generation.json (empty without a generation section)."""
    selected: str
    out_dir: str


class ArchiveCell(Cell):
    study: str
    seed: int
    spec: dict[str, Any]
    """The study as validated, less its executor section (bookkeeping, which changes no result)."""
    inputs: dict[str, str]
    root: str


class Cells(Cell):
    data: DataCell
    split: SplitCell
    tpe: dict[str, TrainCell]
    select: SelectCell
    calibrate: dict[str, TrainCell]
    calibration: CalibrationCell | None
    train: dict[str, TrainCell]
    reference: ReferenceCell | None
    sample: dict[str, SampleCell]
    fit: FitCell
    archive: ArchiveCell
    executor: Executor
    """How `chemspec launch` runs the stale cells: in no cell's identity, and not archived."""


IDENTITY_EXCLUDE = {"name", "data_dir", "split_dir", "selected", "out_dir", "out", "tpe_dirs", "full_dirs",
                    "metrics", "inputs", "root", "size_name", "resume_dir", "train_dir", "generation",
                    "reference_dir", "check_units"}
TRAINING_EXCLUDE = {"num_workers", "checkpoint_every_n_epochs"}
# Until 2026-12-05 `training` also held learning_rate and batch_size, which nothing read (hpo.grid sets
# both); their defaults stay in the identity, so cells compiled before keep their identities.
RETIRED_TRAINING = {"batch_size": 32, "learning_rate": 1.0e-3}
# Which parameters weight decay reaches, where not every one. ChemGPT cells trained before 2026-12-05
# decayed every parameter; with the rule in their identity, those with weight decay retrain once.
DECAYED = {"chemgpt": "weight matrices and embeddings"}
# How a force field's epochs draw their batch order. Until 2026-12-05 one generator ran on across
# epochs, so a preempted cell could not resume; now each epoch's order follows from (seed, epoch), as
# ChemGPT's does. Force-field cells trained before retrain once.
EPOCH_ORDER = {"schnet": "seed and epoch", "painn": "seed and epoch", "spookynet": "seed and epoch"}


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def identity(cell: Cell) -> str:
    """sha256 of the fields of a cell that change its result."""
    fields = cell.model_dump(mode="json", exclude=IDENTITY_EXCLUDE)
    if isinstance(fields.get("training"), dict):
        # An option left off (None) does not change results, so options added later keep identities.
        fields["training"] = {**RETIRED_TRAINING, **{k: v for k, v in fields["training"].items()
                                                     if k not in TRAINING_EXCLUDE and v is not None}}
    if isinstance(cell, TrainCell) and cell.training.optimizer.weight_decay > 0 and cell.family in DECAYED:
        fields["decayed"] = DECAYED[cell.family]
    if isinstance(cell, TrainCell) and cell.family in EPOCH_ORDER:
        fields["epoch_order"] = EPOCH_ORDER[cell.family]
    return hashlib.sha256(canonical_json({"stage": type(cell).__name__, **fields})).hexdigest()


def number_tag(value: float) -> str:
    """3e-4 -> '3e-4', 0.001 -> '1e-3', 2.5e-4 -> '2p5e-4': a float as a stage-name word."""
    mantissa, exponent = f"{value:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".").replace(".", "p")
    return f"{mantissa}e{int(exponent)}"


def hp_name(hp: dict[str, Any]) -> str:
    return f"lr{number_tag(hp['learning_rate'])}-bs{hp['batch_size']}"


def _sizes(study: Study) -> dict[str, dict[str, Any]]:
    model = study.model
    if isinstance(model, GNNModel):
        return {f"w{w}d{d}": {"width": w, "depth": d, "cutoff": model.cutoff, "n_rbf": model.n_rbf}
                for w in model.widths for d in model.depths}
    return {name: size.model_dump() for name, size in model.sizes.items()}


def expand(study: Study) -> Cells:
    """Every cell of the study's pipeline, in a stable order."""
    name = study.study
    data_dir, split_dir, results = f"data/{name}", f"data/{name}/splits", f"results/{name}"
    sizes = _sizes(study)
    max_length = max((s.get("max_length", 0) for s in sizes.values()), default=0)
    source = study.data.source.model_dump(mode="json")
    if isinstance(study.data.source, GenerateMD):
        source["smiles"] = study.data.source.smiles()  # a name whose SMILES is corrected is new data
    if source.get("max_molecules") is not None:
        source["sample"] = SAMPLE
    data = DataCell(study=name, seed=study.seed, kind=study.data.kind, source=source,
                    representation=study.data.text_representation if study.data.kind == "smiles" else None,
                    max_length=max_length, out_dir=data_dir,
                    check_units=isinstance(study.data.source, AtomsFileSource) and study.data.source.check_units)
    split = SplitCell(seed=study.seed, sizes=study.data.sizes, validation=study.data.validation,
                      test=study.data.test, data_dir=data_dir, out_dir=split_dir)
    tpe_cfg = study.hpo.tpe
    estimator = tpe_cfg.model_dump(include={"estimator", "last_epochs", "ema_decay"})
    common = dict(family=study.model.family, seed=study.seed, training=study.training, estimator=estimator,
                  data_dir=data_dir, split_dir=split_dir)
    per_size = tpe_cfg.scope == "model_size"
    tpe, groups = {}, {}
    for group, tpe_size in ([(s, s) for s in sizes] if per_size else [("*", study.tpe_model_size())]):
        for hp in study.hpo.grid.configs():
            key = f"{group}-{hp_name(hp)}" if per_size else hp_name(hp)
            groups.setdefault(group, []).append(key)
            tpe[key] = TrainCell(name=f"tpe@{key}", size_name=tpe_size, size=sizes[tpe_size],
                                 data_size=study.tpe_data_size(), epochs=study.training.max_epochs,
                                 window=tpe_cfg.budget_fraction, hparams=hp, rank=0,
                                 group=group, selected=None, out_dir=f"{results}/tpe/{key}",
                                 resume_dir=f"{results}/.resume/tpe-{key}", **common)
    calibrate, calibration = {}, None
    if tpe_cfg.calibrate:
        calibrate = {key: cell.model_copy(update={"name": f"calibrate@{key}", "window": 1.0,
                                                  "out_dir": f"{results}/calibrate/{key}",
                                                  "resume_dir": f"{results}/.resume/calibrate-{key}"})
                     for key, cell in tpe.items()}
        calibration = CalibrationCell(tpe_dirs={k: c.out_dir for k, c in tpe.items()},
                                      full_dirs={k: c.out_dir for k, c in calibrate.items()},
                                      budget_fraction=tpe_cfg.budget_fraction, estimator=estimator,
                                      keep=tpe_cfg.keep, out_dir=f"{results}/calibration")
    selected = f"{results}/selected.json"
    select = SelectCell(keep=tpe_cfg.keep, margin=tpe_cfg.margin, estimator=tpe_cfg.estimator,
                        tpe_dirs={key: cell.out_dir for key, cell in tpe.items()}, groups=groups, out=selected)
    train = {}
    for size_name, size in sizes.items():
        for n in study.data.sizes:
            for rank in range(1, tpe_cfg.keep + 1):
                key = f"{size_name}-{n}" + (f"-r{rank}" if tpe_cfg.keep > 1 else "")
                train[key] = TrainCell(name=f"train@{key}", size_name=size_name, size=size, data_size=n,
                                       epochs=study.training.max_epochs, hparams=None, rank=rank,
                                       group=size_name if per_size else "*",
                                       selected=selected, out_dir=f"{results}/train/{key}",
                                       resume_dir=f"{results}/.resume/train-{key}", **common)
    for key in study.fit.replicate_cells:
        for replicate in range(1, study.fit.replicate_seeds + 1):
            first = train[key if tpe_cfg.keep == 1 else f"{key}-r1"]
            train[f"{key}-seed{replicate}"] = first.model_copy(update={
                "name": f"train@{key}-seed{replicate}", "seed": study.seed + replicate,
                "out_dir": f"{results}/train/{key}-seed{replicate}",
                "resume_dir": f"{results}/.resume/train-{key}-seed{replicate}"})
    reference = None if study.generation is None else ReferenceCell(
        fcd_molecules=study.generation.fcd_count(), seed=study.generation.seed,
        accelerator=study.training.accelerator, data_dir=data_dir, split_dir=split_dir, out_dir=f"{results}/reference")
    sample = _samples(study, train, f"{results}/sample", reference)
    fit = FitCell(study=name, family=study.model.family, laws=study.fit.laws,
                  confidence=study.fit.confidence, bootstrap=study.fit.bootstrap,
                  metrics={key: f"{cell.out_dir}/metrics.json" for key, cell in train.items()},
                  generation={key: f"{cell.out_dir}/generation.json" for key, cell in sample.items()},
                  selected=selected, out_dir=f"{results}/fit")
    inputs = {"data": f"{data_dir}/data.json", "split": f"{split_dir}/split.json", "selected": selected,
              "fit": f"{results}/fit/fit.json", "cells": f"{results}/fit/cells.json", "plots": f"{results}/fit/plots"}
    if calibration is not None:
        inputs["calibration"] = f"{calibration.out_dir}/calibration.json"
    archive = ArchiveCell(study=name, seed=study.seed, spec=study.model_dump(mode="json", exclude={"executor"}),
                          inputs=inputs, root="archive")
    return Cells(data=data, split=split, tpe=tpe, select=select, calibrate=calibrate, calibration=calibration,
                 train=train, reference=reference, sample=sample, fit=fit, archive=archive, executor=study.executor)


def _samples(study: Study, train: dict[str, TrainCell], out: str,
             reference: ReferenceCell | None) -> dict[str, SampleCell]:
    generation = study.generation
    if generation is None or reference is None:
        return {}
    return {key: SampleCell(name=f"sample@{key}", data_size=cell.data_size,
                            representation=study.data.text_representation,
                            **generation.model_dump(exclude={"fcd_molecules"}), fcd_molecules=generation.fcd_count(),
                            accelerator=study.training.accelerator, train_identity=identity(cell),
                            train_dir=cell.out_dir, data_dir=cell.data_dir, split_dir=cell.split_dir,
                            reference_dir=reference.out_dir, out_dir=f"{out}/{key}")
            for key, cell in train.items() if cell.seed == study.seed}  # replicate seeds: the table never shows them


