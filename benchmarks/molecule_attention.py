"""One attention layer's forward + backward on packed MOSES batches: chemspec's per-molecule Triton
kernel (runtime.molecule_attention) against SDPA with the dense same-molecule mask (cuDNN, as the
packed path ran before, and SDPA's own choice), 16 heads of 64, bf16, from one projected
[rows, length, 3d] tensor as GPT-Neo's fused projection gives it (SDPA takes its split views).

Batches: 256 MOSES molecules packed as `loader` packs them for training (rows of --pack-length
positions, `fixed_rows`). Times: `eager_*` calls each variant from Python (the custom op's dispatch
and autograd on the host included, which can leave the GPU waiting), `graph_forward_backward_ms`
replays the forward and backward from a CUDA graph, as training with `training.compile: cuda-graphs`
runs them. Errors: the largest difference from fp32 MATH at real positions, over the
reference's largest magnitude, for the output and the three input gradients (random upstream
gradient at real positions).

  python3 benchmarks/molecule_attention.py --smiles .bench/moses_train.csv.gz --out $OUT/molecule_attention.json
"""
import argparse, json, sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def dense(qkv, segments, backends, heads):
    from chemspec.runtime.packing import attention_mask

    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    mask = attention_mask(segments) & causal
    q, k, v = (x.unflatten(-1, (heads, -1)).transpose(1, 2) for x in qkv.chunk(3, dim=-1))
    with sdpa_kernel(backends, set_priority=True) if backends else torch.enable_grad():
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
    return out.transpose(1, 2).flatten(2)


def main():
    from chemgpt_throughput import moses_tokens
    from chemspec.runtime.chemgpt import MASKED_KERNELS, loader
    from chemspec.runtime.molecule_attention import molecule_attention

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smiles", required=True)
    p.add_argument("--molecules", type=int, default=20_000)
    p.add_argument("--pack-length", type=int, nargs="+", default=[256])
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--out", default="molecule_attention.json")
    args = p.parse_args()
    tokens, _, _ = moses_tokens(Path(args.smiles), args.molecules, 0, 128, 8)
    device = torch.device("cuda")
    result = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "command": " ".join(sys.argv),
              "cases": {}}
    for pack_length in args.pack_length:
        batch = next(iter(loader(tokens, np.arange(len(tokens)), 256, True, 0, pack_length=pack_length)))
        segments, index = batch["segments"].to(device), batch["molecules"].to(device)
        rows, length = segments.shape
        generator = torch.Generator(device).manual_seed(0)
        width = args.heads * 64
        base = torch.randn(rows, length, 3 * width, device=device, generator=generator)
        real = (segments > 0)[:, :, None]
        upstream = torch.randn(rows, length, width, device=device, generator=generator) * real

        def run(fn, dtype):
            qkv = base.detach().to(dtype).requires_grad_()
            out = fn(qkv)
            out.backward(upstream.to(dtype))
            return [out.float() * real, *(g.float() * real for g in qkv.grad.chunk(3, dim=-1))]

        variants = {"molecule_kernel": lambda qkv: molecule_attention(qkv, index, args.heads),
                    "cudnn_dense_mask": lambda qkv: dense(qkv, segments, MASKED_KERNELS, args.heads),
                    "sdpa_default_dense_mask": lambda qkv: dense(qkv, segments, None, args.heads)}
        reference = run(lambda qkv: dense(qkv, segments, [SDPBackend.MATH], args.heads), torch.float32)
        case = result["cases"][f"{rows}x{length}"] = {"useful_positions": int((segments > 0).sum())}
        for name, fn in variants.items():
            got = run(fn, torch.bfloat16)
            errors = {n: float((g - r).abs().max() / r.abs().max()) for n, g, r in
                      zip(("out", "dq", "dk", "dv"), got, reference)}
            qkv, grad = base.detach().to(torch.bfloat16).requires_grad_(), upstream.to(torch.bfloat16)
            forward_ms = do_bench(lambda: fn(qkv), warmup=25, rep=200)
            step_ms = do_bench(lambda: fn(qkv).backward(grad), warmup=25, rep=200)
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    fn(qkv).backward(grad)
                graph_ms = do_bench(graph.replay, warmup=25, rep=200)
            except RuntimeError as exc:  # a benchmark reports what failed and goes on
                print(f"{name}: no CUDA graph: {str(exc)[:200]}", flush=True)
                graph_ms = float("nan")
            case[name] = {"eager_forward_ms": forward_ms, "eager_forward_backward_ms": step_ms,
                          "graph_forward_backward_ms": graph_ms, "errors": errors}
            print(f"{rows}x{length} {name}: eager forward {forward_ms:.3f} ms, eager forward+backward "
                  f"{step_ms:.3f} ms, graphed forward+backward {graph_ms:.3f} ms, "
                  f"errors {', '.join(f'{n} {e:.4f}' for n, e in errors.items())}", flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
