"""Reading a compressed extended XYZ data file: chemspec's loader against ASE reading the same file itself.

Writes --frames water frames (energies and forces in the header and per-atom arrays) as plain text and
gzipped, then times, each --repeats times in one process:
- ASE's `ase.io.read(path, index=":")` on the plain and on the gzipped file (the peer: what the data
  stage called until 2026-12-06);
- `load_file`, the data stage's reader with its checks, on both files;
- `check_sample`, what validate and compile read of the gzipped file (its first frame);
- `count_structures` with its states, validate's scan of every frame header and comment line (the
  charge and multiplicity they give), on the plain file;
- `AtomsData.repeats`, the data stage's search for exact repeats, on the loaded frames.
Medians in seconds and the ratios are printed as JSON.

  python benchmarks/extxyz_read.py --frames 4000 --repeats 3
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import ase.io

from chemspec.runtime.atoms_files import check_sample, count_structures, load_file

HEADER = 'Properties=species:S:1:pos:R:3:forces:R:3 energy=-14.2 pbc="F F F"'


def frames(count: int) -> str:
    rows = (("O", 0.0, 0.1), ("H", 0.96, 0.0), ("H", -0.96, 0.0))
    return "".join(f"3\n{HEADER}\n" + "".join(f"{z} {x} {y + i * 1e-4:.4f} 0 0.5 0 0\n" for z, x, y in rows)
                   for i in range(count))


def median_s(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plain, packed = Path(tmp) / "water.xyz", Path(tmp) / "water.xyz.gz"
        plain.write_text(frames(args.frames))
        packed.write_bytes(gzip.compress(plain.read_bytes(), mtime=0))
        result = {"frames": args.frames, "repeats": args.repeats,
                  "mb_plain": plain.stat().st_size / 1e6, "mb_gzipped": packed.stat().st_size / 1e6}
        for name, path in (("plain", plain), ("gzipped", packed)):
            result[f"ase_read_{name}_s"] = median_s(lambda: ase.io.read(path, index=":", format="extxyz"),
                                                    args.repeats)
            result[f"load_file_{name}_s"] = median_s(lambda: load_file(path, "extxyz", "eV", "Angstrom"),
                                                     args.repeats)
        result["check_sample_gzipped_s"] = median_s(lambda: check_sample(packed, "extxyz"), args.repeats)
        result["count_structures_states_plain_s"] = median_s(
            lambda: count_structures(plain, "extxyz", states=Counter()), args.repeats)
        data = load_file(plain, "extxyz", "eV", "Angstrom")[0].stored()
        result["repeats_s"] = median_s(data.repeats, args.repeats)
    result["gzipped_ase_over_load_file"] = result["ase_read_gzipped_s"] / result["load_file_gzipped_s"]
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
