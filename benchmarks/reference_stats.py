"""What the reference stage saves each sample cell: the test set's ChemNet statistics and properties,
computed once per study, against the per-cell metrics that remain.

    python benchmarks/reference_stats.py --molecules 20000 --samples 1000 --out benchmarks/results/x.json

Reference molecules are the first --molecules rows of MOSES's test set (the molsets wheel) or of
--smiles; the "samples" are --samples rows of MOSES's training set, canonicalised, standing in for a
cell's valid samples. `per_cell_before_s` is what each sample cell spent before the reference stage
existed (the reference's statistics and properties, then the metrics); `per_cell_after_s` is the
metrics alone against the stored reference.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import sys
import time
from importlib.metadata import distribution
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def rows(path: Path, count: int, skip: int = 0) -> list[str]:
    with gzip.open(path, "rt", newline="") if path.suffix == ".gz" else open(path, newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        return [row[0] for _, row in zip(range(count + skip), reader)][skip:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smiles", type=Path, default=None, help="CSV(.gz) of reference SMILES; default MOSES test")
    parser.add_argument("--molecules", type=int, default=20000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--device", default=None, help="cpu or cuda; default cuda when there is one")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import numpy as np
    import torch

    from chemspec.runtime.generation import _chemnet_statistics, canonical, evaluate, properties, reference

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    moses = distribution("molsets").locate_file("moses/dataset/data")
    test = [canonical(s)[0] for s in rows(args.smiles or Path(moses) / "test.csv.gz", args.molecules)]
    samples = [canonical(s)[0] for s in rows(Path(moses) / "train.csv.gz", args.samples)]
    _chemnet_statistics(samples[:64], device)  # load ChemNet and warm the device up once

    start = time.perf_counter()
    _chemnet_statistics(test, device)
    chemnet_s = time.perf_counter() - start
    start = time.perf_counter()
    properties(test)
    properties_s = time.perf_counter() - start
    start = time.perf_counter()
    ref = reference(test, device)
    reference_s = time.perf_counter() - start
    start = time.perf_counter()
    after = evaluate(samples, set(), ref, fcd_molecules=len(samples), device=device)
    metrics_s = time.perf_counter() - start
    result = {"device": torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({os.cpu_count()} cores)",
              "machine": platform.machine(), "torch": torch.__version__, "command": " ".join(sys.argv),
              "reference_molecules": len(test), "samples": len(samples), "chemnet_s": round(chemnet_s, 2),
              "properties_s": round(properties_s, 2), "reference_s": round(reference_s, 2),
              "per_cell_before_s": round(reference_s + metrics_s, 2), "per_cell_after_s": round(metrics_s, 2),
              "fcd": after["fcd"], "finite": bool(np.isfinite(ref.chemnet_cov).all())}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
