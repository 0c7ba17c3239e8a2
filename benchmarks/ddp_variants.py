"""Where DDP loses throughput on a compiled ChemGPT step: one plain PyTorch loop per DDP setting.

Each variant trains chemspec's ChemGPT module (its `token_loss`, packed `loader`, fused AdamW, clipping
at 1.0, bf16 autocast, torch.compile as `training.compile` sets it) without Lightning, on --world GPUs
(1: no DDP wrapper, as Lightning runs one device). Rank r reads its own share of the molecules. The
rate is predicted tokens (as metrics.json counts them) over the wall time of the steps after
--warmup, summed over ranks; each variant's speedup is its rate over the `single` variant's.

Variants (name: DDP settings):
  single          one GPU, no DDP
  default         DistributedDataParallel's defaults (25 MB buckets); torch.compile splits the graph
                  at bucket boundaries (dynamo's optimize_ddp) so gradients reduce during backward
  bucket100       100 MB buckets (fewer graph pieces), gradients as bucket views
  nosplit         optimize_ddp off: one graph; every gradient reduces after the whole backward
  bf16            default buckets with the bf16 compression hook (half the bytes on the wire; GPUs only)
  bucket100_bf16  both

On the GPU machine (2 cards):
  source benchmarks/device_setup.sh
  python3 benchmarks/ddp_variants.py --smiles .bench/moses_train.csv.gz --out $OUT/ddp_variants.json
"""
from __future__ import annotations

import argparse, json, os, sys, time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
VARIANTS = {"single": {}, "default": {}, "bucket100": {"bucket_cap_mb": 100, "gradient_as_bucket_view": True},
            "nosplit": {"optimize_ddp": False}, "bf16": {"hook": "bf16"},
            "bucket100_bf16": {"bucket_cap_mb": 100, "gradient_as_bucket_view": True, "hook": "bf16"}}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--smiles", help="MOSES train.csv.gz (default: the one in the molsets wheel)")
    a("--molecules", type=int, default=80_000)
    a("--size", default="16x1024x16", help="layers x hidden x heads (%(default)s: 201M non-embedding)")
    a("--batch", type=int, default=256, help="molecules per step per rank")
    a("--pack-length", type=int, default=256)
    a("--compile", default="cuda-graphs", choices=("false", "true", "cuda-graphs"))
    a("--warmup", type=int, default=25)
    a("--steps", type=int, default=125, help="steps per rank, warm-up included")
    a("--world", type=int, default=2)
    a("--variants", default=",".join(VARIANTS))
    a("--cpu", action="store_true", help="smoke test: gloo on the CPU, fp32, no compile")
    a("--out", default=str(Path(os.environ.get("OUT", ".bench")) / "ddp_variants.json"))
    args = p.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    if bad := set(args.variants) - set(VARIANTS):
        p.error(f"unknown variants {sorted(bad)}; choose from {', '.join(VARIANTS)}")
    if args.cpu and any(VARIANTS[v].get("hook") for v in args.variants):
        p.error("--cpu: the bf16 hooks need NCCL; leave out the *bf16 variants")
    if not 0 < args.warmup < args.steps:
        p.error("need 0 < --warmup < --steps")
    return args


class Loss(torch.nn.Module):
    """The module's summed token loss as a forward, so DDP's forward (and its hooks) runs it."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, batch):
        return self.module.token_loss(batch)


def worker(rank: int, world: int, args, tokens: np.ndarray, vocab: int, variant: str, port: int, out: Path):
    import torch._dynamo
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import bf16_compress_hook

    from chemspec.runtime.chemgpt import ChemGPT, gpt_neo_config, loader
    from chemspec.runtime.packing import IGNORE
    from chemspec.specs.training import Optimizer, Scheduler

    settings = dict(VARIANTS[variant])
    device = torch.device("cpu") if args.cpu else torch.device("cuda", rank)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo" if args.cpu else "nccl", rank=rank, world_size=world)
    if not args.cpu:
        torch.cuda.set_device(device)
    torch._dynamo.config.optimize_ddp = settings.pop("optimize_ddp", True)
    layers, hidden, heads = (int(v) for v in args.size.split("x"))
    config = gpt_neo_config({"max_length": 128, "n_layer": layers, "n_embd": hidden, "n_head": heads}, vocab)
    torch.manual_seed(0)
    compiled = {"false": False, "true": True}.get(args.compile, args.compile)
    module = ChemGPT(config, 3e-4, Optimizer(), Scheduler(), total_steps=10**6,
                     compile=False if args.cpu else compiled).to(device)
    model = Loss(module)
    if world > 1:
        hook = settings.pop("hook", None)
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=None if args.cpu else [rank], **settings)
        if hook:
            model.register_comm_hook(None, bf16_compress_hook)
    share = np.arange(rank, len(tokens), world)
    batches = loader(tokens, share, args.batch, shuffle=True, seed=0, workers=4, pack_length=args.pack_length,
                     pin_memory=not args.cpu)
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-4, fused=not args.cpu)
    useful, start = 0, None
    for step, batch in enumerate(batches):
        if step == args.warmup:
            if not args.cpu:
                torch.cuda.synchronize()
            start, useful = time.perf_counter(), 0
        if step == args.steps:
            break
        useful += int(batch["labels"].ne(IGNORE).sum())  # on the host, before the copy
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=not args.cpu):
            total, count = model(batch)
        (total / count).backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if not args.cpu:
        torch.cuda.synchronize()
    rate = torch.tensor([useful / (time.perf_counter() - start)], dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(rate)
        dist.destroy_process_group()
    if rank == 0:
        out.write_text(json.dumps({"variant": variant, "world": world, "tokens_per_s": float(rate),
                                   "steps_timed": args.steps - args.warmup,
                                   "peak_mem_MB": None if args.cpu else torch.cuda.max_memory_allocated() / 2**20}))


def main(argv=None):
    import torch.multiprocessing as mp

    from chemgpt_throughput import moses_tokens
    from chemspec.runtime.molecules import moses_path

    args = parse(argv)
    tokens, _, vocab = moses_tokens(Path(args.smiles or moses_path()), args.molecules, held_out=0, max_length=128,
                                    workers=8)
    if len(tokens) // args.world // args.batch < args.steps:
        sys.exit(f"--molecules {args.molecules} gives each of {args.world} ranks under --steps {args.steps} "
                 f"full batches of {args.batch}; read more molecules or time fewer steps")
    result = {"card": "cpu" if args.cpu else torch.cuda.get_device_name(), "torch": torch.__version__,
              "command": " ".join(sys.argv), "settings": vars(args), "variants": {}}
    scratch = Path(args.out).with_suffix(".part")
    for i, variant in enumerate(args.variants):
        world = 1 if variant == "single" else args.world
        mp.spawn(worker, args=(world, args, tokens, len(vocab), variant, 29500 + i, scratch), nprocs=world)
        entry = result["variants"][variant] = json.loads(scratch.read_text())
        base = result["variants"].get("single")
        entry["speedup"] = entry["tokens_per_s"] / base["tokens_per_s"] if base else None
        times = "n/a" if entry["speedup"] is None else f"x{entry['speedup']:.2f}"
        print(f"{variant}: {entry['tokens_per_s']:,.0f} predicted tokens/s on {world} GPU(s) ({times})", flush=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    scratch.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
