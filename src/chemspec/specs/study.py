"""The root of the spec tree: a whole scaling study, plus the rules that span its sections."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args

from pydantic import Field, ValidationInfo, field_validator, model_validator

from chemspec.specs.atoms_source import AtomsFileSource
from chemspec.specs.base import PROBLEMS_SEPARATOR, Spec
from chemspec.specs.data import Data, SmilesFileSource
from chemspec.specs.force_field_rules import force_field_problems
from chemspec.specs.generation import Generation
from chemspec.specs.hpo import Hpo
from chemspec.specs.model import ChemGPTModel, GNNModel, Model
from chemspec.specs.outputs import AXIS_LAWS, BOOTSTRAP_CELLS, JOINT_DISTINCT, Archive, Executor, Fit
from chemspec.specs.sbatch import sbatch_problems
from chemspec.specs.schedule_rules import lm_schedule_problems, warmup_notes
from chemspec.specs.training import Training
from chemspec.words import count

CountStructures = Callable[[Path, AtomsFileSource, Model], int]
"""Counts the structures of an atoms file for the study's model (ValueError with the reason where it cannot,
or where the file holds what the model cannot train on). The caller gives it:
the spec layer knows no file format, and only `chemspec validate` reads a whole atoms file's index."""


class Study(Spec):
    """A neural-scaling study: data × model grid, hyperparameter search, fits and archive."""

    study: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    """Study name: lowercase letters, digits, '-' and '_'; it names directories and stages."""
    seed: int = Field(0, ge=0, lt=2**31)
    """Seed of the split and of every training run."""
    data: Data
    """Training data and its nested subsets."""
    model: Model
    """Model family and sizes."""
    training: Training
    """How each cell trains."""
    hpo: Hpo
    """Hyperparameter grid and TPE gating."""
    generation: Generation | None = None
    """Sample molecules from every trained ChemGPT cell and score them (validity, uniqueness, novelty,
    diversity, FCD, property distances); omit to skip."""
    fit: Fit = Fit()
    """Scaling-law fits."""
    archive: Archive = Archive()
    """Archive settings."""
    executor: Executor = Executor()
    """Executor settings."""

    @field_validator("generation", mode="before")
    @classmethod
    def _generation_given(cls, value: Any) -> Any:
        if value is None:  # a bare `generation:` reads as null, which would turn sampling off unseen
            raise ValueError("an empty generation section samples nothing: write `generation: {}` to sample with "
                             "the defaults, or remove the key to skip sampling")
        return value

    @model_validator(mode="before")
    @classmethod
    def _force_field_schedule(cls, value: Any) -> Any:
        """A force field's training.scheduler.name left out is plateau, the schedule it trains with (constant
        is ChemGPT's default), so that params.yaml and the archived study say what ran."""
        model, training = (value.get(key) if isinstance(value, dict) else None for key in ("model", "training"))
        scheduler = training.get("scheduler", {}) if isinstance(training, dict) else None
        if isinstance(model, dict) and model.get("family") in get_args(GNNModel.model_fields["family"].annotation) \
                and isinstance(scheduler, dict) and "name" not in scheduler:
            return {**value, "training": {**training, "scheduler": {**scheduler, "name": "plateau"}}}
        return value

    @model_validator(mode="after")
    def _cross_section(self, info: ValidationInfo) -> "Study":
        context = info.context or {}
        problems = [*self._family_problems(), *self._grid_problems(), *self._tpe_problems(), *self._fit_problems(),
                    *self._gpu_problems(),
                    *self._data_file_problems(context.get("base_dir"), context.get("count_structures"))]
        if problems:
            raise ValueError(PROBLEMS_SEPARATOR.join(problems))
        return self

    def _gpu_problems(self) -> Iterator[str]:
        """GPUs asked for twice (executor.slurm.sbatch's gres beside gpus_per_job or training.devices), or for
        cells that run on the CPU."""
        slurm = self.executor.slurm
        if slurm.gpus_per_job and self.training.accelerator == "cpu":
            yield (f"executor.slurm.gpus_per_job: {slurm.gpus_per_job} GPUs a job for cells that run on the CPU "
                   "(training.accelerator: cpu), which would hold them idle; leave it out, or set training.accelerator")
        yield from sbatch_problems(slurm.sbatch, slurm.gpus(self.training), spec=slurm.sbatch.keys())

    def _family_problems(self) -> Iterator[str]:
        """Settings that the model family cannot train with."""
        lm = isinstance(self.model, ChemGPTModel)
        if lm != (self.data.kind == "smiles"):
            yield (f"model.family {self.model.family!r} does not fit data.kind {self.data.kind!r}: "
                   "chemgpt trains on smiles data, schnet/painn/spookynet on atoms data")
            return  # the rules below are about one family's settings
        training = self.training
        if lm:
            too_long = {n: s.max_length for n, s in self.model.sizes.items()
                        if training.packing and s.max_length > training.packing}
            if too_long:
                yield (f"training.packing: rows of {training.packing} positions cannot hold the molecules of "
                       f"model.sizes {too_long} (max_length); set packing to at least {max(too_long.values())}")
            if training.compile == "cuda-graphs" and not training.packing:
                yield ("training.compile: cuda-graphs records a graph for every batch shape; set training.packing "
                       "(e.g. 256) so that batches have one shape")
            if "loss" in training.model_fields_set:
                yield ("training.loss: model.family 'chemgpt' trains on the next token's cross-entropy; the loss "
                       "section weighs force-field energies and forces, so remove it (cells trained with another "
                       "value retrain once: it was part of their identity)")
            yield from lm_schedule_problems(training, self.data, self.hpo, self.tpe_data_size())
            return
        yield from force_field_problems(self.model, self.data, training, self.hpo, self.generation)

    def _tpe_problems(self) -> Iterator[str]:
        """tse_e over as many epochs as the TPE window holds is tse under another name."""
        tpe = self.hpo.tpe
        window = tpe.budget_fraction * self.training.max_epochs
        if tpe.estimator == "tse_e" and tpe.last_epochs >= window - 1e-9 and len(self.hpo.grid.configs()) > 1:
            epochs = f"{window:g} epoch{'' if window == 1 else 's'}"
            yield (f"hpo.tpe.last_epochs {tpe.last_epochs} spans the whole TPE window (budget_fraction "
                   f"{tpe.budget_fraction} of training.max_epochs {self.training.max_epochs}: {epochs}), where tse_e "
                   "is tse; " + (f"lower last_epochs below {window:g}, " if window > 1 else "")
                   + f"raise budget_fraction so that the window holds more than {count(tpe.last_epochs, 'epoch')}, "
                     "or set estimator: tse")

    def _grid_problems(self) -> Iterator[str]:
        """Names and counts in one section that must agree with another's."""
        gpus, devices = self.executor.slurm.gpus_per_job, self.training.devices
        if gpus and self.training.accelerator != "cpu" and isinstance(devices, int) and gpus < devices:
            yield (f"executor.slurm.gpus_per_job {gpus} is fewer than training.devices ({devices}): a cell's job "
                   f"needs a GPU per device; set gpus_per_job to {devices}, or remove it")
        tpe = self.hpo.tpe
        if tpe.model_size is not None and tpe.model_size not in self.model.size_names():
            yield f"hpo.tpe.model_size {tpe.model_size!r} is not a model size; choose one of {self.model.size_names()}"
        elif tpe.model_size is not None and tpe.scope == "model_size":
            yield (f"hpo.tpe.model_size {tpe.model_size!r} chooses nothing under hpo.tpe.scope model_size, where every "
                   f"model size runs its own TPE search; remove hpo.tpe.model_size, or set hpo.tpe.scope to study to "
                   f"search on {tpe.model_size} alone")
        if tpe.data_size is not None and tpe.data_size not in self.data.sizes:
            yield f"hpo.tpe.data_size {tpe.data_size} is not in data.sizes {self.data.sizes}"
        cells = {f"{m}-{n}" for m in self.model.size_names() for n in self.data.sizes}
        unknown = [c for c in self.fit.replicate_cells if c not in cells]
        if unknown:
            yield (f"fit.replicate_cells {unknown} are not cells of this study; use <model size>-<data size>, "
                   f"e.g. {sorted(cells)[0]}")
        if self.fit.replicate_seeds and not self.fit.replicate_cells:
            yield "fit.replicate_seeds is set but fit.replicate_cells is empty; name the cells to repeat"
        if self.fit.replicate_cells and not self.fit.replicate_seeds:
            yield (f"fit.replicate_cells {self.fit.replicate_cells} are repeated by no seed while fit.replicate_seeds "
                   "is 0; give the number of extra seeds (e.g. replicate_seeds: 3), or remove replicate_cells")
        outside_test = self.data.validation + self.data.sizes[-1]  # the split guarantees this many
        if self.generation is not None and self.generation.fcd_count() > outside_test:
            yield (f"generation.fcd_molecules: FCD's floor is measured on {self.generation.fcd_count()} real "
                   f"molecules outside the test set, but the study holds only {outside_test} for certain "
                   "(data.validation + the largest data.sizes); lower generation.fcd_molecules (or samples)")
        if self.training.precision == "16-mixed" and self.training.accelerator == "cpu":
            yield ("training.precision: 16-mixed has no CPU autocast, so Lightning would train in bf16-mixed while "
                   "the study records 16-mixed; use 32-true or bf16-mixed on training.accelerator cpu")

    def _fit_problems(self) -> Iterator[str]:
        """Laws that the study names but whose every fit would end as "cannot fit" for want of sizes. A cell is
        one point whatever else it trains: replicate seeds, the ranks that hpo.tpe.keep keeps and TPE runs (of
        either hpo.tpe.scope) add none. Laws left to the default are fitted where the grid allows."""
        cells = len(self.data.sizes) * len(self.model.size_names())
        if self.fit.bootstrap and cells < BOOTSTRAP_CELLS:
            yield (f"fit.bootstrap: {self.fit.bootstrap} resamples of the joint fit need a grid of at least "
                   f"{BOOTSTRAP_CELLS} cells; this one has {cells}, so it would end as 'cannot bootstrap'; set "
                   "fit.bootstrap to 0, or add data or model sizes")
        if "laws" not in self.fit.model_fields_set:
            return
        for law in self.fit.laws:
            if self._can_fit(law):
                continue
            if law == "joint":
                need = (f"fits L(N, D) over the whole grid, so it needs {JOINT_DISTINCT} data sizes and "
                        f"{JOINT_DISTINCT} model sizes of distinct parameter count")
            else:
                points, sizes = AXIS_LAWS[law]
                need = (f"fits loss against data size per model size and against parameter count per data "
                        f"size, each fit from at least {points} points, so it needs {points} data sizes, or "
                        f"{points} model sizes of at least {sizes} distinct parameter counts")
            drop = (f"drop {law!r} from fit.laws" if len(self.fit.laws) > 1 else
                    "leave fit.laws out (the default laws are fitted only where the grid allows)")
            yield (f"fit.laws: {law!r} {need}; {self._grid_text()}, so every fit would end as 'cannot fit'; add "
                   f"sizes, or {drop}")

    def _can_fit(self, law: str) -> bool:
        """Whether the grid has the sizes for at least one fit of `law`."""
        data, models, capacities = len(self.data.sizes), len(self.model.size_names()), self.model.capacities()
        if law == "joint":
            return min(data, capacities) >= JOINT_DISTINCT
        points, sizes = AXIS_LAWS[law]
        return data >= points or (models >= points and capacities >= sizes)

    def _grid_text(self) -> str:
        models, capacities = len(self.model.size_names()), self.model.capacities()
        distinct = f", {capacities} of distinct parameter count" if capacities < models else ""
        return f"the grid has {count(len(self.data.sizes), 'data size')} and {count(models, 'model size')}{distinct}"

    def _data_file_problems(self, base: Path | None, count: CountStructures | None) -> Iterator[str]:
        """A data file that is not there, lacks the column (SMILES), or the molecules or structures (where
        `count` is given) that the sizes need."""
        source = self.data.source
        if base is None or not isinstance(source, (SmilesFileSource, AtomsFileSource)):
            return
        path = Path(base) / source.file
        try:
            if path.is_dir():
                yield f"data.source.file {source.file!r} is a directory; give the data file in it"
            elif path.exists() and not path.is_file():
                yield (f"data.source.file {source.file!r} is not a regular file (a device, a pipe or a socket); give "
                       "the data file")
            elif not path.is_file():
                home = ("; '~' is not expanded: write the path in full" if source.file.startswith("~") else "")
                yield (f"data.source.file {source.file!r} does not exist (relative paths are read from the study "
                       f"file's directory){home}; fix the path")
            elif isinstance(source, SmilesFileSource):
                self.data.check_available(source.rows(path), f"data.source.file {source.file!r}",
                                          cap=source.max_molecules)
            elif count is not None:
                self.data.check_available(count(path, source, self.model), f"data.source.file {source.file!r}")
        except OSError as exc:  # a name too long, a directory without permission, ...
            yield f"data.source.file {source.file!r} cannot be read ({exc.strerror or exc}); fix the path"
        except ValueError as exc:
            yield str(exc)

    def notes(self) -> list[str]:
        """What `validate` and `compile` say of settings that will not do what they seem to where the cells run."""
        big = self.model.cpu_notes() if self.training.accelerator == "cpu" else []
        unfit = ([f"fit.laws: {self._grid_text()}, too few for any law to fit (a power law needs "
                  f"{AXIS_LAWS['power'][0]} sizes on one axis), so the report will give no exponent; add sizes"]
                 if len(self.data.sizes) * len(self.model.size_names()) > 1  # one cell: it studies no scaling
                 and not any(self._can_fit(law) for law in self.fit.laws) else [])
        return [*self.data.notes(), *self.training.notes(), *big, *unfit,
                *warmup_notes(self.training, self.hpo, self.tpe_data_size())]

    def tpe_model_size(self) -> str:
        return self.hpo.tpe.model_size or self.model.size_names()[0]

    def tpe_data_size(self) -> int:
        return self.hpo.tpe.data_size or self.data.sizes[-1]
