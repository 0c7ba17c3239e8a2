"""PaiNN force-field training throughput: chemspec's own loop against schnetpack 2.0.4's, on one card.

Same structures, split, PaiNN size, loss (L1, 0.01 E + 0.99 F), optimiser (AdamW, lr 1e-3, no LR
schedule) and epochs. Variants: `peer` is schnetpack's AtomsDataModule (ASE db, ASENeighborList per
structure in --workers processes) + AtomisticTask in a pytorch_lightning Trainer; `fp32`, `tf32` and
`bf16` are chemspec's ForceField + ForceFieldDataset (pairs precomputed once, pinned batches) at
--batch-size with plain fp32, TF32 matmuls or bf16 autocast; `large` is TF32 at --large-batch (fewer
optimiser steps per epoch, so its accuracy is not like-for-like); `graph` and `graph_tf32` train as
`training.compile: cuda-graphs` does (padded batches, the whole step replayed from one CUDA graph), and
`graph_any_batch` pads to the shape of any batch of the size rather than the largest the run draws. Epoch times include each epoch's
validation; the first (warm-up) epoch is left out of structures_per_s. A numerics check evaluates the
fp32-trained model on the test split in fp32, TF32 and bf16. Energies are referenced per element
(least squares on the training split) for both: chemspec shifts inside the model, the peer's db holds
E - sum_Z e_Z. With --max-variant-s a variant stops early; later variants then run the epochs it
reached, so the peer (first by default) bounds the total time and accuracies stay comparable.
"""
from __future__ import annotations

import argparse, datetime, hashlib, json, os, platform, shlex, shutil, sys, tempfile, threading, time, typing
import warnings
from contextlib import contextmanager, nullcontext
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import torch.utils.data.dataloader as _dl

_dl.T_co = getattr(_dl, "T_co", typing.TypeVar("T_co", covariant=True))  # schnetpack 2.0.4 on torch >= 2.6
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
warnings.filterwarnings("ignore", message=r".*(ambiguous collection|save_hyperparameters|is an instance of).*")
VARIANTS = ("peer", "fp32", "tf32", "bf16", "large", "graph", "graph_tf32", "graph_any_batch")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--data", default=".bench/atoms.npz", help="atoms store .npz (chemspec.runtime.atoms.save_atoms), or a "
      "public file read as --format says")
    a("--format", default="atoms", help="'atoms' (chemspec's store), or a data.source.format with its energy and "
      "length units, e.g. md17:kcal/mol:Angstrom (%(default)s)")
    a("--out", default=".bench/painn_throughput.json", help="JSON result (default %(default)s)")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cuda", "cpu"))
    a("--epochs", type=int, default=250, help="epochs of every variant, the first being warm-up (%(default)s)")
    a("--width", type=int, default=128, help="PaiNN n_atom_basis (%(default)s)")
    a("--depth", type=int, default=3, help="PaiNN n_interactions (%(default)s)")
    a("--cutoff", type=float, default=5.0, help="Å (%(default)s)")
    a("--n-rbf", type=int, default=20, help="Gaussian radial basis functions (%(default)s)")
    a("--batch-size", type=int, default=100, help="training batch of both loops (%(default)s)")
    a("--eval-batch-size", type=int, default=256, help="validation/test batch of both loops (%(default)s)")
    a("--large-batch", type=int, default=512, help="training batch of the 'large' variant (%(default)s)")
    a("--lr", type=float, default=1e-3, help="AdamW learning rate (%(default)s)")
    a("--workers", type=int, default=8, help="schnetpack data-loader workers (%(default)s)")
    a("--val-frac", type=float, default=0.1, help="(%(default)s)")
    a("--test-frac", type=float, default=0.1, help="(%(default)s)")
    a("--seed", type=int, default=0, help="split, initialisation and shuffling (%(default)s)")
    a("--variants", default=",".join(VARIANTS), help="comma list, run in this order (%(default)s)")
    a("--max-variant-s", type=float, default=0.0, help="stop a variant after this many seconds of training "
      "and run later variants for the epochs it reached (0: no limit)")
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if bad := set(args.variants) - set(VARIANTS):
        p.error(f"unknown variants {sorted(bad)}; choose from {', '.join(VARIANTS)}")
    return args


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def make_timer(base, device, max_s):
    """A Callback of `base` (lightning's or pytorch_lightning's) that marks epoch starts and the end."""
    class Timer(base):
        def __init__(self):
            super().__init__()
            self.marks, self.truncated = [], False

        def on_train_epoch_start(self, trainer, module):
            sync(device)
            self.marks.append(time.perf_counter())

        def on_train_epoch_end(self, trainer, module):  # after the epoch's validation in Lightning 2.x
            if max_s and time.perf_counter() - self.marks[0] > max_s and not trainer.should_stop:
                self.truncated = trainer.should_stop = True

        def on_train_end(self, trainer, module):
            sync(device)
            self.marks.append(time.perf_counter())
    return Timer()


