"""SpookyNet on a GPU in float32 against bf16 autocast, with and without its charge and spin embeddings.

Two parts, each through `runtime.forcefield_train.train_forcefield` (the train stage's own loop):
- states: 300 waters in three electronic states whose energies differ only by state (the set of
  tests/unit/test_charge_spin.py), SpookyNet 64 x 2 with `charge_spin`, energy-only MSE, 20 epochs, in
  32-true and bf16-mixed, eager and as one CUDA graph (`training.compile: cuda-graphs`). It shows that
  each combination runs and learns the states (predicting the mean scores about 2,890 meV).
- ethanol: 3,000 / 600 / 1,200 structures of a GFN2-xTB ethanol set drawn by each seed, SpookyNet
  64 x 3, L1 0.01 E + 0.99 F, AdamW 1e-3, batch 100, 15 epochs, CUDA graphs, 32-true against
  bf16-mixed: speed and test errors, for the force error within 1% of float32 that issue 7 asks of
  reduced precision.

  source benchmarks/device_setup.sh
  python3 benchmarks/spookynet_precision.py --data .bench/ethanol_xtb_12000.npz --out $OUT/spookynet_precision.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

KEYS = ("energy_mae_meV", "force_mae_meV_per_A", "train_structures_per_s", "peak_gpu_memory_mb")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="atoms store .npz of one molecule (chemspec.runtime.atoms.save_atoms)")
    p.add_argument("--out", default=".bench/spookynet_precision.json")
    p.add_argument("--seeds", default="0,1", help="seeds of the ethanol part, comma-separated")
    return p.parse_args(argv)


def states() -> dict:
    from chemspec.runtime.forcefield_train import train_forcefield
    from tests.unit.test_charge_spin import states_data

    train, val, test = states_data(300, 0), states_data(60, 1), states_data(60, 2)
    rows = {}
    for precision in ("32-true", "bf16-mixed"):
        for graphs in (False, True):
            metrics, _ = train_forcefield(
                "spookynet", 64, 2, 5.0, 16, train, val, test, {"learning_rate": 1e-2, "batch_size": 50}, epochs=20,
                loss={"kind": "mse", "energy": 1.0, "forces": 0.0}, energy_shift=0.0, seed=0, accelerator="gpu",
                precision=precision, cuda_graphs=graphs, charge_spin=True)
            rows[f"{precision} graphs={graphs}"] = {k: metrics.get(k) for k in KEYS}
            print("states", precision, graphs, rows[f"{precision} graphs={graphs}"], flush=True)
    return rows


def ethanol(path: str, seeds: list[int]) -> dict:
    from chemspec.runtime.atoms import load_atoms
    from chemspec.runtime.forcefield_train import train_forcefield

    data, rows = load_atoms(path), {}
    for seed in seeds:
        order = np.random.default_rng(seed).permutation(len(data))
        train, val, test = (data.subset(order[a:b]) for a, b in ((0, 3000), (3000, 3600), (3600, 4800)))
        for precision in ("32-true", "bf16-mixed"):
            start = time.perf_counter()
            metrics, _ = train_forcefield(
                "spookynet", 64, 3, 5.0, 16, train, val, test, {"learning_rate": 1e-3, "batch_size": 100}, epochs=15,
                loss={"kind": "l1", "energy": 0.01, "forces": 0.99}, energy_shift="per_element", seed=seed,
                accelerator="gpu", precision=precision, cuda_graphs=True)
            row = {k: metrics.get(k) for k in KEYS} | {"wall_s": round(time.perf_counter() - start, 1)}
            rows[f"seed{seed} {precision}"] = row
            print("ethanol", seed, precision, row, flush=True)
    return rows


def main(argv=None) -> None:
    args = parse(argv)
    result = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "states": states(),
              "ethanol": ethanol(args.data, [int(s) for s in args.seeds.split(",")])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
