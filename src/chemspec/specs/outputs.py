"""The study's `fit`, `archive` and `executor` sections: what is fitted to the trained cells, where results are
archived, and how stale cells are run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, ValidationInfo, field_validator

from chemspec.specs.base import PROBLEMS_SEPARATOR, Spec
from chemspec.specs.sbatch import sbatch_problems, slurm_minutes
from chemspec.specs.training import Training

AXIS_LAWS = {"power": (3, 2), "saturating": (4, 3)}
"""What one fit of a per-axis law needs, as runtime.fit.power_law and runtime.laws.saturating_law check it:
(points, distinct sizes). Its points are the data sizes of one model size, or the model sizes of one data size."""
JOINT_DISTINCT = 3
"""Distinct sizes per axis that runtime.laws.joint_law needs (3 × 3 cells are more than the JOINT_POINTS)."""
JOINT_POINTS = 7
"""Cells that runtime.laws.joint_law needs: its 5 parameters, and 2 degrees of freedom for their intervals."""
BOOTSTRAP_CELLS = 12
"""Cells that runtime.fit.bootstrap needs: fewer, and resampled grids too often miss a whole size."""


def figures(laws: list[str], generation: bool) -> tuple[str, ...]:
    """The figures the fit stage draws into its plots folder (`<name>.png`), as dvc.yaml declares them."""
    return ("scaling", *(("joint",) if "joint" in laws else ()), "residuals", *(("generation",) if generation else ()))


class Fit(Spec):
    """Scaling-law fits of the converged losses."""

    laws: list[Literal["power", "saturating", "joint"]] = Field(["power", "joint"], min_length=1)
    """Laws to fit. power: log L = log a − α log x per axis (an effective slope, biased low by a loss
    floor); saturating: L = E + a·x^−α per axis (≥ 4 points); joint: L = E + A/N^α + B/D^β over the
    whole grid (≥ 7 cells, ≥ 3 sizes per axis), the primary result. A law named here must have the sizes
    for at least one fit; left out, the default laws are fitted where the grid allows."""
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


TYPED = {"partition": "executor.slurm.partition", "account": "executor.slurm.account",
         "time": "executor.slurm.time_min", "gpus-per-node": "executor.slurm.gpus_per_job"}
"""sbatch options with a key of their own in executor.slurm (on the command line, --sbatch may replace them)."""


class Slurm(Spec):
    """SLURM settings of the slurm executor."""

    partition: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.,-]{0,63}$")
    """Partition to submit to (several, comma-separated: the first that can start the job)."""
    account: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    """Account to charge."""
    gpus_per_job: int | None = Field(None, ge=0)
    """GPUs per cell; default: what a cell uses, one per `training.devices` (1 for `auto`), none with
    `training.accelerator: cpu`. 0 asks for none (GPUs given through `--sbatch gres=...`, or none)."""
    time_min: PositiveInt = 60
    """Wall-time limit per cell, minutes."""
    stage_time_min: dict[Literal["tpe", "train", "sample"], PositiveInt] = {}
    """Wall-time limits of one stage's jobs, minutes, where they are not time_min: a TPE run trains a fraction of
    the budget and sampling is short (e.g. {tpe: 30, sample: 20}); `train` covers calibration's runs too."""
    setup: list[str] = []
    """Shell lines each job runs before its cell, in order: the cluster's environment (e.g. `module load
    cuda/12.4`, `source ~/venvs/chem/bin/activate`, `export NCCL_DEBUG=WARN`)."""
    sbatch: dict[str, str | Literal[True]] = {}
    """Extra #SBATCH options of every job, KEY: VALUE (e.g. qos: high, mem: 64G, cpus-per-task: 8), or KEY: true
    for a flag (exclusive: true); `chemspec launch --sbatch KEY=VALUE` adds to them and replaces a key given here."""

    @field_validator("time_min", "stage_time_min", mode="before")
    @classmethod
    def _minutes(cls, value: object, info: ValidationInfo) -> object:
        given = (value.items() if isinstance(value, dict) else
                 [] if info.field_name == "stage_time_min" else [(None, value)])
        for key, text in given:
            # MM:SS is left to the type error: YAML 1.1 and people read 1:30 as 90 minutes, sbatch as 90 seconds.
            if isinstance(text, str) and ("-" in text or text.count(":") == 2) and (minutes := slurm_minutes(text)):
                name = f"executor.slurm.{info.field_name}" + (f".{key}" if key is not None else "")
                raise ValueError(f"{name}: counts minutes; write {minutes} for {text!r}")
        return value

    @field_validator("partition")
    @classmethod
    def _partitions(cls, value: str | None) -> str | None:
        if value is not None and "" in value.split(","):
            raise ValueError(f"executor.slurm.partition: {value!r} names an empty partition; separate partitions "
                             "by single commas, none at either end")
        return value

    @field_validator("setup")
    @classmethod
    def _setup_lines(cls, lines: list[str]) -> list[str]:
        bad = [i for i, line in enumerate(lines) if not line.strip() or not line.replace("\t", " ").isprintable()]
        if bad:
            raise ValueError(f"executor.slurm.setup.{bad[0]}: {lines[bad[0]]!r} is no shell line; give a list "
                             "of commands, one an entry, none empty")
        return lines

    @field_validator("sbatch", mode="before")
    @classmethod
    def _sbatch_values(cls, options: object) -> object:
        """Numbers as sbatch reads them (cpus-per-task: 8); false or nothing, which sbatch has no form for,
        refused."""
        if not isinstance(options, dict):
            return options
        unset = [key for key, value in options.items() if value is False or value is None]
        if unset:
            said = "false" if options[unset[0]] is False else "empty"
            raise ValueError(f"executor.slurm.sbatch.{unset[0]}: {said} is no value sbatch takes; give a flag as "
                             "`true`, or leave the key out")
        return {key: str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
                for key, value in options.items()}

    @field_validator("sbatch")
    @classmethod
    def _sbatch_options(cls, options: dict[str, str | bool]) -> dict[str, str | bool]:
        problems = [f"executor.slurm.sbatch.{key}: set it as {TYPED[key]}, which the study has a key for; two values "
                    "for one option would leave the job script's to chance" for key in options if key in TYPED]
        problems += sbatch_problems({k: v for k, v in options.items() if k not in TYPED}, spec=options.keys())
        if problems:
            raise ValueError(PROBLEMS_SEPARATOR.join(problems))
        return options

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
