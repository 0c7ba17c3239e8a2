"""The generated MD sets that the PaiNN and SpookyNet benchmarks read as .bench/*.npz.

Each is `runtime.md.generate_md` (RDKit conformer, ASE Langevin MD, GFN2-xTB labels through tblite) at
500 K, 0.5 fs steps, a frame every 10 steps, seed 0, saved as the data stage saves it:

- quickstart-nff: 660 structures of water, ethanol and methanol after 200 equilibration steps (as
  specs/quickstart-nff.yaml); `painn_throughput.py`'s default --data, .bench/atoms.npz;
- ethanol: 12,000 ethanol frames after 1,000 steps (.bench/ethanol_xtb_12000.npz), about 100 s on 2 cores;
- md17mols: 12,000 frames, 1,500 of each of eight MD17 molecules of 9 to 21 atoms, after 1,000 steps
  (.bench/md17mols_xtb_12000.npz), about 10 min on 2 cores.

The runs in BENCHMARKS.md used sets made this way by the code of their day; their JSON files record each
set's sha256 under data.sha256. The store has gained fields since, so a set made now has other bytes.

  python benchmarks/md_sets.py --set ethanol --out .bench/ethanol_xtb_12000.npz
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SETS = {
    "quickstart-nff": (["water", "ethanol", "methanol"], 660, 200),
    "ethanol": (["ethanol"], 12000, 1000),
    "md17mols": (["ethanol", "malonaldehyde", "benzene", "uracil", "toluene", "naphthalene", "salicylic_acid",
                  "aspirin"], 12000, 1000),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=sorted(SETS), required=True)
    parser.add_argument("--frames", type=int, default=None, help="fewer frames than the set's, for a quick look")
    parser.add_argument("--out", type=Path, required=True, help="the .npz to write")
    args = parser.parse_args(argv)
    from chemspec.runtime.atoms import save_atoms
    from chemspec.runtime.md import generate_md
    from chemspec.specs.atoms_source import MOLECULES

    names, frames, equilibration = SETS[args.set]
    molecules = [(name, MOLECULES[name]) for name in names]
    start = time.perf_counter()
    data, counts = generate_md(molecules, args.frames or frames, temperature_K=500.0, stride=10, timestep_fs=0.5,
                               equilibration_steps=equilibration, seed=0, progress=sys.stderr.isatty())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_atoms(args.out, data)
    print(json.dumps({"set": args.set, "path": str(args.out), "structures": counts["kept"],
                      "sha256": hashlib.sha256(args.out.read_bytes()).hexdigest(),
                      "seconds": round(time.perf_counter() - start, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
