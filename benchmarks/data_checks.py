"""What the data checks that read every structure cost: the data stage's unit plausibility check
(runtime/plausible.py, as a study that leaves the energy unit to the format runs it) and force-work check
(runtime/force_work.py) and note on frames in time order (runtime/atoms_stage.order_notes), and the split stage's
element and composition check (runtime/split.py), on --structures random molecules of
5-29 atoms of H, C, N and O (ANI-1x's elements), stored as the data stage stores them. Structures come in
runs of ten frames of one molecule a small step apart, so that the force-work check finds steps to weigh.
Medians of --repeats runs in seconds, as JSON:

  python benchmarks/data_checks.py --structures 300000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from extxyz_read import median_s  # this folder: the script's own, first on sys.path

from chemspec.runtime.atoms import AtomsData, save_atoms
from chemspec.runtime.atoms_stage import order_notes
from chemspec.runtime.force_work import work_ratio
from chemspec.runtime.plausible import implausible_units
from chemspec.runtime.split import check_elements

RUN = 10


def molecules(count: int, seed: int = 0) -> AtomsData:
    """`count` structures in runs of RUN frames of one random molecule, each frame 0.01 Å from the run's first."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 30, -(-count // RUN))
    numbers, positions = [], []
    for n in sizes:
        numbers.append(np.tile(rng.choice([1, 6, 7, 8], n), RUN))
        positions.append((rng.normal(scale=2.0, size=(n, 3)) + rng.normal(scale=0.01, size=(RUN, n, 3))).reshape(-1, 3))
    offsets = np.concatenate([[0], np.cumsum(np.repeat(sizes, RUN)[:count])])
    atoms = int(offsets[-1])
    return AtomsData(np.concatenate(numbers)[:atoms], np.concatenate(positions)[:atoms], rng.normal(size=(atoms, 3)),
                     rng.normal(size=count), offsets)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--structures", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="Write the JSON here too.")
    args = parser.parse_args()
    data = molecules(args.structures)
    order = np.random.default_rng(1).permutation(len(data))
    smallest, held = order[: len(data) // 10], {"validation": order[-len(data) // 10:]}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "atoms.npz"
        save_atoms(path, data)
        result = {
            "command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d"),
            "structures": len(data), "atoms": int(len(data.numbers)), "machine": platform.machine(),
            "plausible_units_s": median_s(lambda: implausible_units(data, "eV", totals=True), args.repeats),
            "force_work_s": median_s(lambda: work_ratio(data), args.repeats),
            "order_notes_s": median_s(lambda: order_notes(data, "atoms.npz"), args.repeats),
            "split_elements_and_compositions_s": median_s(lambda: check_elements(path, smallest, held),
                                                          args.repeats),
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