@contextmanager
def measured(device):
    """Wall time, peak CUDA memory and mean torch.cuda.utilization() (sampled every 0.25 s) of a block."""
    out, stop, samples = {}, threading.Event(), []
    try:
        ok = device == "cuda" and torch.cuda.utilization() is not None  # needs nvidia-ml-py
    except Exception:
        ok = False

    def sample():
        while not stop.wait(0.25):
            samples.append(torch.cuda.utilization())
    thread = threading.Thread(target=sample, daemon=True)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    ok and thread.start()
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["wall_s"] = round(time.perf_counter() - start, 2)
        stop.set()
        ok and thread.join()
        out["peak_mem_MB"] = round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None
        out["gpu_util_mean_pct"] = round(float(np.mean(samples)), 1) if samples else None


@contextmanager
def numerics(device, mode):
    """TF32 matmuls for 'tf32', bf16 autocast for 'bf16', plain fp32 otherwise; flags restored after."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "tf32"
    try:
        with torch.autocast(device, dtype=torch.bfloat16) if mode == "bf16" else nullcontext():
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def summary(timer, n_train, stats, mae, **extra):
    times = np.diff(timer.marks).tolist()
    timed = times[1:]
    return {"structures_per_s": round(n_train * len(timed) / sum(timed), 2) if timed else None,
            "structures_per_s_with_warmup": round(n_train * len(times) / sum(times), 2),
            "warmup_epoch_s": round(times[0], 4), "epochs_run": len(times), "truncated": timer.truncated,
            "epoch_times": [round(t, 4) for t in times], **stats,
            "force_mae_meV_per_A": mae["force_mae_meV_per_A"], "energy_mae_meV": mae["energy_mae_meV"], **extra}


def run_chemspec(args, parts, shift, mode, batch_size, epochs):
    import lightning as L
    from torch.utils.data import DataLoader

    from chemspec.runtime.ff_models import FAMILIES
    from chemspec.runtime.forcefield import ForceField, _quiet, evaluate
    from chemspec.runtime.neighbours import ForceFieldDataset

    cuda = args.device == "cuda"
    shape_epochs = 0 if mode == "graph_any_batch" else epochs
    graphs, mode = mode.startswith("graph"), {"graph": "fp32", "graph_tf32": "tf32", "graph_any_batch": "fp32"}.get(mode, mode)
    sets = {k: ForceFieldDataset(v, args.cutoff, torch.float32) for k, v in parts.items()}

    def load(name, size, shuffle=False):
        if graphs and name == "train":
            return sets[name].loader(size, shuffle=shuffle, seed=args.seed, pin_memory=cuda, padded=True,
                                    epochs=shape_epochs)
        return DataLoader(sets[name], batch_size=size, shuffle=shuffle, collate_fn=sets[name].collate,
                          pin_memory=cuda, generator=torch.Generator().manual_seed(args.seed))
    L.seed_everything(args.seed, workers=True, verbose=False)
    _quiet()
    module = ForceField(FAMILIES["painn"](args.width, args.depth, args.cutoff, args.n_rbf), loss="l1",
                        energy_weight=0.01, forces_weight=0.99, learning_rate=args.lr, optimizer="adamw",
                        patience=10**9, energy_shift=shift, cuda_graphs=graphs)  # patience: no LR schedule, as for the peer
    timer = make_timer(L.Callback, args.device, args.max_variant_s)
    trainer = L.Trainer(max_epochs=epochs, accelerator="gpu" if cuda else "cpu", devices=1,
                        precision="bf16-mixed" if mode == "bf16" else "32-true", inference_mode=False,
                        logger=False, enable_checkpointing=False, enable_model_summary=False,
                        enable_progress_bar=False, num_sanity_val_steps=0, deterministic=not cuda, callbacks=[timer])
    train = load("train", batch_size, shuffle=True)
    with numerics(args.device, "tf32" if mode == "tf32" else "fp32"), measured(args.device) as stats:
        trainer.fit(module, train, load("val", args.eval_batch_size))
    test = load("test", args.eval_batch_size)
    module.to(torch.device(args.device))  # Lightning's teardown moved it to the CPU
    with numerics(args.device, mode):
        mae = evaluate(module, test)
    return summary(timer, len(sets["train"]), stats, mae, batch_size=batch_size, numerics=mode, cuda_graphs=graphs,
                   steps=int(trainer.global_step), **(padding(sets["train"], train) if graphs else {})), module, test


def padding(dataset, loader):
    """Shares of the padded batches' atoms and pairs that are padding, over one epoch."""
    atoms, pairs = loader.collate_fn.keywords["shape"]
    batches = len(loader)
    return {"padded_shape": [atoms, pairs],
            "padding_atoms_share": round(1 - int(dataset.n_atoms.sum()) / (atoms * batches), 4),
            "padding_pairs_share": round(1 - int(dataset.n_pairs.sum()) / (pairs * batches), 4)}


