"""The `model` section: the family and the capacities that form one axis of the scaling grid."""

from __future__ import annotations

from typing import Annotated, Literal, Union, get_args

from pydantic import Field, model_validator

from chemspec.specs.base import PROBLEMS_SEPARATOR, Name, Spec

MAX_PARAMETERS = 10**11
"""The largest model chemspec validates: about 80 times the paper's largest ChemGPT (1.2e9)."""
CPU_PARAMETERS = 10**8
"""Past this many non-embedding parameters validate notes that a ChemGPT size on the CPU will not finish."""
BOHR = 0.52917721067
"""The bohr in Å, as SpookyNet's reference code has it."""
ForceFieldFamily = Literal["schnet", "painn", "spookynet"]
FORCE_FIELDS: tuple[str, ...] = get_args(ForceFieldFamily)
SPOOKYNET_DEFAULTS = {"cutoff": 10 * BOHR, "n_rbf": 16}
"""SpookyNet's reference cutoff (10 bohr, in Å) and radial basis size, for each that a spec leaves unset."""


class ChemGPTSize(Spec):
    """One GPT-Neo shape; capacity is reported as the non-embedding parameter count."""

    n_layer: int = Field(gt=0, le=1024)
    """Transformer blocks."""
    n_embd: int = Field(gt=0, le=1 << 16)
    """Hidden width; must be divisible by n_head."""
    n_head: int = Field(gt=0, le=1024)
    """Attention heads."""
    max_length: int = Field(128, ge=3, le=1 << 16)
    """Longest token sequence, [BOS] and [EOS] included, so at least 3 (molecules longer than this are
    dropped, and counted, by the data stage); one value for every size, since every size trains on the
    same molecules."""

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "ChemGPTSize":
        problems = []
        if self.n_embd % self.n_head:
            options = [h for h in range(1, min(self.n_embd, 64) + 1) if self.n_embd % h == 0]
            near = sorted(options, key=lambda h: abs(h - self.n_head))[:2]
            problems.append(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                            f"try n_head {' or '.join(map(str, sorted(near)))}")
        if 12 * self.n_layer * self.n_embd**2 > MAX_PARAMETERS:
            problems.append(f"n_layer {self.n_layer} × n_embd {self.n_embd} makes about "
                            f"{12 * self.n_layer * self.n_embd**2:.1e} non-embedding parameters, more than "
                            f"the {MAX_PARAMETERS:.0e} chemspec trains; make n_layer or n_embd smaller")
        if problems:
            raise ValueError(PROBLEMS_SEPARATOR.join(problems))
        return self


class ChemGPTModel(Spec):
    """ChemGPT: a GPT-Neo causal language model on SELFIES (or SMILES) tokens."""

    family: Literal["chemgpt"]
    """Model family."""
    sizes: dict[Name, ChemGPTSize] = Field(min_length=1)
    """Named sizes, e.g. {xs: {n_layer: 2, n_embd: 32, n_head: 2}}; names are lowercase words."""

    def size_names(self) -> list[str]:
        return list(self.sizes)

    def capacities(self) -> int:
        """Distinct non-embedding parameter counts among the sizes: set by n_layer and n_embd (n_head splits
        the width without changing it), and what the fits put on their parameter axis."""
        return len({(size.n_layer, size.n_embd) for size in self.sizes.values()})

    def cpu_notes(self) -> list[str]:
        """The sizes too large for a CPU to train in the time a study has."""
        counts = {name: 12 * size.n_layer * size.n_embd**2 for name, size in self.sizes.items()}
        return [f"model.sizes.{name}: about {n:.1e} non-embedding parameters under training.accelerator: cpu, where "
                "a training step of it takes seconds to minutes: set accelerator: gpu, or leave it out (auto takes "
                "a GPU where one is visible)" for name, n in counts.items() if n > CPU_PARAMETERS]

    @model_validator(mode="after")
    def _one_max_length(self) -> "ChemGPTModel":
        lengths = {name: size.max_length for name, size in self.sizes.items()}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{name} {length}" for name, length in lengths.items())
            raise ValueError(f"model.sizes: max_length differs between sizes ({listed}); every size trains on the "
                             f"same molecules, so give them one max_length, e.g. {max(lengths.values())} on each")
        shapes: dict[tuple[int, int, int], list[str]] = {}
        for name, size in self.sizes.items():
            shapes.setdefault((size.n_layer, size.n_embd, size.n_head), []).append(name)
        repeated = next(((shape, names) for shape, names in shapes.items() if len(names) > 1), None)
        if repeated:
            (n_layer, n_embd, n_head), names = repeated
            raise ValueError(f"model.sizes: {' and '.join(names)} are one shape (n_layer {n_layer}, n_embd {n_embd}, "
                             f"n_head {n_head}), so their cells would train the same model; change one's shape or "
                             "remove it")
        return self


class GNNModel(Spec):
    """A neural force field whose capacity is width × depth (SchNet, PaiNN or SpookyNet)."""

    family: ForceFieldFamily
    """Model family."""
    widths: list[Annotated[int, Field(gt=0, le=1 << 14)]] = Field(min_length=1)
    """Feature widths (n_atom_basis for SchNet/PaiNN, num_features for SpookyNet), up to 16,384."""
    depths: list[Annotated[int, Field(gt=0, le=256)]] = Field(min_length=1)
    """Interaction blocks (n_interactions / num_modules), up to 256."""
    cutoff: float = Field(5.0, gt=0, le=100)
    """Neighbour cutoff in Å, up to 100; by default 5.0, and for SpookyNet its reference's 10 bohr (5.2918)."""
    n_rbf: int = Field(20, ge=2, le=4096)
    """Radial basis functions, at least 2 (schnetpack spaces their centres by the gap between two); by default
    20, and for SpookyNet its reference's 16."""
    charge_spin: bool = False
    """SpookyNet only: embed each structure's total charge and spin multiplicity (data that carry them:
    extxyz or ASE-db `charge` and `multiplicity`, or charged or radical SMILES in MD generation), so that
    one model learns several charge and spin states. Both embeddings are zero for a neutral singlet."""

    @model_validator(mode="before")
    @classmethod
    def _family_defaults(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("family") == "spookynet":
            return {**SPOOKYNET_DEFAULTS, **data}
        return data

    @model_validator(mode="after")
    def _unique(self) -> "GNNModel":
        for key in ("widths", "depths"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ValueError(f"model.{key} repeats a value ({values}); list each value once")
        if self.charge_spin and self.family != "spookynet":
            raise ValueError(f"model.charge_spin: model.family {self.family!r} has no charge or spin embeddings; "
                             "set model.family: spookynet, or remove model.charge_spin")
        return self

    def size_names(self) -> list[str]:
        return [f"w{w}d{d}" for w in self.widths for d in self.depths]

    def capacities(self) -> int:
        """Distinct parameter counts among the sizes: one per width × depth."""
        return len(self.widths) * len(self.depths)

    def cpu_notes(self) -> list[str]:
        """None: force fields of any width chemspec validates train on a CPU, if slowly."""
        return []


Model = Annotated[Union[ChemGPTModel, GNNModel], Field(discriminator="family")]
