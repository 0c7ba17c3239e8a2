"""Time one attention layer's forward + backward through each SDPA backend, at ChemGPT's shapes.

Shapes (bf16, head dim 64, 16 heads): padded batches (256 molecules x 48 positions, is_causal) and
packed batches (38 rows x 256 positions, a same-molecule boolean mask AND causal). Prints ms per
call for every backend that accepts the inputs.

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


def main():
    device, result = torch.device("cuda"), {"card": torch.cuda.get_device_name(), "torch": torch.__version__}
    segments = torch.arange(256, device=device).div(36, rounding_mode="floor").expand(38, 256)
    causal = torch.ones(256, 256, dtype=torch.bool, device=device).tril()
    packed_mask = (segments[:, None, :, None] == segments[:, None, None, :]) & causal
    cases = {"padded_causal_256x48": ((256, 16, 48, 64), None), "packed_masked_38x256": ((38, 16, 256, 64), packed_mask)}
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
            except RuntimeError as exc:
                result[f"{case}/{name}"] = f"unsupported: {str(exc)[:80]}"
            print(case, name, result[f"{case}/{name}"], flush=True)
    json.dump(result, open(sys.argv[1] if len(sys.argv) > 1 else "sdpa_backends.json", "w"), indent=1)


if __name__ == "__main__":
    main()