def numerics_check(module, test, device):
    """One fp32-trained model on the test split in fp32, TF32 and bf16: MAEs and force deviations."""
    from chemspec.runtime.forcefield import evaluate

    def forces():
        return torch.cat([module({k: v.to(module.device) for k, v in b.items()})[1].detach().float().cpu()
                          for b in test])
    module.eval()
    result, ref = {}, None
    for mode in ("fp32", "tf32", "bf16"):
        with numerics(device, mode):
            mae, f = evaluate(module, test), forces()
        ref = f if ref is None else ref
        result[mode] = {"force_mae_meV_per_A": mae["force_mae_meV_per_A"], "energy_mae_meV": mae["energy_mae_meV"],
                        "mean_abs_force_dev_meV_per_A": 1e3 * float((f - ref).abs().mean())}
    base = result["fp32"]["force_mae_meV_per_A"]
    for mode in ("tf32", "bf16"):
        r = result[mode]
        r.update(force_mae_rel_change=r["force_mae_meV_per_A"] / base - 1,
                 force_dev_rel_to_mae=r["mean_abs_force_dev_meV_per_A"] / base)
        r["within_1pct"] = abs(r["force_mae_rel_change"]) <= 0.01
    return result


def run_peer(args, data, refs, split, epochs):
    import pytorch_lightning as pl
    import schnetpack as spk
    import schnetpack.transform as trn
    import torchmetrics
    from ase import Atoms

    cuda, tmp, cwd = args.device == "cuda", tempfile.mkdtemp(prefix="painn-peer-"), os.getcwd()
    owner = np.repeat(np.arange(len(data)), data.sizes())
    energy = data.energy - np.bincount(owner, weights=refs.numpy()[data.numbers], minlength=len(data))
    path = os.path.join(tmp, "data.db")
    db = spk.data.ASEAtomsData.create(path, distance_unit="Ang",
                                      property_unit_dict={"energy": "eV", "forces": "eV/Ang"})
    structures = [data.structure(s) for s in range(len(data))]
    db.add_systems([{"energy": np.array([e]), "forces": s[3]} for e, s in zip(energy, structures)],
                   [Atoms(numbers=s[0], positions=s[1]) for s in structures])
    np.savez(os.path.join(tmp, "split.npz"), **{f"{k}_idx": v for k, v in split.items()})
    os.chdir(tmp)  # schnetpack leaves a splitting.lock in the working directory
    try:
        dm = spk.data.AtomsDataModule(path, batch_size=args.batch_size, split_file=os.path.join(tmp, "split.npz"),
                                      distance_unit="Ang", property_units={"energy": "eV", "forces": "eV/Ang"},
                                      load_properties=["energy", "forces"], val_batch_size=args.eval_batch_size,
                                      test_batch_size=args.eval_batch_size, num_workers=args.workers,
                                      transforms=[trn.ASENeighborList(cutoff=args.cutoff), trn.CastTo32()],
                                      pin_memory=cuda)
        dm.setup()
        pl.seed_everything(args.seed, workers=True, verbose=False)
        rep = spk.representation.PaiNN(n_atom_basis=args.width, n_interactions=args.depth, max_z=100,
                                       radial_basis=spk.nn.GaussianRBF(n_rbf=args.n_rbf, cutoff=args.cutoff),
                                       cutoff_fn=spk.nn.CosineCutoff(args.cutoff))
        model = spk.model.NeuralNetworkPotential(
            representation=rep, input_modules=[spk.atomistic.PairwiseDistances()],
            output_modules=[spk.atomistic.Atomwise(n_in=args.width, output_key="energy"),
                            spk.atomistic.Forces(energy_key="energy", force_key="forces")],
            postprocessors=[trn.CastTo64()])
        outputs = [spk.task.ModelOutput(name, loss_fn=torch.nn.L1Loss(), loss_weight=weight,
                                        metrics={"MAE": torchmetrics.MeanAbsoluteError()})
                   for name, weight in (("energy", 0.01), ("forces", 0.99))]
        task = spk.task.AtomisticTask(model=model, outputs=outputs, optimizer_cls=torch.optim.AdamW,
                                      optimizer_args={"lr": args.lr, "weight_decay": 0.0})  # no scheduler
        timer = make_timer(pl.Callback, args.device, args.max_variant_s)
        trainer = pl.Trainer(max_epochs=epochs, accelerator="gpu" if cuda else "cpu", devices=1,
                             inference_mode=False, logger=False, enable_checkpointing=False,
                             enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0,
                             callbacks=[timer], default_root_dir=tmp)
        with numerics(args.device, "fp32"):
            with measured(args.device) as stats:
                trainer.fit(task, datamodule=dm)
            tested = trainer.test(task, datamodule=dm, verbose=False)[0]
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)
    mae = {"force_mae_meV_per_A": 1e3 * tested["test_forces_MAE"], "energy_mae_meV": 1e3 * tested["test_energy_MAE"]}
    return summary(timer, len(split["train"]), stats, mae, batch_size=args.batch_size, numerics="fp32",
                   workers=args.workers, steps=int(trainer.global_step))


