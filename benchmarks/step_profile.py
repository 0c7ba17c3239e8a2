"""Where a training step's time goes: wall time against GPU kernel time, host syncs and top ops.

For each variant it trains chemspec's own module through Lightning (as `chemspec run` does) for
--warmup steps, then profiles --steps more with torch.profiler while CUDA's sync debug mode records
every operation that makes the host wait for the GPU (with the Python line that asked for it).
It reports the kernels' time per step by kind (KINDS), the share of the wall time in which some
kernel ran (`gpu_busy`), and the GPU's idle time with the kernels on either side of the longest
gaps. `chemgpt_packed_cudagraphs` trains as `training.packing: 256` and `training.compile:
cuda-graphs` do; `_bf16true` trains it with `training.precision: bf16-true`. `plain_*` variants train the same model on the same batches in a bare PyTorch loop
(autocast bf16, fused AdamW, no clipping), which bounds what Lightning and chemspec's module add.

  source benchmarks/device_setup.sh
  python3 benchmarks/step_profile.py --smiles .bench/moses_train.csv.gz --atoms .bench/atoms.npz
"""
from __future__ import annotations

import argparse, json, os, sys, time, traceback, warnings
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
VARIANTS = ("chemgpt", "chemgpt_compile", "chemgpt_packed_cudagraphs", "chemgpt_packed_cudagraphs_bf16true",
            "plain_compile", "painn")
# GPU kernels by name, first match wins (inductor's matmul templates are triton_tem_*): where a step's
# GPU time goes
KINDS = {"matmul": ("gemm", "nvjet", "cutlass", "xmma", "triton_tem"), "fused_elementwise": ("triton_",),
         "attention": ("fmha", "flash", "cudnn", "attention", "attn"), "optimizer": ("adam", "foreach", "multi_tensor")}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--smiles", help="MOSES train.csv.gz (default: the one in the molsets wheel)")
    a("--atoms", default=".bench/atoms.npz", help="atoms store for the painn variant")
    a("--molecules", type=int, default=60_000)
    a("--sizes", default="200m:16x1024x16", help="ChemGPT name:layers x hidden x heads, comma list")
    a("--batch", type=int, default=256)
    a("--painn-batch", type=int, default=100)
    a("--warmup", type=int, default=30, help="steps before the profiled ones (%(default)s)")
    a("--steps", type=int, default=10, help="profiled steps (%(default)s)")
    a("--variants", default=",".join(VARIANTS))
    a("--cuda-only", action="store_true", help="profile the GPU alone (less host overhead, no CPU table)")
    a("--loader-workers", type=int, default=None,
      help="ChemGPT data-loader processes (default: chemspec's, 2 on a GPU and 0 on a CPU)")
    a("--out", default=str(Path(os.environ.get("OUT", ".bench")) / "step_profile"))
    args = p.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    args.sizes = {n: [int(x) for x in s.split("x")] for n, s in (i.split(":") for i in args.sizes.split(","))}
    return args


