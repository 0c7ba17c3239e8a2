"""GPT-Neo's eager attention with its scores truly in float32, for the Trainer path `hf_fp32_scores`.

GPT-Neo's `_attn` casts query and key to float32 "to avoid overflow", but under bf16 autocast the
matmul of two float32 tensors runs in bf16 all the same: its unscaled scores reach the softmax
rounded to bf16. Inside `fp32_scores()` the whole `_attn` runs with autocast off: float32 scores and
softmax, then GPT-Neo's own cast of the probabilities to the values' dtype.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def fp32_scores():
    from transformers.models.gpt_neo.modeling_gpt_neo import GPTNeoSelfAttention

    attn = GPTNeoSelfAttention._attn

    def unrounded(self, query, *args, **kwargs):
        with torch.autocast(query.device.type, enabled=False):
            return attn(self, query, *args, **kwargs)

    GPTNeoSelfAttention._attn = unrounded
    try:
        yield
    finally:
        GPTNeoSelfAttention._attn = attn
