"""The SDPA attention path of GPT-Neo gives eager's logits and greedy generations."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import GPTNeoConfig, GPTNeoForCausalLM
from transformers.models.gpt_neo.modeling_gpt_neo import GPTNeoSelfAttention

from chemspec.runtime.gptneo_sdpa import SdpaSelfAttention, causal_mask_or_none, use_sdpa

PAD = 0
GLOBAL = [[["global"], 2]]
MIXED = [[["global", "local"], 2]]


def pair(attention_types, dtype=torch.float32) -> tuple[GPTNeoForCausalLM, GPTNeoForCausalLM]:
    """An eager model and an SDPA copy with the same weights."""
    torch.manual_seed(0)
    config = GPTNeoConfig(vocab_size=30, max_position_embeddings=64, hidden_size=32, num_heads=4,
                          num_layers=sum(n * len(kinds) for kinds, n in attention_types),
                          attention_types=attention_types, window_size=4, intermediate_size=64,
                          embed_dropout=0.0, attention_dropout=0.0, resid_dropout=0.0,
                          bos_token_id=1, eos_token_id=2, pad_token_id=PAD)
    eager = GPTNeoForCausalLM(config).to(dtype).eval()
    return eager, use_sdpa(copy.deepcopy(eager))


def batch(lengths: list[int], width: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 30, (len(lengths), width), generator=generator)
    columns = torch.arange(width)
    mask = torch.stack([columns >= width - n if left else columns < n for n in lengths]).long()
    return ids.masked_fill(mask == 0, PAD), mask


def logits(model, ids, mask=None) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("types", [GLOBAL, MIXED], ids=["global", "local"])
def test_logits_match_eager_without_a_mask(types):
    eager, sdpa = pair(types)
    ids, _ = batch([20, 20, 20], 20, left=False)
    torch.testing.assert_close(logits(sdpa, ids), logits(eager, ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("types", [GLOBAL, MIXED], ids=["global", "local"])
@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
def test_logits_match_eager_at_real_tokens_with_padding(types, left):
    eager, sdpa = pair(types)
    ids, mask = batch([20, 13, 5], 20, left)
    got, want = logits(sdpa, ids, mask), logits(eager, ids, mask)
    real = mask.bool()
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
def test_training_gradients_match_eager(left):
    eager, sdpa = pair(MIXED)
    eager.train(), sdpa.train()
    ids, mask = batch([20, 13, 5], 20, left)
    predicted_from_padding = torch.nn.functional.pad(mask[:, :-1], (1, 0)) == 0
    labels = ids.masked_fill((mask == 0) | predicted_from_padding, -100)
    for model in (eager, sdpa):
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    for (name, want), got in zip(eager.named_parameters(), sdpa.parameters()):
        torch.testing.assert_close(got.grad, want.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_right_padding_needs_no_mask_but_left_padding_does():
    _, right = batch([6, 3], 6, left=False)
    _, left = batch([6, 3], 6, left=True)
    sizes = {"batch_size": 2, "q_length": 6, "kv_length": 6}
    assert causal_mask_or_none(**sizes, attention_mask=right.bool()) is None
    assert causal_mask_or_none(**sizes) is None
    masked = causal_mask_or_none(**sizes, attention_mask=left.bool())
    assert masked.shape == (2, 1, 6, 6) and not masked[1, 0, 5, :3].any()


@pytest.mark.parametrize("types", [GLOBAL, MIXED], ids=["global", "local"])
@pytest.mark.parametrize("left", [False, True], ids=["unpadded", "left-padded"])
def test_greedy_generation_matches_eager_with_a_cache(types, left):
    eager, sdpa = pair(types)
    ids, mask = batch([5, 3] if left else [5, 5], 5, left=True)
    settings = {"max_new_tokens": 16, "do_sample": False, "use_cache": True, "pad_token_id": PAD}
    with torch.no_grad():
        want = eager.generate(input_ids=ids, attention_mask=mask, **settings)
        got = sdpa.generate(input_ids=ids, attention_mask=mask, **settings)
    assert got.shape[1] == ids.shape[1] + 16
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_bf16_runs_without_upcast_and_stays_near_fp32_eager():
    eager, sdpa = pair(MIXED)
    ids, mask = batch([20, 13, 5], 20, left=True)
    got = logits(sdpa.to(torch.bfloat16), ids, mask)
    real = mask.bool()
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got[real].float(), logits(eager, ids, mask)[real], atol=0.05, rtol=0.05)


def test_every_layer_is_swapped_and_the_original_config_still_builds_eager_models():
    eager, _ = pair(MIXED)
    sdpa = use_sdpa(GPTNeoForCausalLM(eager.config))
    assert all(isinstance(block.attn.attention, SdpaSelfAttention) for block in sdpa.transformer.h)
    assert sdpa.state_dict().keys() == eager.state_dict().keys()
    assert eager.config._attn_implementation == "eager"
    assert GPTNeoForCausalLM(eager.config).config._attn_implementation == "eager"


def score_dtypes(model, ids, monkeypatch) -> set[torch.dtype]:
    """The dtypes of every attention-score matmul (the ones fed float32 query and key) in a forward
    pass of eager GPT-Neo under bf16 autocast."""
    real, seen = torch.matmul, set()

    def spy(a, b):
        out = real(a, b)
        if a.dtype == torch.float32:
            seen.add(out.dtype)
        return out

    monkeypatch.setattr(torch, "matmul", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits(model, ids)
    monkeypatch.setattr(torch, "matmul", real)
    return seen


def test_eager_scores_are_bf16_under_autocast_and_fp32_in_the_benchmarks_peer_diagnostic(monkeypatch):
    """BENCHMARKS.md run 13: the Trainer's GPT-Neo casts query and key to float32, yet autocast rounds
    its scores to bf16; benchmarks/gptneo_fp32_scores.py keeps them float32, then puts _attn back."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gptneo_fp32_scores.py"
    spec = importlib.util.spec_from_file_location("gptneo_fp32_scores", path)
    diagnostic = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diagnostic)
    eager, _ = pair(MIXED)
    ids, _ = batch([20, 20], 20, left=False)
    stock = GPTNeoSelfAttention._attn
    assert score_dtypes(eager, ids, monkeypatch) == {torch.bfloat16}
    with diagnostic.fp32_scores():
        assert score_dtypes(eager, ids, monkeypatch) == {torch.float32}
    assert GPTNeoSelfAttention._attn is stock
