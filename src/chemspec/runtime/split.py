"""The split stage: one seeded permutation; validation and test first, then nested training prefixes.

Because every training subset is a prefix of the same permuted pool, the 1k subset is inside the
10k subset, and adding a larger size later leaves the files of the smaller sizes byte-identical
(so DVC does not retrain them).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from chemspec.compiler.cells import SplitCell
from chemspec.errors import RunError
from chemspec.runtime.io import read_json, sha256_file, staged, write_bytes, write_json
from chemspec.runtime.molecules import MAX_LENGTH, mostly_too_long


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
        longer = (f"; most of the molecules dropped were longer than max_length, so raising {MAX_LENGTH} keeps them"
                  if isinstance(info.get("counts"), dict) and mostly_too_long(info["counts"]) else "")
        raise RunError(f"data.sizes: {needed} {noun} needed (largest size {cell.sizes[-1]} + validation "
                       f"{cell.validation} + test {cell.test}) but only {n} are valid after cleaning "
                       f"(see {cell.data_dir}/data.json); lower data.sizes or read more {noun}{longer}")
    order = np.random.default_rng(cell.seed).permutation(n)
    with staged(cell.out_dir) as out:  # the row files and split.json replace the old ones together
        hashes = {"val.npy": _save(out / "val.npy", order[: cell.validation]),
                  "test.npy": _save(out / "test.npy", order[cell.validation: cell.validation + cell.test])}
        pool = order[cell.validation + cell.test:]
        for size in cell.sizes:
            hashes[f"train-{size}.npy"] = _save(out / f"train-{size}.npy", pool[:size])
        info = {"seed": cell.seed, "molecules": n, "validation": cell.validation, "test": cell.test,
                "sizes": cell.sizes, "sha256": hashes}
        write_json(out / "split.json", info)
    return info
