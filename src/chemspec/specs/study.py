"""The root of the spec tree: a whole scaling study, plus the rules that span its sections."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt, ValidationInfo, field_validator, model_validator

from chemspec.specs.base import Spec
from chemspec.specs.data import AtomsFileSource, Data, SmilesFileSource
from chemspec.specs.generation import Generation
from chemspec.specs.hpo import Hpo
from chemspec.specs.model import ChemGPTModel, Model
from chemspec.specs.training import Training


class Fit(Spec):
    """Scaling-law fits of the converged losses."""

    laws: list[Literal["power", "saturating", "joint"]] = Field(["power", "joint"], min_length=1)
    """Laws to fit. power: log L = log a − α log x per axis (an effective slope, biased low by a loss
    floor); saturating: L = E + a·x^−α per axis (≥ 4 points); joint: L = E + A/N^α + B/D^β over the
    whole grid (≥ 7 cells, ≥ 3 sizes per axis), the primary result."""
    confidence: float = Field(0.95, gt=0, lt=1)
    """Confidence level of the intervals."""
    bootstrap: int = Field(0, ge=0, le=100_000)
    """Resamples of the cells (with replacement) to cross-check the joint fit's intervals by the
    percentile bootstrap; only on grids of at least 12 cells (0: none)."""
    replicate_seeds: int = Field(0, ge=0, le=20)
    """Extra training seeds at the cells named in replicate_cells, to measure the seed-to-seed noise
    the intervals assume."""
    replicate_cells: list[str] = []
    """Cells to repeat, as `<model size>-<data size>` (e.g. xs-1000)."""

    @field_validator("laws", "replicate_cells")
    @classmethod
    def _unique(cls, values: list[str], info: ValidationInfo) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError(f"fit.{info.field_name} repeats a value ({values}); list each value once")
        return values


class Archive(Spec):
    """Where results are archived."""

    remote: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    """DVC remote for large artifacts; `default` is a local directory remote."""


class Slurm(Spec):
    """SLURM settings of the slurm executor."""

    partition: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.,-]{0,63}$")
    """Partition to submit to."""
    account: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    """Account to charge."""
    gpus_per_job: int | None = Field(None, ge=0)
    """GPUs per cell; default: what a cell uses, one per `training.devices` (1 for `auto`), none with
    `training.accelerator: cpu`. 0 asks for none (GPUs given through `--sbatch gres=...`, or none)."""
    time_min: PositiveInt = 60
    """Wall-time limit per cell, minutes."""

    def gpus(self, training: Training) -> int:
        """The GPUs each cell's job asks for."""
        if self.gpus_per_job is not None:
            return self.gpus_per_job
        if training.accelerator == "cpu":
            return 0
        return training.devices if isinstance(training.devices, int) else 1


