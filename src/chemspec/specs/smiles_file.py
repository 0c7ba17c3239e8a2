"""A file of SMILES, and the checks that let validate refuse what the data stage would read no molecule from."""

from __future__ import annotations

import csv
import difflib
import itertools
import math
import random
import re
from collections.abc import Iterator
from pathlib import Path

from pydantic import Field, PositiveInt

from chemspec.specs.base import SourcePath, Spec

COMPRESSED = (b"\x1f\x8b", b"BZ", b"\xfd7")
"""The first bytes of gzip, bzip2 and xz files."""
SPREADSHEETS = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0")
"""The first bytes of .xlsx (a zip archive) and .xls files."""


SELFIES = re.compile(r"(\[[^\]\s]+\])+")
"""A SELFIES string: bracketed tokens only (checked where RDKit reads no SMILES in it)."""
BARE_ATOMS = re.compile(r"(\[[A-Z][a-z]?\]){3,}")
"""Three or more bracketed elements without hydrogens or charge: SELFIES that RDKit reads as a chain of radicals
([C][C][O]), which no SMILES file writes for a molecule ([O][O], triplet oxygen, has two)."""
HEAD_ROWS = 20
"""The first lines, where validate looks for molfile records."""
SAMPLE_ROWS = 40
"""Rows drawn evenly from the whole file (seeded) that validate reads as molecules: where none is a SMILES, the
data stage, which refuses a file more than half of whose rows are none, would refuse it (1 in 10^12 otherwise)."""
MOLFILE = re.compile(r"V[23]000\s*$|^\$\$\$\$|^@<TRIPOS>")
"""Lines of molfile records (SD files, MOL, MOL2), which no SMILES file holds."""


class SmilesFileSource(Spec):
    """A CSV (with a header) or TXT (one SMILES a line) file of molecules."""

    file: SourcePath
    """Path to the file, relative to the study file's directory or absolute; it must exist."""
    column: str | None = Field(None, min_length=1)
    """CSV column holding SMILES; none means a plain text file with one SMILES a line and no header."""
    max_molecules: PositiveInt | None = None
    """Read N rows drawn by the study's seed from the whole file, as for a package; none reads all."""

    def _first_line_is_a_molecule(self, first: str) -> None:
        """Refuse a file read without `column` whose first line's SMILES (its first field; a name may follow)
        is none RDKit reads, or BARE_ATOMS, and is a header or SELFIES, each of which the data stage would read
        as molecules and find (almost) none valid."""
        fields = first.split()
        if _reads_as_smiles(fields[0]):
            return
        if SELFIES.fullmatch(fields[0]):
            raise ValueError(f"data.source.file {self.file!r} holds SELFIES ({fields[0][:60]!r}); it must hold SMILES, "
                             "which chemspec encodes itself (data.representation picks what the model reads): "
                             "decode them first (selfies.decoder)")
        bonds = set("()[]=#@+/\\") & set(fields[0])  # a SMILES RDKit cannot read, not a column name
        named = [field for field in fields if "smiles" in field.lower()] if not bonds else []
        if named:
            fix = ("convert it to comma-separated and set data.source.column to its SMILES column"
                   if not re.fullmatch(r"\w+", named[0]) else
                   f"convert it to comma-separated (it looks {'tab' if chr(9) in first else 'space'}-separated) and "
                   f"set data.source.column: {named[0]}" if len(fields) > 1 else f"set data.source.column: {named[0]}")
            raise ValueError(f"data.source.file {self.file!r} starts with a header ({first.strip()[:60]!r}), which "
                             f"is read as a molecule without data.source.column: {fix}")

    def rows(self, path: Path) -> int:
        """Molecules the file offers (non-empty lines, less the header of a CSV), whatever max_molecules reads
        of them; a CSV's header must name `column`, and rows drawn from the whole file must hold a SMILES."""
        with open(path, encoding="utf-8-sig", newline="") as handle:  # as the data stage reads
            try:
                lines = (line for line in handle if line.strip())
                head = list(itertools.islice(lines, HEAD_ROWS))
                sample, count = _reservoir(itertools.chain(head[1:] if self.column else head, lines), SAMPLE_ROWS)
            except UnicodeDecodeError:
                handle.seek(0)
                if handle.buffer.read(4) in SPREADSHEETS:
                    raise ValueError(f"data.source.file {self.file!r} is a spreadsheet (Excel's format); save its "
                                     "sheet as CSV (UTF-8) and name that file") from None
                handle.seek(0)
                if handle.buffer.read(2) in COMPRESSED:
                    raise ValueError(f"data.source.file {self.file!r} is compressed; SMILES files are read as plain "
                                     "text: decompress it (gunzip, bunzip2 or unxz) and name the result") from None
                raise ValueError(f"data.source.file {self.file!r} is not UTF-8 text; save it as UTF-8") from None
        if any(MOLFILE.search(line.rstrip("\r\n")) for line in head):
            raise ValueError(f"data.source.file {self.file!r} holds molfile records (an SD, MOL or MOL2 file); "
                             "chemspec reads SMILES, one a line or in a CSV column: convert it (RDKit: "
                             "Chem.SDMolSupplier, then Chem.MolToSmiles)")
        first = head[0] if head else ""
        try:
            self._check_rows(first, sample)
        except csv.Error as exc:
            raise ValueError(f"data.source.file {self.file!r} does not read as a CSV ({exc}); check the file") from None
        return count

    def _check_rows(self, first: str, sample: list[str]) -> None:
        header = next(csv.reader([first]), [])
        if not self.column and len(header) <= 1 and first.split():
            self._first_line_is_a_molecule(first)
        if not self.column and len(header) > 1 and not ("," not in first.split()[0] and _reads_as_smiles(
                first.split()[0])):  # a comma in the name after a SMILES is no CSV
            raise ValueError(f"data.source.file {self.file!r} has commas in its first line ({first.strip()[:60]!r}), "
                             f"which no SMILES holds: it reads as a CSV; {self._header_fix(header)}")
        if self.column:
            self._check_column(first, header)
        self._check_sample(sample, header)

    def _header_fix(self, header: list[str]) -> str:
        """What to do for a CSV read without `column`: name its SMILES column, or give it a header first."""
        if _molecule_in("", header) and not any("smiles" in cell.lower() for cell in header):
            return ("its first line is a row of molecules, not a header: add a header line that names its columns "
                    "(as smiles,name) and set data.source.column to the SMILES one")
        return f"set data.source.column to its SMILES column, one of {header}"

    def _check_column(self, first: str, header: list[str]) -> None:
        if self.column in header:
            return
        found = f"the header has {header}" if header else "the file is empty"
        separator = next((name for mark, name in (("\t", "tab"), (";", "semicolon")) if mark in first), None)
        if (len(header) > 1 or not separator) and (near := _near(self.column, header)):
            fix = f"fix the column name (did you mean {near!r}?)"
        elif header and (molecule := _molecule_in(first, header)):
            found = f"its first line is a molecule, {molecule[:60]!r}, so it has no header"
            fix = ("leave column out, which reads each line's first field (a name may follow)" if len(header) == 1
                   else "add a header line that names its columns (as smiles,name) and keep data.source.column")
        elif separator:
            fix = f"the file looks {separator}-separated; SMILES files are read as comma-separated: convert it"
        elif len(header) == 1:
            fix = "fix the column name, or leave column out for a file of one SMILES a line without a header"
        else:
            fix = "fix the column name"
        raise ValueError(f"data.source.column {self.column!r} is not a column of {self.file!r} ({found}); " + fix)

    def _check_sample(self, lines: list[str], header: list[str]) -> None:
        """Refuse a file none of whose sampled rows holds a SMILES where the data stage reads one, naming the
        field that does hold them where one does."""
        rows = [[cell.strip() for cell in row] for row in csv.reader(lines)] if self.column else [
            line.split() for line in lines]
        at = header.index(self.column) if self.column else 0
        if rows and all(len(row) <= at for row in rows):
            raise ValueError(f"data.source.file {self.file!r}: none of its rows has a cell under column "
                             f"{self.column!r} (cell {at + 1} of the header), so the data stage would read none: "
                             "are its rows separated by commas, as its header is? Convert the whole file")
        rows = [row for row in rows if len(row) > at and row[at]]
        if not rows or any(_reads_as_smiles(row[at]) for row in rows):
            return
        others = [i for i in range(max(map(len, rows))) if i != at and
                  all(len(row) > i and _reads_as_smiles(row[i]) for row in rows[:3])]
        if others and self.column:
            fix = f"column {header[others[0]]!r} holds them ({rows[0][others[0]][:60]!r}): set data.source.column"
        elif others:
            fix = (f"field {others[0] + 1} of each line holds them ({rows[0][others[0]][:60]!r}): put the SMILES "
                   "first (a name may follow), or convert the file to comma-separated with a header and set "
                   "data.source.column")
        else:
            fix = "check that the file holds SMILES (not InChI, names or another format)"
        examples = ", ".join(repr(row[at][:60]) for row in rows[:3])
        raise ValueError(f"data.source.file {self.file!r}: none of {len(rows)} molecules drawn from it "
                         f"({'column ' + repr(self.column) if self.column else 'the first field of each line'}) is a "
                         f"SMILES RDKit reads (the first: {examples}); {fix}")


