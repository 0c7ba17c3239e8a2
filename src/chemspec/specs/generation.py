"""The `generation` section: how molecules are sampled from every trained ChemGPT cell."""

from __future__ import annotations

from pydantic import Field, PositiveFloat, model_validator

from chemspec.specs.base import BatchSize, Spec


class Generation(Spec):
    """Sampling settings; each trained cell draws `samples` molecules and is scored against the test set."""

    samples: int = Field(1000, ge=2, le=1_000_000)
    """Molecules sampled per cell (FCD and diversity need at least 2; MOSES uses 30,000)."""
    fcd_molecules: int | None = Field(None, ge=2, le=1_000_000)
    """Valid molecules each cell's FCD is scored on, drawn by seed from its valid samples. FCD is biased
    upward at small counts, so every cell is scored at this one count, and the reference stage measures
    the floor at it (the FCD of as many real molecules, none from the test set); the FCD fit is of the
    excess over that floor. A cell with fewer valid samples has no FCD and is left out of the FCD fit.
    Default: nine tenths of `samples`."""
    temperature: PositiveFloat = 1.0
    """Softmax temperature: 1 samples the model's distribution, lower is greedier."""
    top_k: int = Field(0, ge=0)
    """Sample among the k most likely tokens only (0: all tokens)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling: the smallest token set of this total probability (1: all tokens)."""
    batch_size: BatchSize = 1000
    """Sequences generated at once; it draws other molecules from the same distribution."""
    seed: int = Field(0, ge=0, lt=2**31)
    """Seed of the sampler, of the molecules FCD is scored on, and of the floor's real molecules."""

    @model_validator(mode="after")
    def _fcd_within_samples(self) -> Generation:
        if self.fcd_molecules is not None and self.fcd_molecules > self.samples:
            raise ValueError(f"generation.fcd_molecules {self.fcd_molecules} is more than generation.samples "
                             f"({self.samples}), so no cell could be scored; set it at most {self.samples}, "
                             "or leave it out (nine tenths of samples)")
        return self

    def fcd_count(self) -> int:
        """The number of valid molecules FCD is scored on, at every cell and for the floor."""
        return self.fcd_molecules or max(2, self.samples * 9 // 10)
