"""A train cell preempted as SLURM preempts it, then resumed, against the same cell trained whole.

The script compiles SPEC into a folder of its own, runs data, split, every tpe cell and select with
`python -m chemspec run …`, and trains CELL three times: whole (the reference); with SIGTERM sent from
another process to the cell and its loader workers after optimiser step STEP (CHEMSPEC_FAULT's
`term-all`, as slurmstepd signals every process of a job step); and once more, which resumes from the
checkpoint the stop left (once for each of STEPS). It reports how each run ended and compares the
resumed cell's per-step training losses with the reference's, before and after the stop: a resume
that served the wrong batches shows as losses that differ by the batch-to-batch spread, not by GPU
rounding. Each epoch's validation loss (val_history) is reported for both. With --devices N the cell
trains on N GPUs (Lightning DDP): every rank signals itself and its own workers at STEP, as SLURM
signals every task of the step, and the ranks agree on one step to stop at (runtime.preempt).

On the GPU machine (MOSES carried as for chemgpt_throughput.py; the spec leaves training.num_workers
at its GPU default of 2):
  source benchmarks/device_setup.sh
  python3 benchmarks/preempt_resume.py --spec specs/gpu-packed-smoke.yaml --cell s-10000 --steps 40 60 \\
      --out $OUT/preempt_resume_h200.json
  python3 benchmarks/preempt_resume.py --spec specs/gpu-packed-smoke.yaml --cell s-10000 --devices 2 \\
      --steps 20 30 --out $OUT/preempt_resume_h200x2.json
"""
from __future__ import annotations

import argparse, csv, json, platform, shlex, shutil, statistics, sys, tempfile, time
from pathlib import Path

import yaml

from checkout_cli import chemspec, must


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, help="the study spec")
    p.add_argument("--cell", required=True, help="the train cell to stop and resume")
    p.add_argument("--steps", type=int, nargs="+", required=True,
                   help="optimiser steps after which SIGTERM is sent, one stopped and resumed run each")
    p.add_argument("--devices", type=int, help="train on this many GPUs with DDP (training.devices; default: the spec's)")
    p.add_argument("--out", default="benchmarks/results/preempt_resume.json")
    return p.parse_args(argv)


def losses(folder: Path) -> dict[int, float]:
    with open(folder / "loss.csv", newline="") as handle:
        return {int(row["step"]): float(row["loss"]) for row in csv.DictReader(handle)}


def compare(reference: dict[int, float], resumed: dict[int, float], stop: int) -> dict:
    def gaps(steps):
        values = [abs(resumed[s] - reference[s]) for s in steps]
        return {"steps": len(values), "max_abs": max(values, default=None),
                "median_abs": statistics.median(values) if values else None}

    common = sorted(set(reference) & set(resumed))
    spread = [abs(reference[s + 1] - reference[s]) for s in sorted(reference)[:-1]]
    return {"same_steps": sorted(reference) == sorted(resumed),
            "before_stop": gaps([s for s in common if s < stop]),
            "after_stop": gaps([s for s in common if s >= stop]),
            "reference_step_to_step_median_abs": statistics.median(spread)}


def stop_and_resume(folder: Path, train: tuple[str, ...], out: Path, reference: dict[int, float],
                    step: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    stopped = chemspec(folder, *train, fault=f"train@{train[-1]}:term-all@{step}")
    checkpoint = any(folder.glob(f"results/*/.resume/train-{train[-1]}/last.ckpt"))
    resumed = chemspec(folder, *train)
    must(resumed)
    metrics = json.loads((out / "metrics.json").read_text())
    return {"stop_after_step": step,
            "stopped": {"returncode": stopped.returncode, "seconds": stopped.seconds, "checkpoint_left": checkpoint,
                        "stderr": [line for line in stopped.stderr.splitlines()
                                   if line.startswith(("fault:", "error:", "internal error:"))]},
            "resumed": {"seconds": resumed.seconds, "steps": metrics["steps"], "val_loss": metrics["val_loss"],
                        "val_history": metrics["val_history"]},
            "losses": compare(reference, losses(out), step)}


def main(argv=None) -> None:
    args = parse(argv)
    from chemspec import api

    folder = Path(tempfile.mkdtemp(prefix="preempt-"))
    study = yaml.safe_load(Path(args.spec).read_text())
    if args.devices:
        study["training"]["devices"] = args.devices
    (folder / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    must(chemspec(folder, "compile", "study.yaml"))
    cells = api.load_cells(folder / "params.yaml")
    for stage, keys in (("data", [None]), ("split", [None]), ("tpe", sorted(cells.tpe)), ("select", [None])):
        for key in keys:
            must(chemspec(folder, "run", stage, *(["--cell", key] if key else [])))
    train = ("run", "train", "--cell", args.cell)
    out = folder / cells.train[args.cell].out_dir
    whole = chemspec(folder, *train)
    must(whole)
    reference, reference_metrics = losses(out), json.loads((out / "metrics.json").read_text())
    runs = [stop_and_resume(folder, train, out, reference, step) for step in args.steps]
    from importlib.metadata import version
    import torch

    result = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]), "date": time.strftime("%Y-%m-%d"),
        "card": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
        "versions": {p: version(p) for p in ("torch", "lightning", "transformers")}, "cell": args.cell,
        "devices": study["training"].get("devices", 1),
        "whole": {"seconds": whole.seconds, "steps": reference_metrics["steps"],
                  "val_loss": reference_metrics["val_loss"], "val_history": reference_metrics["val_history"]},
        "stops": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