class Executor(Spec):
    """How stale cells are run."""

    kind: Literal["local", "slurm"] = "local"
    """local: on this machine; slurm: one job per cell through submitit."""
    jobs: PositiveInt = 1
    """Cells run at once."""
    slurm: Slurm = Slurm()
    """SLURM settings (slurm executor only)."""


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

    @model_validator(mode="after")
    def _cross_section(self, info: ValidationInfo) -> "Study":
        lm = isinstance(self.model, ChemGPTModel)
        if lm != (self.data.kind == "smiles"):
            raise ValueError(f"model.family {self.model.family!r} does not fit data.kind {self.data.kind!r}: "
                             "chemgpt trains on smiles data, schnet/painn/spookynet on atoms data")
        if self.training.activation_checkpointing and not lm:
            raise ValueError(f"training.activation_checkpointing: model.family {self.model.family!r} does not "
                             "support it (language models only); set it to false")
        if self.training.bucket_batches is not None and not lm:
            raise ValueError(f"training.bucket_batches: model.family {self.model.family!r} batches whole "
                             "structures without padding, so there is nothing to bucket; remove it")
        if self.training.packing and not lm:
            raise ValueError(f"training.packing: model.family {self.model.family!r} batches whole structures "
                             "without padding, so there is nothing to pack; remove it")
        if lm and self.training.packing:
            too_long = {n: s.max_length for n, s in self.model.sizes.items() if s.max_length > self.training.packing}
            if too_long:
                raise ValueError(f"training.packing: rows of {self.training.packing} positions cannot hold the "
                                 f"molecules of model.sizes {too_long} (max_length); set packing to at least "
                                 f"{max(too_long.values())}")
        if self.training.compile and not lm:
            raise ValueError(f"training.compile: model.family {self.model.family!r} cannot be compiled (its force "
                             "loss needs a double backward, which torch.compile does not support); set it to false")
        if self.training.precision == "bf16-true" and not lm:
            raise ValueError("training.precision: bf16-true casts the energy shift and energy targets of "
                             f"model.family {self.model.family!r} to bf16, in steps of 32 eV at ethanol's -4210 eV, "
                             "which ruins the energies; use 32-true, or bf16-mixed (bf16 matrix products, float32 "
                             "energies)")
        if self.training.scheduler.name == "cosine" and not lm:
            raise ValueError(f"training.scheduler.name: model.family {self.model.family!r} trains with the plateau "
                             "schedule (the rate falls when the validation loss stalls); set name: plateau")
        if self.generation is not None and not lm:
            raise ValueError(f"generation: model.family {self.model.family!r} does not generate molecules; "
                             "remove the generation section (only chemgpt studies sample)")
        gpus, devices = self.executor.slurm.gpus_per_job, self.training.devices
        if gpus and self.training.accelerator != "cpu" and isinstance(devices, int) and gpus < devices:
            raise ValueError(f"executor.slurm.gpus_per_job {gpus} is fewer than training.devices ({devices}): "
                             f"a cell's job needs a GPU per device; set gpus_per_job to {devices}, or remove it")
        tpe = self.hpo.tpe
        if tpe.model_size is not None and tpe.model_size not in self.model.size_names():
            raise ValueError(f"hpo.tpe.model_size {tpe.model_size!r} is not a model size; "
                             f"choose one of {self.model.size_names()}")
        if tpe.data_size is not None and tpe.data_size not in self.data.sizes:
            raise ValueError(f"hpo.tpe.data_size {tpe.data_size} is not in data.sizes {self.data.sizes}")
        cells = {f"{m}-{n}" for m in self.model.size_names() for n in self.data.sizes}
        unknown = [c for c in self.fit.replicate_cells if c not in cells]
        if unknown:
            raise ValueError(f"fit.replicate_cells {unknown} are not cells of this study; use "
                             f"<model size>-<data size>, e.g. {sorted(cells)[0]}")
        if self.fit.replicate_seeds and not self.fit.replicate_cells:
            raise ValueError("fit.replicate_seeds is set but fit.replicate_cells is empty; name the cells to repeat")
        base = (info.context or {}).get("base_dir")
        source = self.data.source
        if base is not None and isinstance(source, (SmilesFileSource, AtomsFileSource)):
            path = Path(base) / source.file
            try:
                exists = path.is_file()
                rows = source.rows(path) if exists and isinstance(source, SmilesFileSource) else None
            except OSError as exc:  # a name too long, a directory without permission, ...
                raise ValueError(f"data.source.file {source.file!r} cannot be read ({exc.strerror or exc}); "
                                 "fix the path") from None
            if path.is_dir():
                raise ValueError(f"data.source.file {source.file!r} is a directory; give the data file in it")
            if not exists:
                raise ValueError(f"data.source.file {source.file!r} does not exist (relative paths are "
                                 "read from the study file's directory); fix the path")
            if rows is not None:
                self.data.check_available(rows, f"data.source.file {source.file!r}")
        return self

    def tpe_model_size(self) -> str:
        return self.hpo.tpe.model_size or self.model.size_names()[0]

    def tpe_data_size(self) -> int:
        return self.hpo.tpe.data_size or self.data.sizes[-1]
