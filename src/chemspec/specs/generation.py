"""The `generation` section: how molecules are sampled from every trained ChemGPT cell."""

from __future__ import annotations

from pydantic import Field, PositiveFloat

from chemspec.specs.base import BatchSize, Spec


class Generation(Spec):
    """Sampling settings; each trained cell draws `samples` molecules and is scored against the test set."""

    samples: int = Field(1000, ge=2, le=1_000_000)
    """Molecules sampled per cell (FCD and diversity need at least 2; MOSES uses 30,000)."""
    temperature: PositiveFloat = 1.0
    """Softmax temperature: 1 samples the model's distribution, lower is greedier."""
    top_k: int = Field(0, ge=0)
    """Sample among the k most likely tokens only (0: all tokens)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling: the smallest token set of this total probability (1: all tokens)."""
    batch_size: BatchSize = 1000
    """Sequences generated at once; it draws other molecules from the same distribution."""
    seed: int = Field(0, ge=0, lt=2**31)
    """Seed of the sampler."""
