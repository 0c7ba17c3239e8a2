"""Lightning's mixed precisions and the autocast dtype each runs under, shared by every family's
evaluation so that test errors are computed as validation computed them."""

from __future__ import annotations

import torch

MIXED = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
