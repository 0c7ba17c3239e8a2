"""How long DVC takes to decide that nothing needs to run, on a compiled study of ~200 train cells.

Builds a real project in a temporary directory: `chemspec compile` of a grid of tiny ChemGPT cells,
every stage run for real (in one process, via benchmarks/run_stages.py's loop, to save ~5 s of
interpreter start-up per cell), `dvc commit` to record the outputs in dvc.lock, then times
`dvc repro` (which must run nothing) and `dvc status`, each `--repeats` times.

    python benchmarks/noop_repro.py --models 10 --data-sizes 10 --keep 2 [--split-above N]

`--split-above` overrides the compiler's threshold for one dvc.yaml per model size (a large value
keeps every stage in the root dvc.yaml).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def spec(models: int, data_sizes: int, keep: int) -> dict:
    sizes = [100 * (i + 1) for i in range(data_sizes)]
    return {
        "study": "noop",
        "data": {"kind": "smiles", "source": {"package": "moses", "max_molecules": sizes[-1] + 400},
                 "sizes": sizes, "validation": 200, "test": 200},
        "model": {"family": "chemgpt", "sizes": {f"m{i}": {"n_layer": 1, "n_embd": 8 * (i + 1), "n_head": 2,
                                                           "max_length": 64} for i in range(models)}},
        "training": {"max_epochs": 1, "accelerator": "cpu"},
        "hpo": {"grid": {"learning_rate": [1.0e-3, 3.0e-3][:max(keep, 1)], "batch_size": [64]},
                "tpe": {"budget_fraction": 1.0, "keep": keep, "data_size": sizes[0]}},
    }


def sh(*args: str, cwd: Path) -> str:
    done = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


def timed(repeats: int, *args: str, cwd: Path) -> tuple[list[float], str]:
    times, out = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        out = sh(*args, cwd=cwd)
        times.append(round(time.perf_counter() - start, 2))
    return times, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--data-sizes", type=int, default=10)
    parser.add_argument("--keep", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--split-above", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--keep-project", action="store_true", help="keep the temporary project (about 70 MB)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="chemspec-noop-"))
    try:
        result = measure(args, root)
    finally:
        if not args.keep_project:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def measure(args: argparse.Namespace, root: Path) -> dict:
    sh("git", "init", "-q", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    (root / "study.yaml").write_text(yaml.safe_dump(spec(args.models, args.data_sizes, args.keep)))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        import importlib

        from chemspec import api

        if args.split_above is not None:
            importlib.import_module("chemspec.compiler.render").SPLIT_ABOVE = args.split_above
        api.compile("study.yaml")

        cells = api.load_cells("params.yaml")
        start = time.perf_counter()
        for stage in ("data", "split", "tpe", "select", "train", "fit", "archive"):
            for key in sorted(getattr(cells, stage)) if isinstance(getattr(cells, stage), dict) else [None]:
                api.run(stage, "params.yaml", key)
        build_s = time.perf_counter() - start
    finally:
        os.chdir(cwd)
    start = time.perf_counter()
    sh("dvc", "commit", "-f", "-q", cwd=root)
    commit_s = time.perf_counter() - start
    repro, out = timed(args.repeats, "dvc", "repro", cwd=root)
    if "Running stage" in out:
        sys.exit(f"dvc repro ran stages on a finished project:\n{out}")
    status, _ = timed(args.repeats, "dvc", "status", cwd=root)
    result = {"train_cells": len(cells.train), "tpe_cells": len(cells.tpe),
              "dvc_yaml_files": len(list(root.glob("**/dvc.yaml"))),
              "params_bytes": (root / "params.yaml").stat().st_size, "dvc_commit_s": round(commit_s, 1),
              "noop_repro_s": repro, "noop_repro_median_s": statistics.median(repro),
              "status_s": status, "status_median_s": statistics.median(status),
              "stages_built_in_s": round(build_s, 1), "cpus": os.cpu_count()}
    return {**result, "project": str(root)} if args.keep_project else result


if __name__ == "__main__":
    sys.exit(main())