def write(result, out):
    """Relative accuracies and chemspec/peer ratios of the variants so far, then the JSON file."""
    peer, fp32, ratios = result["variants"].get("schnetpack"), result["variants"].get("chemspec_fp32"), {}
    for name, r in result["variants"].items():
        if fp32 and name.startswith("chemspec") and name != "chemspec_fp32":
            r["force_mae_rel_to_chemspec_fp32"] = r["force_mae_meV_per_A"] / fp32["force_mae_meV_per_A"] - 1
        if peer and name != "schnetpack" and r["structures_per_s"] and peer["structures_per_s"]:
            ratios[f"{name}/schnetpack"] = {
                "structures_per_s": r["structures_per_s"] / peer["structures_per_s"],
                "force_mae": r["force_mae_meV_per_A"] / peer["force_mae_meV_per_A"],
                "peak_mem": r["peak_mem_MB"] / peer["peak_mem_MB"] if peer["peak_mem_MB"] else None,
                "same_epochs": r["epochs_run"] == peer["epochs_run"]}
    result["ratios"] = ratios
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1, default=str) + "\n")
    return ratios


def main(argv=None):
    args = parse(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is visible (use --device cpu for a smoke test)")
    from chemspec.runtime.atoms import load_atoms
    from chemspec.runtime.atoms_files import load_file
    from chemspec.runtime.ff_models import import_schnetpack
    from chemspec.runtime.forcefield import _quiet
    from chemspec.runtime.forcefield_train import energy_reference

    import_schnetpack()
    _quiet()
    if args.format == "atoms":
        data = load_atoms(args.data)
    else:
        data, _ = load_file(Path(args.data), *args.format.split(":"))
    order = np.random.default_rng(args.seed).permutation(len(data))
    n_val, n_test = round(args.val_frac * len(data)), round(args.test_frac * len(data))
    split = {"train": np.sort(order[n_val + n_test:]), "val": np.sort(order[:n_val]),
             "test": np.sort(order[n_val:n_val + n_test])}
    parts = {k: data.subset(v) for k, v in split.items()}
    refs = energy_reference(parts["train"], per_element=True)
    card = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({platform.machine()})"
    result = {"card": card, "torch": torch.__version__, "python": platform.python_version(),
              **{name: version(name) for name in ("schnetpack", "lightning", "pytorch-lightning", "torchmetrics")},
              "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "command": shlex.join([Path(sys.executable).name, *sys.argv]), "settings": vars(args),
              "data": {"path": args.data, "sha256": hashlib.sha256(Path(args.data).read_bytes()).hexdigest(),
                       "structures": len(data), "atoms": len(data.numbers), **{f"n_{k}": len(v) for k, v in split.items()}},
              "variants": {}}
    names = {"peer": "schnetpack", "fp32": "chemspec_fp32", "tf32": "chemspec_tf32", "bf16": "chemspec_bf16",
             "large": f"chemspec_tf32_bs{args.large_batch}", "graph": "chemspec_fp32_cuda_graphs",
             "graph_tf32": "chemspec_tf32_cuda_graphs", "graph_any_batch": "chemspec_fp32_cuda_graphs_any_batch"}
    epochs, ratios = args.epochs, {}
    for v in args.variants:
        print(f"[painn] {names[v]}: {epochs} epochs ...", flush=True)
        if v == "peer":
            r = run_peer(args, data, refs, split, epochs)
        else:
            mode, size = ("tf32", args.large_batch) if v == "large" else (v, args.batch_size)
            r, module, test = run_chemspec(args, parts, refs, mode, size, epochs)
            if v == "fp32":
                result["numerics_check"] = numerics_check(module, test, args.device)
        result["variants"][names[v]] = r
        epochs = min(epochs, r["epochs_run"])  # a truncated variant sets the epochs of the later ones
        ratios = write(result, args.out)  # after every variant, so a killed run keeps what it finished
        print(f"[painn] {names[v]}: {r['structures_per_s']} structures/s, {r['wall_s']} s, force MAE "
              f"{r['force_mae_meV_per_A']:.2f} meV/Å{' (truncated)' if r['truncated'] else ''}", flush=True)

    print(f"\n{card} | torch {torch.__version__} | schnetpack {result['schnetpack']} | PaiNN {args.width}x{args.depth}"
          f" | train {len(split['train'])} structures | test {len(split['test'])}")
    cols = (("variant", 22, None), ("epochs", 7, "d"), ("struct/s", 10, ".1f"), ("x peer", 7, ".2f"),
            ("warmup s", 9, ".2f"), ("F MAE meV/Å", 12, ".2f"), ("E MAE meV", 10, ".2f"), ("peak MB", 8, ".0f"),
            ("GPU %", 6, ".0f"))
    print("".join(f"{c:<{w}}" if f is None else f"{c:>{w}}" for c, w, f in cols))
    for name, r in result["variants"].items():
        cells = (name + ("*" if r["truncated"] else ""), r["epochs_run"], r["structures_per_s"],
                 ratios.get(f"{name}/schnetpack", {}).get("structures_per_s"), r["warmup_epoch_s"],
                 r["force_mae_meV_per_A"], r["energy_mae_meV"], r["peak_mem_MB"], r["gpu_util_mean_pct"])
        print("".join(f"{c:<{w}}" if f is None else f"{'-' if c is None else format(c, f):>{w}}"
                      for c, (_, w, f) in zip(cells, cols)))
    for mode, r in result.get("numerics_check", {}).items():
        if mode != "fp32":
            print(f"numerics, same fp32-trained model in {mode}: force MAE {r['force_mae_rel_change']:+.3%}, "
                  f"mean |ΔF| {r['mean_abs_force_dev_meV_per_A']:.3f} meV/Å ({r['force_dev_rel_to_mae']:.2%} "
                  f"of the MAE); MAE within 1%: {r['within_1pct']}")
    print("* stopped by --max-variant-s" if any(r["truncated"] for r in result["variants"].values()) else "",
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
