"""The `data` section: where molecules or structures come from and how they are split."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, PositiveInt, Tag, model_validator

from chemspec.specs.atoms_source import ATOMS_SUFFIXES, AtomsFileSource, GenerateMD
from chemspec.specs.base import PROBLEMS_SEPARATOR, Spec
from chemspec.specs.smiles_file import SmilesFileSource

MOSES_TRAIN_MOLECULES = 1_584_663
SAMPLE = "seeded"
"""What a data cell's source records where max_molecules draws a seeded sample of the whole file (the first
rows until 2026-12-05), so that the cell's identity moved with what it reads."""


class PackageSource(Spec):
    """SMILES shipped inside a Python package (no network)."""

    package: Literal["moses"]
    """`moses`: the MOSES training set from the molsets==0.3.1 wheel (1,584,663 SMILES)."""
    max_molecules: PositiveInt | None = None
    """Read N molecules drawn by the study's seed from the whole file (MOSES's rows are not in random order,
    so its first rows would be a biased sample); none reads all."""


def _source_tag(value: Any) -> str | None:
    if isinstance(value, Spec):
        value = value.model_dump()
    if not isinstance(value, dict):
        return None
    for key in ("package", "generate"):
        if key in value:
            return key
    if "file" in value:
        atoms_keys = {"format", "units", "energy_key", "forces_key"} & value.keys()
        smiles_keys = {"column", "max_molecules"} & value.keys()
        by_name = not smiles_keys and str(value["file"]).lower().endswith(ATOMS_SUFFIXES)
        return "atoms_file" if atoms_keys or by_name else "smiles_file"
    return None


Source = Annotated[
    Union[
        Annotated[PackageSource, Tag("package")],
        Annotated[SmilesFileSource, Tag("smiles_file")],
        Annotated[GenerateMD, Tag("generate")],
        Annotated[AtomsFileSource, Tag("atoms_file")],
    ],
    Discriminator(
        _source_tag,
        custom_error_type="source",
        custom_error_message="a source needs one of the keys package, file or generate",
    ),
]


FINITE = {"md17": " to train on (a structure whose energy, forces or positions are NaN or infinite is left out, and "
                  "not counted)",
          "ani1x": " to train on (a structure without a finite energy at data.source.energy_key's level is left out, "
                   "and not counted)"}
"""What a count of an atoms file's structures leaves out, by format (extxyz and asedb files are counted whole)."""
FINITE |= {"rmd17": FINITE["md17"], "ani2x": FINITE["ani1x"]}


class Data(Spec):
    """What the models are trained on and how it is split into nested training subsets."""

    kind: Literal["smiles", "atoms"]
    """`smiles` for chemical language models, `atoms` for force fields."""
    source: Source
    """Where the data comes from: {package: moses}, {file: x.csv, column: smiles}, {generate: md, ...}
    or {file: x.npz, format: md17}."""
    representation: Literal["selfies", "smiles"] | None = None
    """String representation the language model reads (smiles data only; default selfies)."""
    sizes: list[PositiveInt] = Field(min_length=1)
    """Training-set sizes, ascending; each subset contains the smaller ones."""
    validation: PositiveInt
    """Molecules or structures held out for validation (taken before any training subset)."""
    test: PositiveInt
    """Molecules or structures held out for testing (taken before any training subset)."""

    @model_validator(mode="after")
    def _check(self) -> "Data":
        problems = []
        if any(b <= a for a, b in zip(self.sizes, self.sizes[1:])):
            problems.append(f"data.sizes {self.sizes} must be strictly ascending; try {sorted(set(self.sizes))}")
        smiles_source = isinstance(self.source, (PackageSource, SmilesFileSource))
        if (self.kind == "smiles") != smiles_source:
            problems.append(f"data.source does not fit data.kind {self.kind!r}: smiles data need "
                            "{package: ...} or {file: ..., column: ...}; atoms data need "
                            "{generate: md, ...} or {file: ..., format: ...}")
        if self.kind == "atoms" and self.representation is not None:
            problems.append("data.representation applies to smiles data only; remove it")
        if isinstance(self.source, PackageSource):
            try:
                self.check_available(MOSES_TRAIN_MOLECULES, "the source", cap=self.source.max_molecules)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ValueError(PROBLEMS_SEPARATOR.join(problems))
        return self

    def notes(self) -> list[str]:
        """Settings that read otherwise than they seem."""
        cap = getattr(self.source, "max_molecules", None)
        if isinstance(self.source, PackageSource) and cap is not None and cap > MOSES_TRAIN_MOLECULES:
            return [f"data.source.max_molecules: {cap:,} is more than the {MOSES_TRAIN_MOLECULES:,} molecules of "
                    f"{self.source.package}, so all of them are read; leave it out to say so"]
        return []

    def check_available(self, available: int, where: str, cap: int | None = None) -> None:
        """Refuse sizes that need more than `available` rows of `where`, or than the `cap` of them that
        data.source.max_molecules reads."""
        needed = self.sizes[-1] + self.validation + self.test
        if cap is not None and cap < needed <= available:
            raise ValueError(f"data.sizes: the largest size ({self.sizes[-1]}) plus validation ({self.validation}) "
                             f"and test ({self.test}) needs {needed} but data.source.max_molecules reads {cap} of the "
                             f"{available} in {where}; raise data.source.max_molecules to at least {needed}, or "
                             "lower the sizes")
        what = "structures" if self.kind == "atoms" else "molecules"
        if not available:
            raise ValueError(f"{where} holds no {what} (it is empty); check the file, or name another")
        if needed > available:
            raise ValueError(f"data.sizes: the largest size ({self.sizes[-1]}) plus validation "
                             f"({self.validation}) and test ({self.test}) needs {needed} but {where} "
                             f"has {available}{FINITE.get(getattr(self.source, 'format', ''), '')}; lower the sizes or "
                             f"read more {what}")

    @property
    def text_representation(self) -> str:
        return self.representation or "selfies"
