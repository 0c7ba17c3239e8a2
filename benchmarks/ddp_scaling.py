"""One ChemGPT cell on 1 GPU and on N GPUs (Lightning DDP through `training.devices`), as `chemspec run`
trains it: the same spec but for `training.devices`, the same MOSES rows, batch size per rank.

For each device count the script compiles the spec into a folder of its own and runs the stages data,
split, tpe, select and train with `python -m chemspec run …` (Lightning's DDP launcher re-runs that
command line for the other ranks). The data and split of the first folder are copied into the others,
so every run trains on the same bytes. Two rates come from metrics.json: train_tokens_per_s, the steady
state (from the end of the first tenth of the steps to the last, summed over ranks; the speedup is its
ratio, N GPUs over 1), and tokens_seen over wall_time_s, the whole cell as a user waits for it (DDP
launch of the other ranks and validation included).

On the GPU machine (2 cards; no molsets there: carry MOSES's train.csv.gz as for chemgpt_throughput.py):
  source benchmarks/device_setup.sh
  python3 benchmarks/ddp_scaling.py --molecules 320000 --out $OUT/ddp_scaling.json
  python3 benchmarks/ddp_scaling.py --molecules 160000 --packing 256 --compile cuda-graphs --out $OUT/ddp_packed.json
"""
from __future__ import annotations

import argparse, json, platform, shutil, sys, tempfile, time
from importlib.metadata import version
from pathlib import Path

import yaml

from checkout_cli import SRC, chemspec, must

STUDY = "ddp"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--molecules", type=int, default=320_000, help="MOSES molecules read; train on all but val/test")
    a("--held-out", type=int, default=2000, help="validation and test molecules each (%(default)s)")
    a("--size", default="16x1024x16", help="layers x hidden x heads (%(default)s: 201M non-embedding)")
    a("--batch", type=int, default=256, help="molecules per step per rank (%(default)s)")
    a("--lr", type=float, default=3e-4, help="AdamW learning rate (%(default)s)")
    a("--devices", default="1,2", help="device counts to compare, the first one the baseline (%(default)s)")
    a("--accelerator", default="gpu", choices=("gpu", "cpu"), help="cpu: a smoke test with gloo")
    a("--workers", type=int, default=4, help="loader workers per rank (%(default)s)")
    a("--packing", type=int, help="training.packing: positions per packed row (default: padded batches)")
    a("--compile", default="false", choices=("false", "true", "cuda-graphs"), help="training.compile (%(default)s)")
    a("--out", default="benchmarks/results/ddp_scaling.json")
    return p.parse_args(argv)


def spec(args, devices: int) -> dict:
    layers, hidden, heads = (int(v) for v in args.size.split("x"))
    train = args.molecules - 2 * args.held_out
    gpu = args.accelerator == "gpu"
    return {
        "study": STUDY, "seed": 0,
        "data": {"kind": "smiles", "source": {"package": "moses", "max_molecules": args.molecules},
                 "representation": "selfies", "sizes": [train], "validation": args.held_out, "test": args.held_out},
        "model": {"family": "chemgpt", "sizes": {"m": {"n_layer": layers, "n_embd": hidden, "n_head": heads}}},
        "training": {"max_epochs": 1, "precision": "bf16-mixed" if gpu else "32-true", "accelerator": args.accelerator,
                     "devices": devices, "num_workers": args.workers,
                     "scheduler": {"name": "constant", "warmup_steps": 20},
                     "compile": {"false": False, "true": True}.get(args.compile, args.compile),
                     **({"packing": args.packing} if args.packing else {})},
        "hpo": {"grid": {"learning_rate": [args.lr], "batch_size": [args.batch]},
                "tpe": {"budget_fraction": 0.1, "estimator": "tse", "keep": 1, "model_size": "m", "data_size": train}},
    }


def step(folder: Path, *argv: str) -> None:
    print(must(chemspec(folder, *argv)).stdout.strip(), flush=True)


def run(args, devices: int, root: Path, first: Path | None) -> dict:
    folder = root / f"devices-{devices}"
    folder.mkdir()
    (folder / "study.yaml").write_text(yaml.safe_dump(spec(args, devices), sort_keys=False))
    step(folder, "compile", "study.yaml")
    if first is None:
        for stage in ("data", "split"):
            step(folder, "run", stage)
    else:
        shutil.copytree(first / "data", folder / "data")
    from chemspec import api

    cells = api.load_cells(folder / "params.yaml")
    (train,) = cells.train
    start = time.perf_counter()
    for stage, cell in (*(("tpe", key) for key in cells.tpe), ("select", None), ("train", train)):
        step(folder, "run", stage, *(["--cell", cell] if cell else []))
    elapsed = time.perf_counter() - start
    metrics = json.loads((folder / cells.train[train].out_dir / "metrics.json").read_text())
    kept = ("device", "steps", "tokens_seen", "wall_time_s", "mfu_datasheet", "mfu_measured", "peak_gpu_memory_mb",
            "matmul_bf16_tflops", "val_loss", "test_loss", "params")
    return {"devices": devices, **{k: metrics.get(k) for k in kept}, "tokens_per_s": metrics["train_tokens_per_s"],
            "cell_tokens_per_s": metrics["tokens_seen"] / metrics["wall_time_s"], "tpe_select_train_s": elapsed}


def ratios(runs: list[dict], key: str) -> dict[str, float | None]:
    """Each run's `key` over the first run's; None where either has none (a cell that stopped early)."""
    base = runs[0][key]
    return {str(r["devices"]): r[key] / base if r[key] and base else None for r in runs}


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"x{value:.2f}"


def main(argv=None) -> None:
    args = parse(argv)
    counts = [int(v) for v in args.devices.split(",")]
    sys.path.insert(0, str(SRC))
    result = {"python": platform.python_version(), "torch": version("torch"), "lightning": version("lightning"),
              "command": " ".join(sys.argv), "settings": vars(args), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        first = None
        for devices in counts:
            entry = run(args, devices, Path(tmp), first)
            first = first or Path(tmp) / f"devices-{devices}"
            result["runs"].append(entry)
            result["speedup"], result["cell_speedup"] = (ratios(result["runs"], key)
                                                         for key in ("tokens_per_s", "cell_tokens_per_s"))
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
            steady = "n/a" if entry["tokens_per_s"] is None else f"{entry['tokens_per_s']:,.0f}"
            print(f"{entry['device']}: {steady} tokens/s steady ({_times(result['speedup'][str(devices)])}), "
                  f"{entry['cell_tokens_per_s']:,.0f} over the cell ({_times(result['cell_speedup'][str(devices)])}), "
                  f"{entry['steps']} steps, val loss {entry['val_loss']}", flush=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
