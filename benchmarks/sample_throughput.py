"""Time the sample stage's sampler and metrics on a trained ChemGPT cell: 10k molecules by default.

    python benchmarks/sample_throughput.py --model results/<study>/train/<cell>/model \
        --reference data/<study>/molecules.csv --samples 10000 --batch-size 2000

The model directory is a cell's `save_pretrained` output (model + tokenizer), loaded with
`from_pretrained` exactly as the stage does; `--reference` is a CSV whose first column is SMILES
(the held-out molecules for FCD, novelty is measured against the same file here).
`reference_s` is the reference stage's work (ChemNet statistics and properties of the reference set),
done once per study; `metrics_s` is what each sample cell adds on top of its sampling.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--reference-count", type=int, default=10000)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import torch

    from chemspec.runtime.chemgpt import non_embedding_parameters
    from chemspec.runtime.generation import evaluate, reference
    from chemspec.runtime.sample import load_cell, sample

    device = "cuda" if torch.cuda.is_available() else "cpu"
    opener = gzip.open if args.reference.suffix == ".gz" else open
    with opener(args.reference, "rt", newline="") as handle:
        rows = csv.reader(handle)
        next(rows)
        molecules = [row[0] for _, row in zip(range(args.reference_count), rows)]
    start = time.perf_counter()
    model, tokenizer = load_cell(args.model, device)
    load_s = time.perf_counter() - start
    sample(model, tokenizer, min(args.batch_size, 100), batch_size=min(args.batch_size, 100))  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    drawn, tokens = sample(model, tokenizer, args.samples, batch_size=args.batch_size, seed=0)
    sampling_s = time.perf_counter() - start
    start = time.perf_counter()
    ref = reference(molecules, device)
    reference_s = time.perf_counter() - start
    start = time.perf_counter()
    metrics = evaluate([r["smiles"] for r in drawn], set(molecules), ref, device=device)
    metrics_s = time.perf_counter() - start
    result = {"device": torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({os.cpu_count()} cores)",
              "torch": torch.__version__, "params": non_embedding_parameters(model), "samples": args.samples,
              "batch_size": args.batch_size, "load_s": round(load_s, 2), "sampling_s": round(sampling_s, 2),
              "molecules_per_s": round(args.samples / sampling_s, 1), "tokens_per_s": round(tokens / sampling_s),
              "reference_molecules": len(molecules), "reference_s": round(reference_s, 2),
              "metrics_s": round(metrics_s, 2),
              "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
              "metrics": {k: metrics[k] for k in ("validity", "trivial", "uniqueness", "internal_diversity", "fcd")}}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
