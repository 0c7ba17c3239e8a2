"""Force-field data sources: MD17-style data generated here (`generate: md`), and files of structures with
energies and forces in public formats, with their units."""

from __future__ import annotations

import functools
from typing import Any, Literal, get_args

from pydantic import (Field, PositiveInt, PrivateAttr, SerializerFunctionWrapHandler, ValidationInfo, field_validator,
                      model_serializer, model_validator)

from chemspec.specs.base import SourcePath, Spec

MOLECULES = {
    "water": "O", "methane": "C", "ammonia": "N", "methanol": "CO", "ethanol": "CCO", "benzene": "c1ccccc1",
    "toluene": "Cc1ccccc1", "naphthalene": "c1ccc2ccccc2c1", "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "malonaldehyde": "O=C/C=C\\O", "uracil": "O=c1cc[nH]c(=O)[nH]1", "salicylic_acid": "O=C(O)c1ccccc1O",
    "paracetamol": "CC(=O)Nc1ccc(O)cc1", "azobenzene": "c1ccc(cc1)N=Nc1ccccc1",
}
"""Molecules that `generate: md` knows by name (the MD17 set and a few small ones); others by SMILES."""


@functools.lru_cache(maxsize=256)
def _md_problem(smiles: str) -> str | None:
    """Why the data stage could not start MD from this SMILES (it embeds the molecule with its hydrogens
    and relaxes it with MMFF), or None."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return f"is neither a known molecule ({', '.join(MOLECULES)}) nor a valid SMILES; fix the name"
    mol = Chem.AddHs(mol)
    if mol.GetNumAtoms() < 2:
        atoms = "no atoms" if mol.GetNumAtoms() == 0 else "one atom"
        return f"has {atoms}, hydrogens included; MD needs at least two: choose another molecule"
    if not AllChem.MMFFHasAllMoleculeParams(mol):
        return ("has atoms that MMFF has no parameters for, and the data stage relaxes each molecule with MMFF "
                "before MD; choose another molecule")
    return None


def md_smiles(molecules: list[str]) -> list[str]:
    """What each molecule is: a known name's SMILES (MOLECULES), else the SMILES as written."""
    return [MOLECULES.get(name.lower(), name) for name in molecules]


@functools.lru_cache(maxsize=None)
def md_state(smiles: str) -> tuple[int, int]:
    """(total charge, spin multiplicity) with which the data stage labels and stores a molecule: its formal
    charge, and one more than its radical electrons."""
    from rdkit import Chem
    from rdkit.Chem import Descriptors

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    return Chem.GetFormalCharge(mol), Descriptors.NumRadicalElectrons(mol) + 1


class GenerateMD(Spec):
    """MD17-style data generated here: RDKit conformer, ASE Langevin MD, GFN2-xTB labels."""

    generate: Literal["md"]
    """`md`: molecular dynamics trajectories labelled by a semi-empirical method."""
    molecules: list[str] = Field(min_length=1)
    """Molecules by name (e.g. ethanol) or SMILES."""
    method: Literal["gfn2-xtb"] = "gfn2-xtb"
    """Level of theory of the labels."""
    temperature_K: float = Field(500.0, gt=0, le=5000)
    """Langevin thermostat temperature in kelvin (MD17 ran at 500 K), up to 5,000 K, above which molecules
    fall apart within a few steps."""
    frames: PositiveInt = 1000
    """Structures to keep in total, spread over the molecules."""
    stride: PositiveInt = 10
    """MD steps between kept frames."""
    timestep_fs: float = Field(0.5, gt=0, le=5)
    """MD time step in femtoseconds (MD17: 0.5), up to 5 fs: a bond to hydrogen vibrates in about 10 fs, so
    longer steps blow the trajectory up."""
    equilibration_steps: int = Field(1000, ge=0)
    """Steps run before the first frame is kept."""

    @model_validator(mode="after")
    def _known_molecules(self) -> "GenerateMD":
        for i, (name, smiles) in enumerate(zip(self.molecules, self.smiles())):
            if problem := _md_problem(smiles):
                raise ValueError(f"data.source.molecules.{i}: {name!r} {problem}")
        if self.frames < len(self.molecules):
            raise ValueError(f"data.source.frames ({self.frames}) must be at least one per molecule "
                             f"({len(self.molecules)})")
        return self

    def available(self) -> int:
        return self.frames

    def smiles(self) -> list[str]:
        return md_smiles(self.molecules)

    def states(self) -> dict[str, tuple[int, int]]:
        """Each molecule's (total charge, spin multiplicity), by name as written."""
        return {name: md_state(smiles) for name, smiles in zip(self.molecules, self.smiles())}