def _reservoir(lines: Iterator[str], k: int, seed: int = 0) -> tuple[list[str], int]:
    """k of `lines` drawn uniformly (Li's algorithm L: it skips between draws, so a long file costs a count of its
    lines), and how many lines there were."""
    rng = random.Random(seed)
    sample = list(itertools.islice(lines, k))
    seen = len(sample)
    weight = math.exp(math.log(1 - rng.random()) / k)
    while seen >= k and weight < 1:
        skip = math.floor(math.log(1 - rng.random()) / math.log(1 - weight))
        skipped = sum(1 for _ in itertools.islice(lines, skip))
        seen += skipped
        if skipped < skip or (line := next(lines, None)) is None:
            break
        seen += 1
        sample[rng.randrange(k)] = line
        weight *= math.exp(math.log(1 - rng.random()) / k)
    return sample, seen


def _molecule_in(first: str, header: list[str]) -> str | None:
    """The first line's molecule, where it holds one: a CSV row's cell of three characters or more (columns are
    named C, N, NO or CN), or a plain line's first field."""
    cells = [cell.strip() for cell in header] if len(header) > 1 else first.split()[:1]
    return next((cell for cell in cells if (len(cell) > 2 or len(cells) == 1) and _reads_as_smiles(cell)), None)


def _near(name: str, header: list[str]) -> str | None:
    """The header's cell that `name` misspells: the same but for case and spaces, else the closest."""
    same = [cell for cell in header if cell.strip().lower() == name.strip().lower()]
    return same[0] if same else next(iter(difflib.get_close_matches(name, header, n=1)), None)


def _reads_as_smiles(text: str) -> bool:
    """Whether RDKit reads `text` as a molecule, and not as the radicals of BARE_ATOMS."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    return Chem.MolFromSmiles(text) is not None and not BARE_ATOMS.fullmatch(text)
