"""How much of a PaiNN training step is launch overhead: eager steps against one CUDA graph of the step.

Trains chemspec's ForceField (PaiNN, loss and AdamW as `chemspec run` builds them) on batches of
--batch-size structures of one molecule (fixed atom and pair counts, so one graph serves every batch)
in a bare loop, three ways: eager, as Lightning's loop runs it; eager under a profiler, for the
kernels' own time per step (`gpu_busy` = kernel time / wall time); and the whole step (forward, force
double backward, AdamW with capturable=True) captured once as a CUDA graph and replayed with each
batch copied into its inputs. Each prints structures/s; the graph's losses are checked against the
eager ones from the same start. Not a Lightning run: it bounds what a graphed step could gain.

  source benchmarks/device_setup.sh
  python3 benchmarks/painn_graph_probe.py --data .bench/md17_ethanol_first2000.npz --format md17:kcal/mol:Angstrom
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--format", default="atoms", help="'atoms' or a data.source.format with units")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--steps", type=int, default=200, help="timed steps of each way")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--out", default=None, help="JSON result")
    return p.parse_args(argv)


def build(width: int, depth: int, shift):
    from chemspec.runtime.ff_models import FAMILIES
    from chemspec.runtime.forcefield import ForceField

    torch.manual_seed(0)
    module = ForceField(FAMILIES["painn"](width, depth, 5.0, 20), energy_shift=shift).cuda()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3, capturable=True)
    return module, optimizer


def step(module, optimizer, batch):
    loss = module._errors(batch, create_graph=True)[0]
    loss.backward()
    optimizer.step()
    return loss.detach()


def timed(run, batches, steps: int) -> tuple[float, list[float]]:
    losses = [run(b) for b in batches[:5]]  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    losses += [run(batches[(5 + k) % len(batches)]) for k in range(steps)]
    torch.cuda.synchronize()
    return time.perf_counter() - start, [float(v) for v in losses]


def main(argv=None):
    args = parse(argv)
    from chemspec.runtime.atoms import load_atoms
    from chemspec.runtime.atoms_files import load_file
    from chemspec.runtime.forcefield_train import energy_reference
    from chemspec.runtime.neighbours import ForceFieldDataset

    data = load_atoms(args.data) if args.format == "atoms" else load_file(Path(args.data), *args.format.split(":"))[0]
    dataset = ForceFieldDataset(data, 5.0)
    loader = dataset.loader(args.batch_size, shuffle=True)
    batches = [{k: v.cuda() for k, v in b.items()} for b in loader if len(b["energy"]) == args.batch_size]
    shapes = {(b["numbers"].shape[0], b["idx_i"].shape[0]) for b in batches}
    if len(shapes) != 1:
        sys.exit(f"batches of {len(shapes)} shapes (atoms, pairs): {sorted(shapes)[:5]}; use one molecule's frames")
    shift = energy_reference(data, per_element=True)
    result = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "batch_size": args.batch_size,
              "atoms_pairs": sorted(shapes)[0], "steps": args.steps}

    module, optimizer = build(args.width, args.depth, shift)

    def eager(batch):
        optimizer.zero_grad(set_to_none=True)
        return step(module, optimizer, batch)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # the optimiser's state and autograd's must exist before a capture
        for b in batches[:3]:
            eager(b)
    torch.cuda.current_stream().wait_stream(side)
    start_state = (copy.deepcopy(module.state_dict()), copy.deepcopy(optimizer.state_dict()))

    wall, eager_losses = timed(eager, batches, args.steps)
    result["eager_structures_per_s"] = args.steps * args.batch_size / wall
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        wall_p, _ = timed(eager, batches, 50)
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    result["kernel_ms_per_step"] = sum(e.self_device_time_total for e in events) / 1e3 / 55
    result["kernels_per_step"] = sum(e.count for e in events) / 55
    result["eager_ms_per_step_profiled"] = wall_p * 1e3 / 50

    module.load_state_dict(start_state[0])  # in place: the graph's parameters are these tensors
    optimizer.load_state_dict(start_state[1])
    optimizer.zero_grad(set_to_none=True)
    static = {k: v.clone() for k, v in batches[0].items()}
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step(module, optimizer, static)

    def replay(batch):
        for k, v in batch.items():
            static[k].copy_(v, non_blocking=True)
        graph.replay()
        return static_loss.clone()

    wall_g, graph_losses = timed(replay, batches, args.steps)
    result["graph_structures_per_s"] = args.steps * args.batch_size / wall_g
    result["graph_over_eager"] = result["graph_structures_per_s"] / result["eager_structures_per_s"]
    n = min(len(eager_losses), len(graph_losses))
    result["loss_max_rel_diff_first_20"] = max(abs(a - b) / abs(a) for a, b in
                                               zip(eager_losses[:20], graph_losses[:20]))
    result["loss_last"] = {"eager": eager_losses[n - 1], "graph": graph_losses[n - 1]}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