FORMAT_UNITS = {
    "md17": {"energy": "kcal/mol", "length": "Angstrom"},
    "rmd17": {"energy": "kcal/mol", "length": "Angstrom"},
    "ani1x": {"energy": "Hartree", "length": "Angstrom"},
    "ani2x": {"energy": "Hartree", "length": "Angstrom"},
    "extxyz": {"energy": "eV", "length": "Angstrom"},
    "asedb": {"energy": "eV", "length": "Angstrom"},
}
"""The units each format's files are written in: the sGDML/MD17 and rMD17 releases in kcal/mol and Å,
ANI-1x and torchani's ANI-2x in Hartree and Å; extended XYZ and ASE databases fix no unit, and ASE's
own is eV and Å."""


EnergyUnit = Literal["eV", "kcal/mol", "kJ/mol", "Hartree"]
LengthUnit = Literal["Angstrom", "bohr"]
ForceUnit = Literal["eV/Angstrom", "eV/bohr", "kcal/mol/Angstrom", "kcal/mol/bohr", "kJ/mol/Angstrom", "kJ/mol/bohr",
                    "Hartree/Angstrom", "Hartree/bohr"]


class Units(Spec):
    """Units of the values in a data file; converted to eV and Å on load."""

    energy: EnergyUnit | None = None
    """Energy unit of the file; left out: the format's. Read in any case (`hartree`, and `Ha`); params.yaml and
    this schema keep the spelling listed."""
    length: LengthUnit | None = None
    """Length unit of the file's positions; left out: the format's. Read in any case, and `Å`, `A`, `Ang` or
    `angstroms` as Angstrom; params.yaml and this schema keep the spelling listed."""
    force: ForceUnit | None = None
    """Unit of the file's forces, an energy unit per length unit (`Hartree/bohr`, `kcal/mol/Angstrom`); left out:
    the energy unit per the length unit. For files whose forces and positions use different lengths, as
    quantum-chemistry outputs with gradients in Hartree/bohr beside positions in Å."""

    @field_validator("energy", "length", mode="before")
    @classmethod
    def _spelled_any_case(cls, value: object, info: ValidationInfo) -> object:
        """`ev`, `hartree`, `angstrom` or `Å` as the unit they name; the spelling above is what params.yaml holds."""
        return _spelled(value, EnergyUnit if info.field_name == "energy" else LengthUnit)

    @field_validator("force", mode="before")
    @classmethod
    def _energy_per_length(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        energy, _, length = value.strip().rpartition("/")
        unit = f"{_spelled(energy, EnergyUnit)}/{_spelled(length, LengthUnit)}"
        if unit not in get_args(ForceUnit):
            raise ValueError(f"force unit {value!r} is not an energy unit per length unit: write one of "
                             f"{', '.join(get_args(EnergyUnit))}, a slash and one of "
                             f"{', '.join(get_args(LengthUnit))}, e.g. Hartree/bohr")
        return unit

    @model_serializer(mode="wrap")
    def _force_only_where_given(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave out a force unit that is the energy unit per the length unit or not given, so that params.yaml
        and the identities of studies without one stay as they were, and one with it reads the same data."""
        fields = handler(self)
        if fields.get("force") in (None, f"{self.energy}/{self.length}"):
            fields.pop("force", None)
        return fields


def _spelled(value: object, unit: Any) -> object:
    """A unit of the Literal `unit` written in any case, or as another common name (ALIASES), in the spelling it
    lists."""
    if not isinstance(value, str):
        return value
    names = get_args(unit)
    spelled = {name.lower(): name for name in names} | {alias: name for alias, name in ALIASES.items() if name in names}
    return spelled.get(value.strip().lower(), value)


ALIASES = {"å": "Angstrom", "a": "Angstrom", "ang": "Angstrom", "angstroms": "Angstrom", "bohrs": "bohr",
           "ha": "Hartree", "hartrees": "Hartree"}
"""Other names of units, lower-cased, as files and codes write them (ASE's `Ang`, `eV/A` forces)."""


ANI_LEVEL = "wb97x_dz"
"""ANI-1x's level of theory when data.source.energy_key is left out: ωB97x/6-31G(d), energies and forces."""


def ani_forces_key(energy_key: str) -> str:
    """The ANI-1x forces dataset at the level of theory of an energy dataset: 'wb97x_tz.energy' ->
    'wb97x_tz.forces', the default key 'energy' -> 'wb97x_dz.forces'."""
    if energy_key == "energy":
        return f"{ANI_LEVEL}.forces"
    level, dot, _ = energy_key.rpartition(".")
    return f"{level}.forces" if dot else "forces"


class AtomsFileSource(Spec):
    """Structures with energies and forces from a file in a public format."""

    file: SourcePath
    """Path to the file, relative to the study file's directory or absolute; it must exist."""
    format: Literal["md17", "rmd17", "ani1x", "ani2x", "extxyz", "asedb"]
    """File format: sGDML/MD17 npz, rMD17 npz, ANI-1x release HDF5, torchani HDF5 (ani2x: the ANI-2x
    release, a group per atom count), extended XYZ, or ASE database. Read in any case (`MD17`)."""
    units: Units | None = None
    """Units the file's values are written in; a unit left out is the format's own: kcal/mol and Å for
    md17 and rmd17, Hartree and Å for ani1x and ani2x, eV and Å for extxyz and asedb. They are filled in when the
    study is read, so params.yaml and the data cell's identity name the units the data are read in.
    Left out, the data stage refuses values implausible in the format's units (forces of more than
    10 eV/Å RMS, energies beyond an atom's total energy or, in the all-electron totals of md17, rmd17, ani1x
    and ani2x, short of Z²/2 Hartree an atom), which a file in another unit gives. Given, they are held only
    to the bounds no molecule passes: forces above 10 eV/Å RMS in the median structure, or energies beyond
    the Thomas-Fermi energy."""
    unit_checks: bool = True
    """false: the data stage reads the values as they are, however implausible in their units (see units) or at
    odds with the energies along a trajectory (forces whose work is not the energy's change between
    consecutive frames a small step apart), for a file that is right beyond the bounds of the molecules they
    assume (short-range scans, very hot MD). In no cell's identity, and not archived."""
    energy_key: str = "energy"
    """Key of the energy in extended XYZ headers or ASE-db rows; for ani1x the HDF5 dataset, `energy`
    meaning wb97x_dz.energy (others: wb97x_tz.energy, ccsd(t)_cbs.energy, ...); for ani2x the dataset
    of each group, `energy` meaning `energies`."""
    forces_key: str = "forces"
    """Key of the forces in extended XYZ per-atom arrays or ASE-db rows; for ani1x and ani2x the HDF5 dataset,
    left out the forces at energy_key's level of theory (wb97x_tz.forces for wb97x_tz.energy). A level
    without forces (ccsd(t)_cbs) stops the data stage unless this names another level's forces."""

    _energy_unit_given: bool = PrivateAttr(default=True)

    @model_validator(mode="wrap")
    @classmethod
    def _format_defaults(cls, value: Any, handler: Any) -> "AtomsFileSource":
        """Fill the units a source leaves out with its format's, and an ani1x forces key left out with the
        energy level's, before the fields are validated (the model is frozen), and remember whether the
        study gave the energy unit; a value of the wrong shape is left for validation to report."""
        if not isinstance(value, dict) or not isinstance(value.get("format"), str):
            return handler(value)
        value = {**value, "format": value["format"].strip().lower()}  # `MD17`, as papers write it
        energy_key = value.get("energy_key")
        if value["format"] == "ani1x" and isinstance(energy_key, str) and value.get("forces_key", "forces") == "forces":
            value = {**value, "forces_key": ani_forces_key(energy_key)}
        given = {} if value.get("units") is None else value["units"]
        if isinstance(given, Units):
            given = given.model_dump()
        if value["format"] not in FORMAT_UNITS or not isinstance(given, dict):
            return handler(value)
        written = {key: unit for key, unit in given.items() if unit is not None}
        source = handler({**value, "units": {**FORMAT_UNITS[value["format"]], **written}})
        source._energy_unit_given = "energy" in written
        return source

    @model_validator(mode="after")
    def _keys_apply(self) -> "AtomsFileSource":
        named = sorted(key for key in ("energy_key", "forces_key")
                       if getattr(self, key) != type(self).model_fields[key].default)
        if self.format in ("md17", "rmd17") and named:
            arrays = "R, z, E, F" if self.format == "md17" else "coords, nuclear_charges, energies, forces"
            raise ValueError(f"data.source.{named[0]} applies to extxyz, asedb, ani1x and ani2x files; an "
                             f"{self.format} npz holds its arrays under fixed keys ({arrays}): remove "
                             f"{' and '.join(named)}")
        return self

    @property
    def check_units(self) -> bool:
        """Whether the data stage holds the values to every plausibility bound of their energy unit: where the
        study left that unit to the format's default (a unit it gives meets only the bounds no molecule passes)."""
        return not self._energy_unit_given and self.unit_checks


COMPRESSIONS = (".gz", ".bz2", ".xz")
"""The compressed forms of an extended XYZ file that ASE opens (and the data stage reads in memory)."""
ATOMS_SUFFIXES = (".npz", ".hdf5", ".h5", ".db",
                  *(f"{xyz}{packed}" for xyz in (".xyz", ".extxyz") for packed in ("", *COMPRESSIONS)))
"""Files read as atoms sources when a source names neither its format nor a SMILES column, so that a
misspelt `format` is reported against the atoms source's keys."""
