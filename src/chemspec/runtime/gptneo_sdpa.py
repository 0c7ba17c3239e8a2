"""GPT-Neo attention through `torch.nn.functional.scaled_dot_product_attention`.

transformers 5.x builds GPT-Neo with `eager` or `flash_attention_2` attention only. Eager upcasts
queries and keys to fp32, materialises a T×T score matrix and receives a T×T float mask from the
model, so bf16 training pays for attention twice. `use_sdpa` keeps the weights and eager's results
at real tokens but computes attention with SDPA in the model's compute dtype:

- `scale=1.0`: GPT-Neo's checkpoints were trained without the 1/√d scaling of the scores.
- Local layers keep their band: a query sees the keys `window_size - 1` behind it and itself,
  read from the layer's own `bias` buffer exactly as eager reads it (bottom-right aligned, so a
  cached decode step of q queries over k keys sees keys ≤ i + k - q). Global layers compute the
  same causal rule from indices, so packed rows (runtime.packing) may be longer than the model's
  max positions; local layers cannot take such rows (ChemGPT's layers are all global).
- The model's `config._attn_implementation` names a mask function registered with transformers'
  `AttentionMaskInterface`. It returns no mask when no key that a real query can see is padding
  (no padding, or right padding only, on an empty cache): global layers then run with
  `is_causal=True` and SDPA may pick its flash kernel. Otherwise it returns sdpa's boolean
  (causal AND key-not-padding) mask, to which a layer adds its band and the diagonal, so a padding
  query with no visible key (left padding) attends to itself, where some kernels would give NaN.
  Telling right from left padding reads the mask on the host: one sync per forward that passes a
  mask (transformers' own sdpa mask does the same), and a graph break under torch.compile.

Without a KV cache (training, scoring) the query, key and value projections run as one matmul of
their weights concatenated: one [d, 3d] product and, in the backward, one input gradient instead of
three products and two sums (the parameters stay three, as checkpoints hold them).

A 4D int32 `attention_mask` [1, 1, molecules, block] is no mask but a packed batch's molecule index
(runtime.packing): attention then runs through runtime.molecule_attention, within each molecule, on
the fused projection's output (no KV cache).

Outputs at padding positions differ from eager's (both are meaningless); real positions match it.
The layer's forward, `_attn(query, key, value, attention_mask)` and its `(output, weights)` return
are the same in transformers 5.17 and 5.24; SDPA gives no weights, so `weights` is None.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from transformers import GPTNeoForCausalLM
from transformers.masking_utils import AttentionMaskInterface, prepare_padding_mask, sdpa_mask
from transformers.models.gpt_neo.modeling_gpt_neo import GPTNeoSelfAttention

from chemspec.runtime.molecule_attention import molecule_attention

MASK_NAME = "chemspec_gptneo_sdpa"


def _only_right_padding(attention_mask: torch.Tensor | None, kv_length: int, kv_offset: int) -> bool:
    padding = prepare_padding_mask(attention_mask, kv_length, kv_offset)
    return padding is None or not bool((padding[:, 1:] & ~padding[:, :-1]).any())


def causal_mask_or_none(batch_size: int, q_length: int, kv_length: int, q_offset=0, kv_offset: int = 0,
                        attention_mask: torch.Tensor | None = None, allow_is_causal_skip: bool = True,
                        **kwargs) -> torch.Tensor | None:
    """transformers' sdpa mask, or None where the causal mask alone already hides every pad key."""
    fresh = isinstance(q_offset, int) and q_offset == 0 and q_length == kv_length
    if allow_is_causal_skip and fresh and _only_right_padding(attention_mask, kv_length, kv_offset):
        return None
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, attention_mask=attention_mask,
                     allow_is_causal_skip=allow_is_causal_skip, **kwargs)


class SdpaSelfAttention(GPTNeoSelfAttention):
    """GPT-Neo self-attention whose score-softmax-value step is one SDPA call."""

    def forward(self, hidden_states, attention_mask=None, layer_past=None, use_cache=False,
                output_attentions=False, **kwargs):
        indexed = attention_mask is not None and attention_mask.dtype == torch.int32
        if layer_past is not None and indexed:
            raise ValueError("a packed batch's molecule index (int32 attention_mask) needs use_cache=False")
        if layer_past is not None:
            return super().forward(hidden_states, attention_mask, layer_past, use_cache, output_attentions, **kwargs)
        weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        projected = F.linear(hidden_states, weight)
        if indexed:
            output, weights = molecule_attention(projected, attention_mask[0, 0], self.num_heads), None
        else:
            query, key, value = (self._split_heads(x, self.num_heads, self.head_dim)
                                 for x in projected.split(self.embed_dim, dim=-1))
            output, weights = self._attn(query, key, value, attention_mask)
            output = self._merge_heads(output, self.num_heads, self.head_dim)
        return self.resid_dropout(self.out_proj(output)), weights

    def _attn(self, query, key, value, attention_mask=None):
        q_len, k_len = query.size(-2), key.size(-2)
        dropout = self.attn_dropout.p if self.training else 0.0
        if attention_mask is None and q_len == k_len and self.attention_type == "global":
            output = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, is_causal=True, scale=1.0)
            return output, None
        rows = torch.arange(q_len, device=query.device)[:, None] + (k_len - q_len)
        cols = torch.arange(k_len, device=query.device)
        if self.attention_type == "global":
            allowed = (cols <= rows)[None, None]
        else:
            allowed = self.bias[:, :, k_len - q_len: k_len, :k_len]
        if attention_mask is not None:
            keep = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
            diagonal = rows == cols
            allowed = (allowed & keep) | diagonal
        output = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed, dropout_p=dropout, scale=1.0)
        return output, None


def use_sdpa(model: GPTNeoForCausalLM) -> GPTNeoForCausalLM:
    """Switch every attention layer of `model` to SDPA in place (same parameters) and return it.

    The model and its layers get a copy of their config naming MASK_NAME, so the config it was built
    from still builds eager models.
    """
    AttentionMaskInterface.register(MASK_NAME, causal_mask_or_none)
    shared = model.config
    config = copy.deepcopy(shared)
    config._attn_implementation = MASK_NAME
    for module in model.modules():
        if getattr(module, "config", None) is shared:
            module.config = config
        if isinstance(module, GPTNeoSelfAttention):
            module.__class__ = SdpaSelfAttention
    return model
