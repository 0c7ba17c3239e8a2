"""The `training` section: how every cell is trained once its hyperparameters are chosen."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from chemspec.specs.base import Spec


class Optimizer(Spec):
    """The optimiser of every cell."""

    name: Literal["adamw", "adam"] = "adamw"
    """Optimiser."""
    weight_decay: float = Field(0.0, ge=0)
    """Decoupled weight decay (AdamW). ChemGPT decays its weight matrices and embeddings, not its biases
    and LayerNorm gains (as nanoGPT and Hugging Face's Trainer); force fields decay every parameter
    (as schnetpack's training does)."""
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    """Adam's decay rates of the gradient's first and second moments, each in [0, 1)."""

    @field_validator("betas", mode="before")
    @classmethod
    def _pair(cls, value: object) -> object:
        return tuple(value) if isinstance(value, list) else value  # YAML has lists, not tuples


class Scheduler(Spec):
    """Learning-rate schedule."""

    name: Literal["constant", "cosine", "plateau"] = "constant"
    """constant; cosine decay to min_lr over the run; or ReduceLROnPlateau on the validation loss. Force
    fields train with plateau only, which is their default."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up steps (constant and cosine)."""
    warmup_fraction: float | None = Field(None, gt=0, lt=1)
    """Linear warm-up over this share of each run's optimiser steps (constant and cosine), as Hugging Face's
    warmup_ratio: runs of another batch or data size warm up over the same share of theirs, so TPE ranks
    configurations of several batch sizes on windows that hold as much warm-up each. Set it or warmup_steps."""
    factor: float = Field(0.5, gt=0, lt=1)
    """Plateau: multiply the learning rate by this on a plateau."""
    patience: int = Field(50, ge=0)
    """Plateau: epochs without improvement before the rate falls."""
    min_lr: float = Field(1.0e-7, ge=0)
    """Lowest learning rate (the end of a cosine decay, the floor of a plateau schedule); a force field's
    plateau schedule also stops training when it gets here, ChemGPT's keeps training at it."""

    @model_validator(mode="after")
    def _one_warmup(self) -> "Scheduler":
        if self.warmup_steps and self.warmup_fraction:
            raise ValueError("training.scheduler: warmup_steps and warmup_fraction both set the warm-up; keep one "
                             "(warmup_fraction scales with each run's steps)")
        return self

    def warmup(self, total_steps: int) -> int:
        """Warm-up steps of a run of `total_steps` optimiser steps (a TPE run: of the full run it stops in)."""
        return int(self.warmup_fraction * total_steps) if self.warmup_fraction else self.warmup_steps

    def unread(self) -> list[str]:
        """The fields set in the spec, away from their defaults, that this schedule does not read: changing one
        would retrain every cell (they are in its identity) to the same result."""
        return sorted(name for name in self.model_fields_set - SCHEDULE_READS[self.name] - {"name"}
                      if getattr(self, name) != type(self).model_fields[name].default)


SCHEDULE_READS = {"constant": {"warmup_steps", "warmup_fraction"},
                  "cosine": {"warmup_steps", "warmup_fraction", "min_lr"}, "plateau": {"factor", "patience", "min_lr"}}
"""The fields of training.scheduler each schedule reads."""


class LossWeights(Spec):
    """Force-field loss: kind and weights of energy and forces."""

    kind: Literal["l1", "mse"] = "l1"
    """L1 (mean absolute error) or MSE."""
    energy: float = Field(0.01, ge=0)
    """Weight of the energy term."""
    forces: float = Field(0.99, ge=0)
    """Weight of the force term."""

    @model_validator(mode="after")
    def _some_weight(self) -> "LossWeights":
        if self.energy == 0 and self.forces == 0:
            raise ValueError("training.loss: energy and forces weights are both 0; set one above 0")
        return self


class Training(Spec):
    """Settings shared by every training run of the study."""

    max_epochs: int = Field(gt=0, le=1_000_000)
    """Epochs of a full training run (TPE runs a fraction of them)."""
    precision: Literal["32-true", "64-true", "bf16-mixed", "16-mixed", "bf16-true"] = "32-true"
    """Lightning precision: bf16-mixed for language models on GPUs; 32-true on CPU and for force fields,
    which bf16-mixed trained no faster and to worse energies (BENCHMARKS.md). bf16-true (weights and
    optimiser state in bf16 too) is for language models only: it would round force fields' energies to
    32 eV steps."""
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    """Where to train: auto picks a GPU when one is visible."""
    devices: PositiveInt | Literal["auto"] = 1
    """Devices per cell. More than one trains the cell with Lightning DDP: each rank takes a share of
    every epoch's rows (the batch size is per rank), rank 0 writes the results, and the TPE estimate
    reads rank 0's per-step losses."""
    optimizer: Optimizer = Optimizer()
    """Optimiser settings."""
    scheduler: Scheduler = Scheduler()
    """Learning-rate schedule: linear warm-up, then constant, cosine decay or reduction on plateau."""
    loss: LossWeights = LossWeights()
    """Force-field loss; language models train on the next token's cross-entropy and refuse it."""
    gradient_clip: PositiveFloat | None = 1.0
    """Clip the gradient norm to this value; none disables clipping."""
    compile: bool | Literal["cuda-graphs"] = False
    """true: torch.compile the language model (GPU; the first steps are slower while it compiles).
    cuda-graphs: replay each step's kernels from a CUDA graph, which removes the launch cost that
    bounds small models; language models compile with mode reduce-overhead and need packing (batches
    of one shape); force fields, which torch.compile cannot take (their loss needs a double backward),
    pad every batch to one shape and record their whole step (forward, forces, backward, clipping,
    optimiser) as one graph, and run that step eagerly on a CPU."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass instead of storing them: about a third
    more compute for a fraction of the activation memory (what lets a ~1B-parameter ChemGPT train on
    one 80 GB card). Language models only."""
    bucket_batches: int | None = Field(None, gt=0, le=1 << 16)
    """Length bucketing: sort the shuffled rows by length within windows of this many batches, cut them
    into batches and shuffle the batches, so a batch pads to rows of its own length (100 is a good
    value). Every row is still seen once an epoch, and a resumed epoch continues the same order.
    Language models only; none: plain shuffling."""
    packing: int | None = Field(None, gt=0, le=1 << 16)
    """Pack each batch's molecules into rows of this many positions, at least every size's
    max_length and at most 65,536 (positions restart and attention stays within each molecule, so the
    loss is that of padded batches). The row count is fixed per run from the molecules' lengths, so
    every batch has one shape. With 256 and batches of 256 MOSES molecules: 40 rows, in which 91% of positions hold
    tokens, against 76% padded. Language models only; none: one padded molecule per row."""
    num_workers: int | None = Field(None, ge=0)
    """Data-loader worker processes of language models (does not change results); none: 2 when training
    on a GPU, where collating batches in the training process left the GPU idle at times, else 0."""
    checkpoint_every_n_epochs: PositiveInt = 1
    """Write a resumable checkpoint every N epochs (and on SIGTERM); a killed cell resumes from it."""

    def notes(self) -> list[str]:
        """What `validate` and `compile` say of settings that change nothing where the cells run."""
        gpu = [f"{key}: {value}" for key, value in (("precision", self.precision), ("compile", self.compile))
               if value in ("bf16-mixed", "bf16-true", "cuda-graphs")]
        if self.accelerator != "cpu" or not gpu:
            return []
        rounds = ", and bf16 rounds the numbers" if self.precision.startswith("bf16") else ""
        return [f"training.accelerator: cpu trains every cell on the CPU, where {' and '.join(gpu)} speed nothing"
                f"{rounds} (they are for GPUs): leave accelerator out (auto takes a GPU where one is visible) or "
                "set gpu"]

    @model_validator(mode="after")
    def _layouts(self) -> "Training":
        if self.packing and self.bucket_batches is not None:
            raise ValueError("training.packing: set it or training.bucket_batches, not both (both remove "
                             "padding; packing also keeps one batch shape)")
        return self


BOOKKEEPING = frozenset({"num_workers", "checkpoint_every_n_epochs"})
"""Fields of `training` that change no result: in no cell's identity, and left out of the archived spec."""
