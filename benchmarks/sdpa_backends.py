"""Time one attention layer's forward + backward through each SDPA backend, at ChemGPT's shapes.

Shapes (bf16, head dim 64, 16 heads): padded batches (256 molecules x 48 positions, is_causal) and
packed batches of 256 MOSES molecules in rows of 256, 192, 160 or 128 positions (the row counts
`fixed_rows` gives; a same-molecule boolean mask AND causal). Prints ms per call for every backend
that accepts the inputs, and each backend's largest error against fp32 MATH (`errors`). FlexAttention
(compiled) runs the packed cases from a block mask of the same rule at 128- and 64-position blocks,
and the 256-position rows also end to end as one row of the whole batch (`flat`); the time to build
the block mask from segment ids is timed apart (`build`).

  python3 benchmarks/sdpa_backends.py
"""
import contextlib, json, sys, time
from functools import partial

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


def flex_cases(result: dict, device) -> None:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    flex = torch.compile(flex_attention, dynamic=False)
    for rows, length in ((40, 256), (1, 40 * 256)):
        segments = torch.arange(length, device=device).div(36, rounding_mode="floor").expand(rows, length)
        causal = torch.ones(length, length, dtype=torch.bool, device=device).tril() if rows > 1 else None
        dense = (segments[:, None, :, None] == segments[:, None, None, :]) & causal if rows > 1 else None

        def same_molecule(b, h, q, k):
            return (segments[b, q] == segments[b, k]) & (q >= k)

        q, k, v = (torch.randn((rows, 16, length, 64), device=device, dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        for block, tiles in ((128, None), (64, None), (64, 64), (64, 32)):
            name = f"flex_{'flat' if rows == 1 else 'packed'}_{rows}x{length}/block{block}_tiles{tiles}"
            build = partial(create_block_mask, same_molecule, rows, None, length, length, device=device,
                            BLOCK_SIZE=block, _compile=True)
            options = {f"BLOCK_{x}": tiles for x in ("M", "N", "M1", "N1", "M2", "N2")} if tiles else None
            try:
                call = partial(flex, q, k, v, block_mask=build(), scale=1.0, kernel_options=options)
                result[f"{name}/build"] = round(timed(build), 4)
                result[name] = round(timed(lambda: call().sum().backward()), 4)
            except Exception as exc:  # noqa: BLE001 - a benchmark reports what failed and goes on
                result[name] = f"failed: {str(exc)[:300]}"
                print(name, result[name], flush=True)
                continue
            if rows > 1:
                with torch.no_grad():
                    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=dense, scale=1.0)
                    result[f"{name}/error_out"] = round(float((call().float() - ref).abs().max() / ref.abs().max()), 5)
            print(name, result[name], result.get(f"{name}/build"), result.get(f"{name}/error_out"), flush=True)


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
    flex_cases(result, device)
    json.dump(result, open(sys.argv[1] if len(sys.argv) > 1 else "sdpa_backends.json", "w"), indent=1)


if __name__ == "__main__":
    main()
