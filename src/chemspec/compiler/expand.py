"""Expand a validated study into its cells, in a stable order: the stages of its pipeline, named by the
model size, data size and configuration they train."""

from __future__ import annotations

from typing import Any

from chemspec.compiler.cells import (ArchiveCell, CalibrationCell, Cells, DataCell, FitCell, ReferenceCell,
                                     SampleCell, SelectCell, SplitCell, TrainCell, choice_file, identity)
from chemspec.specs import Study
from chemspec.specs.atoms_source import AtomsFileSource, GenerateMD
from chemspec.specs.data import SAMPLE
from chemspec.specs.hpo import number_tag
from chemspec.specs.model import GNNModel
from chemspec.specs.training import BOOKKEEPING


def hp_name(hp: dict[str, Any]) -> str:
    return f"lr{number_tag(hp['learning_rate'])}-bs{hp['batch_size']}"


ELECTRONIC_STORES = "charge and multiplicity"
"""A data cell's mark, where the structures' charges or multiplicities matter, that its store holds them."""


def _sizes(study: Study) -> dict[str, dict[str, Any]]:
    model = study.model
    if isinstance(model, GNNModel):
        electronic = {"charge_spin": True} if model.charge_spin else {}  # off: the identities of before
        return {f"w{w}d{d}": {"width": w, "depth": d, "cutoff": model.cutoff, "n_rbf": model.n_rbf, **electronic}
                for w in model.widths for d in model.depths}
    return {name: size.model_dump() for name, size in model.sizes.items()}


def expand(study: Study) -> Cells:
    """Every cell of the study's pipeline, in a stable order."""
    name = study.study
    data_dir, split_dir, results = f"data/{name}", f"data/{name}/splits", f"results/{name}"
    sizes = _sizes(study)
    data = _data(study, data_dir, max((s.get("max_length", 0) for s in sizes.values()), default=0))
    split = SplitCell(seed=study.seed, sizes=study.data.sizes, validation=study.data.validation,
                      test=study.data.test, data_dir=data_dir, out_dir=split_dir,
                      energies=study.data.kind != "atoms" or study.training.loss.energy > 0)
    common = dict(family=study.model.family, seed=study.seed, training=study.training, data_dir=data_dir,
                  split_dir=split_dir)
    tpe_cfg, selected = study.hpo.tpe, f"{results}/selected.json"
    per_size = tpe_cfg.scope == "model_size" and len(study.hpo.grid.configs()) > 1  # one config: either scope
    tpe, groups, unranked = _searches(study, sizes, results, common, per_size)
    estimator = tpe_cfg.model_dump(include={"estimator", "last_epochs", "ema_decay"})
    calibrate, calibration = {}, None
    if tpe_cfg.calibrate:
        calibrate = {key: cell.model_copy(update={"name": f"calibrate@{key}", "window": 1.0,
                                                  "out_dir": f"{results}/calibrate/{key}",
                                                  "resume_dir": f"{results}/.resume/calibrate-{key}"})
                     for key, cell in tpe.items()}
        calibration = CalibrationCell(tpe_dirs={k: c.out_dir for k, c in tpe.items()},
                                      full_dirs={k: c.out_dir for k, c in calibrate.items()}, groups=groups,
                                      budget_fraction=tpe_cfg.budget_fraction, estimator=estimator,
                                      keep=tpe_cfg.keep, margin=tpe_cfg.margin, out_dir=f"{results}/calibration")
    select = SelectCell(keep=tpe_cfg.keep, margin=tpe_cfg.margin, estimator=estimator,
                        tpe_dirs={key: cell.out_dir for key, cell in tpe.items()}, unranked=unranked,
                        groups=groups, out=selected,
                        choices={group: [choice_file(results, group, rank) for rank in range(1, tpe_cfg.keep + 1)]
                                 for group in groups})
    train = _trained(study, sizes, results, common, per_size)
    reference = None if study.generation is None else ReferenceCell(
        fcd_molecules=study.generation.fcd_count(), seed=study.generation.seed,
        accelerator=study.training.accelerator, data_dir=data_dir, split_dir=split_dir, out_dir=f"{results}/reference")
    sample = _samples(study, train, f"{results}/sample", reference)
    fit = FitCell(study=name, family=study.model.family, laws=study.fit.laws,
                  confidence=study.fit.confidence, bootstrap=study.fit.bootstrap,
                  metrics={key: f"{cell.out_dir}/metrics.json" for key, cell in train.items()},
                  generation={key: f"{cell.out_dir}/generation.json" for key, cell in sample.items()},
                  selected=selected, out_dir=f"{results}/fit")
    archive = _archive(study, data_dir, split_dir, results, calibration)
    return Cells(data=data, split=split, tpe=tpe, select=select, calibrate=calibrate, calibration=calibration,
                 train=train, reference=reference, sample=sample, fit=fit, archive=archive, executor=study.executor)


