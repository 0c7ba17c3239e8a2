"""Time one attention layer's forward + backward through each SDPA backend, at ChemGPT's shapes.

Shapes (bf16, head dim 64, 16 heads): padded batches (256 molecules x 48 positions, is_causal) and
packed batches of 256 MOSES molecules in rows of 256, 192, 160 or 128 positions (the row counts
`fixed_rows` gives; a same-molecule boolean mask AND causal). Prints ms per call for every backend
that accepts the inputs, and each backend's largest error against fp32 MATH (`errors`).

  python3 benchmarks/sdpa_backends.py
"""
import contextlib, json, sys, time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def timed(fn, repeats=50):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - start) / repeats


def errors(q, k, v, mask, backend) -> dict:
    """Largest error of the output and of the three input gradients against fp32 MATH, each over the
    reference's largest magnitude (a random upstream gradient, so every position counts)."""
    grad = torch.randn(q.shape, device=q.device, dtype=torch.float32)
    results = []
    for kernel, dtype in ((SDPBackend.MATH, torch.float32), (backend, torch.bfloat16)):
        inputs = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
        with sdpa_kernel([kernel]):
            out = F.scaled_dot_product_attention(*inputs, attn_mask=mask, is_causal=mask is None, scale=1.0)
        out.backward(grad.to(dtype))
        results.append([out.float(), *(t.grad.float() for t in inputs)])
    return {name: round(float((b - a).abs().max() / a.abs().max()), 5)
            for name, a, b in zip(("out", "dq", "dk", "dv"), *results)}


def main():
    device, result = torch.device("cuda"), {"card": torch.cuda.get_device_name(), "torch": torch.__version__}
    cases = {"padded_causal_256x48": ((256, 16, 48, 64), None)}
    for rows, length in ((40, 256), (53, 192), (64, 160), (82, 128)):  # MOSES batches of 256 (fixed_rows)
        segments = torch.arange(length, device=device).div(36, rounding_mode="floor").expand(rows, length)
        causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        mask = (segments[:, None, :, None] == segments[:, None, None, :]) & causal
        cases[f"packed_masked_{rows}x{length}"] = ((rows, 16, length, 64), mask)
    for case, (shape, mask) in cases.items():
        q, k, v = (torch.randn(shape, device=device, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                        SDPBackend.MATH, None):
            def step():
                with sdpa_kernel([backend]) if backend else contextlib.nullcontext():
                    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, scale=1.0)
                out.sum().backward()
            name = backend.name if backend else "default"
            try:
                result[f"{case}/{name}"] = round(timed(step), 4)
                if backend is not None:
                    result[f"{case}/{name}/error"] = errors(q, k, v, mask, backend)
            except RuntimeError as exc:
                result[f"{case}/{name}"] = f"unsupported: {str(exc)[:80]}"
            print(case, name, result[f"{case}/{name}"], result.get(f"{case}/{name}/error", ""), flush=True)
    json.dump(result, open(sys.argv[1] if len(sys.argv) > 1 else "sdpa_backends.json", "w"), indent=1)


if __name__ == "__main__":
    main()
