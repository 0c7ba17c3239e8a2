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
"""
from __future__ import annotations

import argparse, json, os, platform, shutil, subprocess, sys, tempfile, time
from pathlib import Path

import yaml

SRC = Path(__file__).resolve().parents[1] / "src"
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
                     "scheduler": {"name": "constant", "warmup_steps": 20}},
        "hpo": {"grid": {"learning_rate": [args.lr], "batch_size": [args.batch]},
                "tpe": {"budget_fraction": 0.1, "estimator": "tse", "keep": 1, "model_size": "m", "data_size": train}},
        "fit": {"laws": ["power"]},
    }


def chemspec(folder: Path, *argv: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "chemspec", *argv], cwd=folder, env=env, text=True,
                          capture_output=True)
    if done.returncode:
        sys.exit(f"chemspec {' '.join(argv)} failed in {folder}:\n{done.stderr[-4000:]}")
    print(done.stdout.strip(), flush=True)


def run(args, devices: int, root: Path, first: Path | None) -> dict:
    folder = root / f"devices-{devices}"
    folder.mkdir()
    (folder / "study.yaml").write_text(yaml.safe_dump(spec(args, devices), sort_keys=False))
    chemspec(folder, "compile", "study.yaml")
    if first is None:
        for stage in ("data", "split"):
            chemspec(folder, "run", stage)
    else:
        shutil.copytree(first / "data", folder / "data")
    from chemspec import api

    cells = api.load_cells(folder / "params.yaml")
    (tpe,), (train,) = cells.tpe, cells.train
    start = time.perf_counter()
    for stage, cell in (("tpe", tpe), ("select", None), ("train", train)):
        chemspec(folder, "run", stage, *(["--cell", cell] if cell else []))
    elapsed = time.perf_counter() - start
    metrics = json.loads((folder / cells.train[train].out_dir / "metrics.json").read_text())
    return {"devices": devices, "device": metrics["device"], "steps": metrics["steps"],
            "tokens_seen": metrics["tokens_seen"], "wall_time_s": metrics["wall_time_s"],
            "tokens_per_s": metrics["train_tokens_per_s"],
            "cell_tokens_per_s": metrics["tokens_seen"] / metrics["wall_time_s"],
            **{k: metrics[k] for k in ("mfu_datasheet", "mfu_measured", "peak_gpu_memory_mb")}, "val_loss": metrics["val_loss"],
            "test_loss": metrics.get("test_loss"), "params": metrics["params"], "tpe_select_train_s": elapsed}


def main(argv=None) -> None:
    args = parse(argv)
    counts = [int(v) for v in args.devices.split(",")]
    import torch

    sys.path.insert(0, str(SRC))
    result = {"card": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.machine()})",
              "cards": torch.cuda.device_count(), "torch": torch.__version__, "command": " ".join(sys.argv),
              "settings": vars(args), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        first = None
        for devices in counts:
            entry = run(args, devices, Path(tmp), first)
            first = first or Path(tmp) / f"devices-{devices}"
            result["runs"].append(entry)
            base = result["runs"][0]["tokens_per_s"]
            result["speedup"] = {str(r["devices"]): r["tokens_per_s"] / base for r in result["runs"]}
            result["cell_speedup"] = {str(r["devices"]): r["cell_tokens_per_s"] / result["runs"][0]["cell_tokens_per_s"]
                                      for r in result["runs"]}
            print(f"{devices} device(s): {entry['tokens_per_s']:,.0f} tokens/s steady (x{result['speedup'][str(devices)]:.2f}),"
                  f" {entry['cell_tokens_per_s']:,.0f} over the cell (x{result['cell_speedup'][str(devices)]:.2f}), "
                  f"{entry['steps']} steps, val loss {entry['val_loss']:.3f}", flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
