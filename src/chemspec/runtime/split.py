"""The split stage: one seeded permutation; validation and test first, then nested training prefixes.

Because every training subset is a prefix of the same permuted pool, the 1k subset is inside the
10k subset, and adding a larger size later leaves the files of the smaller sizes byte-identical
(so DVC does not retrain them).
"""

from __future__ import annotations

import io
import itertools
import sys
from pathlib import Path

import numpy as np

from chemspec.compiler.cells import SplitCell
from chemspec.errors import InputError, RunError
from chemspec.runtime.io import (read_array, read_json, reading, restore_hint, sha256_file, staged, write_bytes,
                                 write_json)
from chemspec.runtime.molecules import MAX_LENGTH, dropped_text, mostly_too_long
from chemspec.words import count


def _save(path: Path, array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, array.astype(np.int64))
    write_bytes(path, buffer.getvalue())
    return sha256_file(path)


def run_split(cell: SplitCell) -> dict:
    info = read_json(Path(cell.data_dir) / "data.json", ("count",))
    n, noun = info["count"], "structures" if info.get("kind") == "atoms" else "molecules"
    needed = cell.validation + cell.test + cell.sizes[-1]
    if needed > n:
        counts = info["counts"] if isinstance(info.get("counts"), dict) else {}
        longer = (f"; most of the molecules dropped were longer than max_length, so raising {MAX_LENGTH} keeps them"
                  if mostly_too_long(counts) else "")
        dropped = f" of the {counts['read']:,} read (left out: {text})" if (
            text := dropped_text(counts)) and isinstance(counts.get("read"), int) else ""
        raise RunError(f"data.sizes: {needed:,} {noun} needed (largest size {cell.sizes[-1]:,} + validation "
                       f"{cell.validation:,} + test {cell.test:,}) but only {n:,}{dropped} are valid after cleaning "
                       f"(see {cell.data_dir}/data.json); lower data.sizes or read more {noun}{longer}")
    order = np.random.default_rng(cell.seed).permutation(n)
    held = {"validation": order[: cell.validation], "test": order[cell.validation: cell.validation + cell.test]}
    pool = order[cell.validation + cell.test:]
    store = Path(cell.data_dir) / "atoms.npz"  # not a dependency: where only data.json was fetched, no check
    if info.get("kind") == "atoms" and store.is_file():
        check_elements(store, pool[: cell.sizes[0]], held, cell.energies)
    with staged(cell.out_dir) as out:  # the row files and split.json replace the old ones together
        hashes = {"val.npy": _save(out / "val.npy", held["validation"]),
                  "test.npy": _save(out / "test.npy", held["test"])}
        for size in cell.sizes:
            hashes[f"train-{size}.npy"] = _save(out / f"train-{size}.npy", pool[:size])
        info = {"seed": cell.seed, "molecules": n, "validation": cell.validation, "test": cell.test,
                "sizes": cell.sizes, "sha256": hashes}
        write_json(out / "split.json", info)
    return info


def check_elements(path: Path, smallest: np.ndarray, held: dict[str, np.ndarray], energies: bool = True) -> None:
    """A RunError for elements of the validation or test structures that the smallest training set lacks:
    its cells would fit them no reference energy, and train and TPE cells refuse them, after the TPE runs.
    Also where its compositions leave the reference energy of a held-out composition undetermined (one that
    is no linear combination of them): the fit's minimum-norm solution then puts it off by any amount. That
    is only a note where the loss scores no energies (`energies` false)."""
    from ase.data import chemical_symbols

    from chemspec.runtime.atoms import element_counts

    with reading(path, "a readable .npz archive"), np.load(path, allow_pickle=False) as stored:
        numbers, offsets = stored["numbers"], stored["offsets"]
    elements = np.unique(numbers)
    counts = element_counts(numbers, offsets, elements)
    trained = counts[smallest].sum(axis=0) > 0
    for name, rows in held.items():
        if missing := [int(z) for z, unseen in zip(elements, (counts[rows].sum(axis=0) > 0) & ~trained) if unseen]:
            raise RunError(f"data.sizes: the smallest training set ({count(len(smallest), 'structure')}) holds no "
                           f"{', '.join(chemical_symbols[z] for z in missing)}, which the {name} split holds: a model "
                           "trained on it would never see them, and no reference energy is fitted for them; raise "
                           "the smallest of data.sizes, try another seed, or drop those structures from the data")
    _, values, vectors = np.linalg.svd(np.unique(counts[smallest], axis=0), full_matrices=False)
    basis = vectors[values > values.max() * 1e-9]  # the row space of the smallest training set's compositions
    for name, rows in held.items():
        compositions = np.unique(counts[rows], axis=0)
        off = np.abs(compositions - compositions @ basis.T @ basis).max(axis=1) > 1e-6
        if off.any():
            from ase.formula import Formula

            first = compositions[off][0]
            formula = Formula.from_dict({chemical_symbols[z]: int(n) for z, n in zip(elements, first) if n})
            problem = (f"the smallest training set's compositions ({count(len(smallest), 'structure')}) fix only "
                       f"{count(len(basis), 'combination')} of the {len(elements)} elements' reference energies: the "
                       f"{name} split's {formula.format('hill')} is none of them, so its reference "
                       "energy, and every energy error on it, would be off by an arbitrary amount")
            if not energies:
                print(f"note: data.sizes: {problem}; the loss scores forces only, which it does not move",
                      file=sys.stderr)
                return
            raise RunError(f"data.sizes: {problem}; raise the smallest of data.sizes, or try another seed")


def _problem(rows: np.ndarray, count: int) -> str | None:
    if rows.ndim != 1 or rows.dtype.kind not in "iu":
        return f"holds {rows.dtype} values of shape {rows.shape}, not a list of row numbers"
    if rows.size and (rows.min() < 0 or rows.max() >= count):
        return f"names rows {rows.min()}..{rows.max()}, but the data stage's table has {count} (0..{count - 1})"
    values, counts = np.unique(rows, return_counts=True)
    if (repeated := values[counts > 1]).size:
        return f"names {repeated.size} rows more than once (row {repeated[0]}, ...)"
    return None


def read_rows(split_dir: str | Path, names: tuple[str, ...], count: int) -> dict[str, np.ndarray]:
    """The row files `<name>.npy` of a split folder, checked against a data table of `count` rows: each a
    list of distinct row numbers, no two sharing a row (the nested training sets aside). InputError naming the
    file otherwise (an edited file, or one from another data set)."""
    rows = {}
    for name in names:
        path = Path(split_dir) / f"{name}.npy"
        rows[name] = read_array(path)
        problem = _problem(rows[name], count)
        if problem:
            raise InputError(f"{path} {problem}", restore_hint(path))
    for first, second in itertools.combinations(names, 2):
        shared = np.intersect1d(rows[first], rows[second], assume_unique=True)
        if shared.size and not (first.startswith("train-") and second.startswith("train-")):
            path = Path(split_dir) / f"{first}.npy"
            raise InputError(f"{path} and {second}.npy share {shared.size} rows (row {shared[0]}, ...): a model "
                             "would be scored on what it trained on", restore_hint(path))
    return rows
