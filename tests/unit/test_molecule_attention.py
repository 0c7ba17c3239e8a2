"""Attention within each molecule of a packed batch (Triton kernels; on a CPU, Triton's interpreter)
gives SDPA's outputs and gradients with the dense same-molecule mask, and the model's logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transformers import GPTNeoForCausalLM

from chemspec.runtime import molecule_attention as kernels
from chemspec.runtime.chemgpt import ChemGPT, gpt_neo_config, loader
from chemspec.runtime.gptneo_sdpa import use_sdpa
from chemspec.runtime.molecule_attention import molecule_attention, supported
from chemspec.runtime.molecules import BOS, EOS, PAD
from chemspec.runtime.packing import attention_mask, pack
from chemspec.specs.training import Optimizer, Scheduler

WIDTH = 20
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _batch_tokens(molecules: int, width: int = WIDTH, seed: int = 0) -> torch.Tensor:
    """Random molecules, the first as long as a row of `width` allows."""
    rng = np.random.default_rng(seed)
    tokens = torch.full((molecules, width), PAD, dtype=torch.long)
    for r in range(molecules):
        n = width if r == 0 else int(rng.integers(3, width + 1))
        tokens[r, :n] = torch.tensor([BOS, *rng.integers(4, 30, n - 2), EOS])
    return tokens


def _batch(molecules: int = 9, length: int = 32, slots: int | None = None, width: int = WIDTH) -> dict:
    return {k: v.to(DEVICE) for k, v in pack(_batch_tokens(molecules, width), length, slots=slots).items()}


def _qkv(rows: int, length: int, heads: int = 2, dim: int = 16, contiguous: bool = True) -> torch.Tensor:
    """Projected queries, keys and values [rows, length, 3 × heads × dim], as GPT-Neo's fused
    projection gives them (or, not contiguous, with positions as the innermost dimension)."""
    generator = torch.Generator().manual_seed(1)
    if contiguous:
        return torch.randn(rows, length, 3 * heads * dim, generator=generator).to(DEVICE).requires_grad_()
    return torch.randn(rows, 3 * heads * dim, length, generator=generator).to(DEVICE).transpose(1, 2).requires_grad_()


def _reference(qkv, segments, heads: int = 2):
    rows, length, _ = qkv.shape
    q, k, v = (x.unflatten(-1, (heads, -1)).transpose(1, 2) for x in qkv.chunk(3, dim=-1))
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask(segments) & causal, scale=1.0)
    return out.transpose(1, 2).flatten(2)


@pytest.mark.parametrize("width,contiguous", [(20, True), (32, True), (20, False)],
                         ids=["block-32", "molecule-fills-its-block", "strided-projection"])
def test_outputs_and_gradients_match_sdpa_with_the_dense_mask(width, contiguous):
    batch = _batch(slots=12, width=width)  # three empty slots, as in a run's short last batch
    rows, length = batch["input_ids"].shape
    qkv = _qkv(rows, length, contiguous=contiguous)
    real = (batch["segments"] > 0)[:, :, None]
    weight = torch.randn(rows, length, qkv.shape[-1] // 3, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    got = molecule_attention(qkv, batch["molecules"], 2)
    assert got.shape == (rows, length, qkv.shape[-1] // 3)
    (grad,) = torch.autograd.grad((got * weight * real).sum(), qkv)
    want = _reference(qkv, batch["segments"])
    (expected,) = torch.autograd.grad((want * weight * real).sum(), qkv)
    torch.testing.assert_close(got * real, want * real, atol=1e-5, rtol=1e-5)
    assert not got[~real.expand_as(got)].any(), "positions without a molecule get zeros"
    torch.testing.assert_close(grad * real, expected * real, atol=1e-5, rtol=1e-5)
    assert not grad[~real.expand_as(grad)].any(), "no gradient where no molecule is"


def test_half_precision_stays_within_its_rounding_of_float32():
    """Probabilities and score gradients meet the values, keys and queries in the inputs' dtype (as
    in flash attention), scores stay float32: fp16 lands within fp16's rounding of the fp32 result.
    (Triton's interpreter has no bf16 products; on a GPU this runs the compiled fp16 kernels.)"""
    batch = _batch(slots=10)
    rows, length = batch["input_ids"].shape
    qkv = _qkv(rows, length).detach()
    real = (batch["segments"] > 0)[:, :, None]
    results = []
    for dtype in (torch.float32, torch.float16):
        inputs = qkv.to(dtype).detach().requires_grad_()
        out = molecule_attention(inputs, batch["molecules"], 2)
        (out.float() * real).sum().backward()
        results.append((out.float() * real, inputs.grad.float() * real))
    (out32, grad32), (out16, grad16) = results
    torch.testing.assert_close(out16, out32, atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(grad16, grad32, atol=3e-2, rtol=1e-2)


def test_gpt_neo_logits_match_the_dense_mask_path_at_real_tokens():
    torch.manual_seed(0)
    config = gpt_neo_config({"n_layer": 2, "n_embd": 32, "n_head": 2, "max_length": WIDTH}, 30)
    model = use_sdpa(GPTNeoForCausalLM(config)).to(DEVICE).eval()
    batch = _batch(molecules=7, length=48)
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    with torch.no_grad():
        got = model(**inputs, attention_mask=batch["molecules"][None, None]).logits
        want = model(**inputs, attention_mask=attention_mask(batch["segments"])).logits
    real = batch["segments"] > 0
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-5)


def test_chemgpt_trains_packed_batches_through_the_kernels_where_supported(monkeypatch):
    torch.manual_seed(0)
    config = gpt_neo_config({"n_layer": 2, "n_embd": 32, "n_head": 2, "max_length": WIDTH}, 30)
    module = ChemGPT(config, 1e-3, Optimizer(), Scheduler(), total_steps=1).to(DEVICE)
    tokens = np.stack([row.numpy() for row in _batch_tokens(24)])
    batch = next(iter(loader(tokens, np.arange(len(tokens)), 32, False, 0, pack_length=48)))
    batch = {k: v.to(DEVICE) for k, v in batch.items()}
    calls = []
    results = []
    for fast in (False, True):
        monkeypatch.setattr(kernels, "supported", lambda *args, fast=fast: calls.append(fast) or fast)
        module.zero_grad()
        total, count = module.token_loss(batch)
        (total / count).backward()
        results.append((total.detach(), {n: p.grad.clone() for n, p in module.named_parameters()}))
    assert calls == [False, True]
    (dense, g_dense), (fast, g_fast) = results
    torch.testing.assert_close(fast, dense, rtol=1e-5, atol=1e-4)
    for name, grad in g_dense.items():
        torch.testing.assert_close(g_fast[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_training_takes_the_kernels_only_where_they_run(monkeypatch):
    cuda, capability = torch.device("cuda"), [(9, 0)]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: capability[0])
    assert supported(cuda, 64, 64) and supported(cuda, 32, 128)
    assert not supported(torch.device("cpu"), 64, 64)
    assert not supported(cuda, 40, 64), "heads of 40 dims: no tl.arange"
    assert not supported(cuda, 8, 64), "tl.dot needs 16"
    assert not supported(cuda, 64, 256), "scores of 256 x 256 in one program"
    capability[0] = (7, 5)
    assert not supported(cuda, 64, 64), "no bf16 products before compute capability 8"


def test_a_molecule_index_with_a_kv_cache_is_refused():
    config = gpt_neo_config({"n_layer": 1, "n_embd": 32, "n_head": 2, "max_length": WIDTH}, 30)
    model = use_sdpa(GPTNeoForCausalLM(config)).to(DEVICE)
    batch = _batch(molecules=3)
    with pytest.raises(ValueError, match=r"molecule index \(int32 attention_mask\) needs use_cache=False"):
        model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
              attention_mask=batch["molecules"][None, None], use_cache=True)


def test_an_index_or_projection_of_another_shape_or_type_is_refused():
    qkv, index = _qkv(1, 16), torch.zeros(2, 16, dtype=torch.int32, device=DEVICE)
    refused = r"index must be int32 \[molecules, power of two >= 16\], not torch.int64 \[2, 16\]"
    with pytest.raises(ValueError, match=refused):
        molecule_attention(qkv, index.long(), 2)
    with pytest.raises(ValueError, match=r"not torch.int32 \[2, 24\]"):
        molecule_attention(qkv, torch.zeros(2, 24, dtype=torch.int32, device=DEVICE), 2)
    wrong_heads = r"qkv must be \[rows, length, 3 × heads × head dim\], not \[1, 16, 96\] for 5 heads"
    with pytest.raises(ValueError, match=wrong_heads):
        molecule_attention(qkv, index, 5)
    with pytest.raises(ValueError, match=r"heads of 8 dims: the kernels take \(16, 32, 64, 128\)"):
        molecule_attention(qkv, index, 4)
