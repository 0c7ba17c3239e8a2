"""SpookyNet's energy error after a short run, with the reference energies fitted on E and on E − ZBL.

The untrained SpookyNet already gives each structure its ZBL repulsion (about 28 eV for ethanol). The
train stage fits the per-element reference energies on the training energies less that term
(`runtime.forcefield_train.prior_energies`); before, it fitted them on the energies themselves, and the
network had to learn to cancel the offset. Both through `train_forcefield` (the train stage's loop),
same seed, data and budget; on the CPU. Then what taking the term off costs: `prior_energies` over the
training frames repeated `--copies` times, against building their neighbour lists.

  python3 benchmarks/spookynet_zbl_reference.py --xyz md17_ethanol.xyz --units kcal/mol
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src")]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--xyz", required=True, help="extended XYZ file of one molecule's frames (energy, forces)")
    p.add_argument("--units", default="eV", help="the file's energy unit (chemspec's names: eV, kcal/mol, ...)")
    p.add_argument("--frames", type=int, nargs=3, default=[200, 50, 50], metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--copies", type=int, default=500, help="copies of the training frames timed for the cost")
    p.add_argument("--out", default=".bench/spookynet_zbl_reference.json")
    return p.parse_args(argv)


def main(argv=None) -> None:
    from chemspec.runtime import forcefield_train
    from chemspec.runtime.atoms_files import load_file

    args = parse(argv)
    data, _ = load_file(Path(args.xyz), "extxyz", args.units, "Angstrom")
    n_train, n_val, n_test = args.frames
    splits = [data.subset(range(start, start + n)) for start, n in
              ((0, n_train), (n_train, n_val), (n_train + n_val, n_test))]
    torch.set_num_threads(1)
    rows, with_prior = {}, forcefield_train.prior_energies
    for name, prior in (("fitted on E - ZBL", with_prior), ("fitted on E", lambda *_, **__: None)):
        forcefield_train.prior_energies = prior
        metrics, _ = forcefield_train.train_forcefield(
            "spookynet", 16, 1, 5.0, 8, *splits, {"learning_rate": 1e-3, "batch_size": 10}, args.epochs,
            energy_shift="per_element")
        rows[name] = {k: metrics[k] for k in ("energy_mae_meV", "force_mae_meV_per_A")}
        print(name, rows[name], flush=True)
    forcefield_train.prior_energies = with_prior
    rows["cost"] = cost(splits[0].subset(list(range(n_train)) * args.copies))
    print("cost", rows["cost"], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1) + "\n")


def cost(data) -> dict:
    from chemspec.runtime.ff_models import FAMILIES
    from chemspec.runtime.forcefield_train import prior_energies
    from chemspec.runtime.neighbours import ForceFieldDataset

    start = time.perf_counter()
    dataset = ForceFieldDataset(data, 5.0)
    built = time.perf_counter()
    prior_energies(FAMILIES["spookynet"](64, 3, 5.0, 16), dataset)
    return {"structures": len(data), "neighbour_lists_s": round(built - start, 2),
            "prior_energies_s": round(time.perf_counter() - built, 2)}


if __name__ == "__main__":
    main()
