"""The `hpo` section: the hyperparameter grid and how Training Performance Estimation gates it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from chemspec.specs.base import PROBLEMS_SEPARATOR, BatchSize, Name, Spec


def number_tag(value: float) -> str:
    """3e-4 -> '3e-4', 0.001 -> '1e-3', 2.5e-4 -> '2p5e-4': a float as a stage-name word, to 7 significant
    digits."""
    mantissa, exponent = f"{value:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".").replace(".", "p")
    return f"{mantissa}e{int(exponent)}"


class Grid(Spec):
    """Hyperparameter values; every combination is one configuration."""

    learning_rate: list[PositiveFloat] = Field(min_length=1)
    """Learning rates to try."""
    batch_size: list[BatchSize] = Field(min_length=1)
    """Batch sizes to try."""

    @model_validator(mode="after")
    def _unique(self) -> "Grid":
        for key in ("learning_rate", "batch_size"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ValueError(f"hpo.grid.{key} repeats a value ({values}); list each value once")
        if len({number_tag(lr) for lr in self.learning_rate}) != len(self.learning_rate):
            raise ValueError(f"hpo.grid.learning_rate has values equal to 7 significant digits "
                             f"({self.learning_rate}); make them differ in the first 7 digits")
        return self

    def configs(self) -> list[dict]:
        return [{"learning_rate": lr, "batch_size": bs} for lr in self.learning_rate for bs in self.batch_size]


class Tpe(Spec):
    """Training Performance Estimation: a short run per configuration ranks them."""

    budget_fraction: float = Field(0.2, gt=0, le=1)
    """Fraction of training.max_epochs each configuration trains for; in (0, 1]."""
    estimator: Literal["tse", "tse_e", "tse_ema", "val"] = "tse"
    """tse: sum of per-epoch mean training losses; tse_e: the last E epochs of them; tse_ema:
    exponentially weighted; val: validation loss at the end of the window."""
    last_epochs: PositiveInt = 1
    """E of tse_e."""
    ema_decay: float = Field(0.9, gt=0, lt=1)
    """Decay of tse_ema per epoch."""
    keep: PositiveInt = 1
    """At most this many configurations are kept (per scope) and trained to completion."""
    margin: float | None = Field(None, ge=0)
    """Also drop configurations whose estimate exceeds the best by more than this fraction
    (0.05: within 5% of the best); the best is always kept."""
    scope: Literal["study", "model_size"] = "study"
    """study: one TPE search on model_size, its choice used for every size; model_size: a TPE search
    per model size, each size trained with its own choice. A grid of one configuration runs no search
    and compiles the same under either."""
    model_size: Name | None = None
    """Model size that TPE runs on under scope study; default the first size of model.sizes (under scope
    model_size every size runs its own search, so it is refused there)."""
    data_size: PositiveInt | None = None
    """Data size that TPE runs on; default the largest of data.sizes."""
    calibrate: bool = False
    """Also train every configuration to the full budget and report how well each estimator ranks
    them (R², Spearman ρ, Kendall τ, top-1 regret): the check the paper made for TPE."""

    @model_validator(mode="after")
    def _options_apply(self) -> "Tpe":
        problems = [f"hpo.tpe.{key} is read by estimator {estimator} alone (and by calibrate, which scores every "
                    f"estimator), and estimator is {self.estimator}: remove {key}, or set estimator: {estimator}"
                    for key, estimator in (("last_epochs", "tse_e"), ("ema_decay", "tse_ema"))
                    if key in self.model_fields_set and self.estimator != estimator and not self.calibrate]
        if self.margin is not None and self.keep == 1:
            problems.append("hpo.tpe.margin drops kept configurations beyond the best, and keep is 1 (the best alone "
                            "is kept): remove margin, or raise keep")
        if problems:
            raise ValueError(PROBLEMS_SEPARATOR.join(problems))
        return self


class Hpo(Spec):
    """Hyperparameter search, gated by TPE; a grid of one configuration trains it with no TPE run."""

    grid: Grid
    """Values to combine."""
    tpe: Tpe = Tpe()
    """Gating by Training Performance Estimation."""

    @model_validator(mode="after")
    def _keep_fits_grid(self) -> "Hpo":
        n, problems = len(self.grid.configs()), []
        if self.tpe.keep > n:
            problems.append(f"hpo.tpe.keep is {self.tpe.keep}, more than the {n} configurations of hpo.grid; set keep "
                            f"to at most {n}")
        if self.tpe.calibrate and n == 1:
            problems.append("hpo.tpe.calibrate scores how TPE ranks the configurations of hpo.grid, and it holds one "
                            "(which trains without a TPE run); give hpo.grid more values, or remove calibrate")
        if problems:
            raise ValueError(PROBLEMS_SEPARATOR.join(problems))
        return self