def _data(study: Study, data_dir: str, max_length: int) -> DataCell:
    """The data cell; its source carries marks that make stores written by earlier versions be written again."""
    source = study.data.source.model_dump(mode="json", exclude={"unit_checks"})
    if isinstance(study.data.source, GenerateMD):
        source["smiles"] = study.data.source.smiles()  # a name whose SMILES is corrected is new data
    if study.data.kind == "atoms" and (getattr(study.model, "charge_spin", False) or (
            isinstance(study.data.source, GenerateMD) and set(study.data.source.states().values()) != {(0, 1)})):
        source["stores"] = ELECTRONIC_STORES  # stores written before 2026-12-05 hold no charges: write them again
    if source.get("max_molecules") is not None:
        source["sample"] = SAMPLE
    return DataCell(study=study.study, seed=study.seed, kind=study.data.kind, source=source,
                    representation=study.data.text_representation if study.data.kind == "smiles" else None,
                    max_length=max_length, out_dir=data_dir,
                    check_units=isinstance(study.data.source, AtomsFileSource) and study.data.source.check_units,
                    unit_bounds=getattr(study.data.source, "unit_checks", True),
                    one_state=study.model.family if study.data.kind == "atoms" and not getattr(
                        study.model, "charge_spin", False) else None)


def _searches(study: Study, sizes: dict[str, dict[str, Any]], results: str, common: dict[str, Any],
              per_size: bool) -> tuple[dict[str, TrainCell], dict[str, list[str]], dict[str, dict[str, Any]]]:
    """The TPE cells by key, the configurations each selection group ranks, and those kept without a run."""
    tpe_cfg, configs = study.hpo.tpe, study.hpo.grid.configs()
    tpe, groups, unranked = {}, {}, {}
    for group, tpe_size in ([(s, s) for s in sizes] if per_size else [("*", study.tpe_model_size())]):
        for hp in configs:
            key = f"{group}-{hp_name(hp)}" if per_size else hp_name(hp)
            groups.setdefault(group, []).append(key)
            if len(configs) == 1:  # nothing to rank: no TPE run
                unranked[key] = hp
                continue
            tpe[key] = TrainCell(name=f"tpe@{key}", size_name=tpe_size, size=sizes[tpe_size],
                                 data_size=study.tpe_data_size(), epochs=study.training.max_epochs,
                                 window=tpe_cfg.budget_fraction, hparams=hp, rank=0,
                                 group=group, selected=None, out_dir=f"{results}/tpe/{key}",
                                 resume_dir=f"{results}/.resume/tpe-{key}", **common)
    return tpe, groups, unranked


def _trained(study: Study, sizes: dict[str, dict[str, Any]], results: str, common: dict[str, Any],
             per_size: bool) -> dict[str, TrainCell]:
    """The full runs: each (model size, data size) at every kept rank, then the replicate seeds' repeats."""
    tpe_cfg = study.hpo.tpe
    train = {}
    for size_name, size in sizes.items():
        for n in study.data.sizes:
            for rank in range(1, tpe_cfg.keep + 1):
                key = f"{size_name}-{n}" + (f"-r{rank}" if rank > 1 else "")  # rank 1's name: whatever keep
                train[key] = TrainCell(name=f"train@{key}", size_name=size_name, size=size, data_size=n,
                                       epochs=study.training.max_epochs, hparams=None, rank=rank,
                                       group=size_name if per_size else "*",
                                       selected=choice_file(results, size_name if per_size else "*", rank),
                                       out_dir=f"{results}/train/{key}",
                                       resume_dir=f"{results}/.resume/train-{key}", **common)
    for key in study.fit.replicate_cells:
        for replicate in range(1, study.fit.replicate_seeds + 1):
            first = train[key]
            train[f"{key}-seed{replicate}"] = first.model_copy(update={
                "name": f"train@{key}-seed{replicate}", "seed": study.seed + replicate,
                "out_dir": f"{results}/train/{key}-seed{replicate}",
                "resume_dir": f"{results}/.resume/train-{key}-seed{replicate}"})
    return train


def _archive(study: Study, data_dir: str, split_dir: str, results: str,
             calibration: CalibrationCell | None) -> ArchiveCell:
    """What the archive stage stores: the result files by name, and the study as validated less bookkeeping."""
    inputs = {"data": f"{data_dir}/data.json", "split": f"{split_dir}/split.json",
              "selected": f"{results}/selected.json", "fit": f"{results}/fit/fit.json",
              "cells": f"{results}/fit/cells.json", "plots": f"{results}/fit/plots"}
    if calibration is not None:
        inputs["calibration"] = f"{calibration.out_dir}/calibration.json"
    spec = study.model_dump(mode="json", exclude={"executor": True, "training": set(BOOKKEEPING),
                                                  "data": {"source": {"unit_checks"}}})
    if spec["model"].get("charge_spin") is False:  # an option left off: archives of before keep their identity
        del spec["model"]["charge_spin"]
    if spec["training"]["scheduler"].get("warmup_fraction", 0) is None:  # likewise
        del spec["training"]["scheduler"]["warmup_fraction"]
    return ArchiveCell(study=study.study, seed=study.seed, spec=spec, inputs=inputs, root="archive")


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


