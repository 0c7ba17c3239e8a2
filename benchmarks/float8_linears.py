"""chemgpt_throughput.py with float8 matmuls: do Hopper's fp8 tensor cores shorten a 201M step?

At ≈200M a packed step spends about 16.7 of its 30 ms in bf16 matmuls at ~94% of the card's measured
peak (BENCHMARKS.md run 16), so fp8 (twice the datasheet rate) is the one lever left on that share.
This adds paths to chemgpt_throughput.py that swap GPT-Neo's linear layers for torchao's Float8Linear
(dynamic scaling, the forward and both backward matmuls in float8) in the packed, graphed path:

  <base>_float8             out_proj, c_fc and c_proj in float8, tensorwise scales
  <base>_float8_qkv         the same, and the fused q/k/v product as well
  <base>_float8_qkv_rowwise the same with rowwise scales (torchao's "rowwise" recipe)

with <base> = chemspec_packed_cudagraphs; every other option is chemgpt_throughput.py's. Needs torchao
(not a chemspec dependency): `bash benchmarks/device_wheels.sh --float8` puts its wheel in .whl/.
"""

import sys
from pathlib import Path

import torch
from torch import nn
from torchao.float8 import Float8LinearConfig, convert_to_float8_training
from torchao.float8.float8_linear import Float8Linear, matmul_with_hp_or_float8_args

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chemgpt_throughput as bench  # noqa: E402

from chemspec.runtime import chemgpt, gptneo_sdpa  # noqa: E402
from chemspec.runtime.molecule_attention import molecule_attention  # noqa: E402

BASE = "chemspec_packed_cudagraphs"
VARIANTS = {"_float8": (False, "tensorwise"), "_float8_qkv": (True, "tensorwise"),
            "_float8_qkv_rowwise": (True, "rowwise")}
setting: dict = {"recipe": None, "qkv": False}
plain_use_sdpa, plain_forward, plain_run = chemgpt.use_sdpa, gptneo_sdpa.SdpaSelfAttention.forward, bench.run


def in_float8(module: nn.Module, name: str) -> bool:
    """The separate q/k/v layers are never called (their weights are concatenated) and the LM head's
    vocabulary is not a multiple of 16, as fp8 matmuls need."""
    return (isinstance(module, nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0
            and not name.endswith(("q_proj", "k_proj", "v_proj")))


def use_sdpa(model):
    model = plain_use_sdpa(model)
    if setting["recipe"]:
        config = Float8LinearConfig.from_recipe_name(setting["recipe"])
        convert_to_float8_training(model.transformer, module_filter_fn=in_float8, config=config)
    return model


def forward(self, hidden_states, attention_mask=None, layer_past=None, use_cache=False, output_attentions=False,
            **kwargs):
    """SdpaSelfAttention.forward, with the fused q/k/v product in float8 for packed batches."""
    indexed = attention_mask is not None and attention_mask.dtype == torch.int32
    if not (indexed and setting["qkv"] and isinstance(self.out_proj, Float8Linear)):
        return plain_forward(self, hidden_states, attention_mask, layer_past, use_cache, output_attentions, **kwargs)
    weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
    x = hidden_states.to(torch.get_autocast_dtype("cuda")) if torch.is_autocast_enabled() else hidden_states
    projected = matmul_with_hp_or_float8_args.apply(x, weight.t(), self.out_proj.linear_mm_config,
                                                    self.out_proj.config)
    output = molecule_attention(projected, attention_mask[0, 0], self.num_heads)
    return self.resid_dropout(self.out_proj(output)), None


def run(path: str, *args):
    variant = next((v for v in VARIANTS if path == BASE + v), None)
    setting["qkv"], setting["recipe"] = VARIANTS[variant] if variant else (False, None)
    return plain_run(BASE if variant else path, *args)


if __name__ == "__main__":
    chemgpt.use_sdpa, gptneo_sdpa.SdpaSelfAttention.forward, bench.run = use_sdpa, forward, run
    bench.PATHS += tuple(BASE + v for v in VARIANTS)
    bench.main()