class Window(L.Callback):
    """Profiler and sync recorder over steps (warmup, warmup + steps]; as a Lightning callback it
    marks the steps of a Trainer, and a bare loop calls `step` itself."""

    def __init__(self, warmup: int, steps: int, cuda_only: bool = False):
        super().__init__()
        self.warmup, self.steps, self.syncs, self.cuda_only = warmup, steps, Counter(), cuda_only
        activities = [torch.profiler.ProfilerActivity.CUDA]
        self.prof = torch.profiler.profile(activities=activities if cuda_only else
                                           [torch.profiler.ProfilerActivity.CPU, *activities])
        self.start = self.wall = None

    def _record(self, message, category, filename, lineno, file=None, line=None):
        frames = [f for f in traceback.extract_stack()[:-1] if "warnings" not in f.filename][-6:]
        self.syncs[" <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames))] += 1

    def step(self, done: int) -> None:
        if done == self.warmup:
            torch.cuda.synchronize()
            self.prof.__enter__()
            self._show, warnings.showwarning = warnings.showwarning, self._record
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            self.start = time.perf_counter()
        elif done == self.warmup + self.steps:
            torch.cuda.set_sync_debug_mode(0)
            torch.cuda.synchronize()
            self.wall = time.perf_counter() - self.start
            warnings.showwarning = self._show
            self.prof.__exit__(None, None, None)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.step(trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        self.step(trainer.global_step)

    def summary(self, name: str, out: Path) -> dict:
        events = self.prof.key_averages()
        out.mkdir(parents=True, exist_ok=True)
        with (out / "tables.txt").open("a") as tables:
            for key in ("self_cuda_time_total",) + (() if self.cuda_only else ("self_cpu_time_total",)):
                tables.write(f"== {name}, by {key}\n{events.table(sort_by=key, row_limit=25)}\n")
        kernels = sorted((e for e in self.prof.events() if is_kernel(e)), key=lambda e: e.time_range.start)
        kinds = Counter()
        for e in kernels:
            key = e.name.lower()
            kinds[next((k for k, marks in KINDS.items() if any(m in key for m in marks)), "other")] += \
                e.time_range.elapsed_us() / 1e3 / self.steps
        gaps = idle(kernels, self.steps)
        span_ms = (max(e.time_range.end for e in kernels) - kernels[0].time_range.start) / 1e3 / self.steps \
            if kernels else 0.0
        return {"wall_ms_per_step": 1e3 * self.wall / self.steps, "gpu_ms_per_step": sum(kinds.values()),
                "gpu_ms_by_kind": {k: round(v, 3) for k, v in kinds.most_common()},
                "gpu_busy": (span_ms - gaps["idle_ms_per_step"]) / (1e3 * self.wall / self.steps), **gaps,
                "syncs_per_step": sum(self.syncs.values()) / self.steps, "sync_sites": dict(self.syncs.most_common(8))}


def is_kernel(event) -> bool:
    """A kernel or copy on the GPU's timeline, not a range annotated around others."""
    return (event.device_type == torch.autograd.DeviceType.CUDA and not event.is_user_annotation
            and not event.name.startswith(("##", "Optimizer.", "ProfilerStep")))


def idle(kernels: list, steps: int, shortest_us: float = 20.0) -> dict:
    """GPU time with no kernel running, between the first and last kernel of the window, and the
    kernels on either side of the longest gaps (grouped by that pair): where the GPU waits."""
    gaps, total, busy_until = Counter(), 0.0, None
    previous = None
    for e in kernels:
        if busy_until is not None and e.time_range.start > busy_until:
            gap = e.time_range.start - busy_until
            total += gap
            if gap >= shortest_us:
                gaps[f"{previous.name[:60]} -> {e.name[:60]}"] += gap
        if busy_until is None or e.time_range.end > busy_until:
            busy_until, previous = e.time_range.end, e
    return {"idle_ms_per_step": total / 1e3 / steps,
            "idle_gaps_ms_per_step": {k: round(v / 1e3 / steps, 3) for k, v in gaps.most_common(12)}}


def chemgpt_variant(args, tokens, vocab, shape, compiled: bool | str, plain: bool, packed: bool,
                    precision: str = "bf16-mixed") -> Window:
    from chemspec.runtime.chemgpt import ChemGPT, gpt_neo_config, loader, loader_workers
    from chemspec.specs.training import Optimizer, Scheduler

    layers, hidden, heads = shape
    config = gpt_neo_config({"max_length": 128, "n_layer": layers, "n_embd": hidden, "n_head": heads}, len(vocab))
    window = Window(args.warmup, args.steps, args.cuda_only)
    torch.manual_seed(0)
    module = ChemGPT(config, 5e-4, Optimizer(), Scheduler(), total_steps=10**6, compile=compiled)
    batches = loader(tokens, np.arange(len(tokens)), args.batch, shuffle=True, seed=0,
                     workers=loader_workers(args.loader_workers, torch.cuda.is_available()),
                     pack_length=256 if packed else None, pin_memory=packed)
    total = args.warmup + args.steps
    if plain:
        module.cuda().train()
        optimizer = torch.optim.AdamW(module.parameters(), lr=5e-4, fused=True)
        for done, batch in enumerate(batches):
            window.step(done)
            if done == total:
                break
            batch = {k: v.cuda(non_blocking=True) for k, v in batch.items()}
            with torch.autocast("cuda", dtype=torch.bfloat16):
                s, c = module.token_loss(batch)
            (s / c).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return window

    trainer = L.Trainer(max_steps=total, accelerator="gpu", devices=1, precision=precision, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
                        num_sanity_val_steps=0, gradient_clip_val=1.0, callbacks=[window])
    trainer.fit(module, batches)
    return window


def painn_variant(args) -> Window:
    from chemspec.runtime.atoms import load_atoms
    from chemspec.runtime.ff_models import FAMILIES
    from chemspec.runtime.forcefield import ForceField, _quiet
    from chemspec.runtime.forcefield_train import energy_reference
    from chemspec.runtime.neighbours import ForceFieldDataset

    data = load_atoms(args.atoms)
    shift = energy_reference(data, per_element=True)
    dataset = ForceFieldDataset(data, 5.0)
    _quiet()
    window = Window(args.warmup, args.steps)
    module = ForceField(FAMILIES["painn"](128, 3, 5.0, 20), energy_shift=shift, patience=10**9)

    trainer = L.Trainer(max_steps=args.warmup + args.steps, accelerator="gpu", devices=1, inference_mode=False,
                        logger=False, enable_checkpointing=False, enable_model_summary=False,
                        enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=1, callbacks=[window])
    # one validation batch an epoch: the plateau schedule needs its val_loss
    trainer.fit(module, dataset.loader(args.painn_batch, shuffle=True, pin_memory=True), dataset.loader(256))
    return window


def main(argv=None):
    args = parse(argv)
    out, result = Path(args.out), {"card": torch.cuda.get_device_name(), "torch": torch.__version__,
                                   "command": " ".join(sys.argv), "variants": {}}
    chemgpt = [v for v in args.variants if v != "painn"]
    if chemgpt:
        from chemgpt_throughput import moses_tokens
        from chemspec.runtime.molecules import moses_path

        tokens, _, vocab = moses_tokens(Path(args.smiles or moses_path()), args.molecules, held_out=0,
                                        max_length=128, workers=16)
    for variant in args.variants:
        sizes = args.sizes.items() if variant != "painn" else [("128x3", None)]
        for size, shape in sizes:
            name = f"{variant}_{size}"
            window = (painn_variant(args) if variant == "painn" else
                      chemgpt_variant(args, tokens, vocab, shape,
                                      "cuda-graphs" if "cudagraphs" in variant else "compile" in variant,
                                      variant.startswith("plain"), "packed" in variant,
                                      "bf16-true" if variant.endswith("_bf16true") else "bf16-mixed"))
            result["variants"][name] = r = window.summary(name, out)
            print(f"{name}: {r['wall_ms_per_step']:.1f} ms/step wall, {r['gpu_ms_per_step']:.1f} ms GPU "
                  f"({r['gpu_busy']:.0%}) {r['gpu_ms_by_kind']}, idle {r['idle_ms_per_step']:.2f} ms "
                  f"{r['idle_gaps_ms_per_step']}, {r['syncs_per_step']:.1f} syncs/step "
                  f"{list(r['sync_sites'])[:3]}",
                  flush=True)
            (out / "step_profile.json").write_text(json.dumps(result, indent=1) + "\n")
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
