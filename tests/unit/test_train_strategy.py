"""The train stage's Lightning strategy: DDP with large gradient buckets only for several devices."""

from __future__ import annotations

import pytest
from lightning.pytorch.strategies import DDPStrategy

from chemspec.runtime.train import DDP_BUCKET_MB, strategy
from chemspec.specs.training import Training


@pytest.mark.parametrize(("devices", "accelerator", "ddp"),
                         [(2, "cpu", True), (1, "cpu", False), ("auto", "cpu", False), (1, "auto", False)])
def test_several_devices_reduce_gradients_in_large_bucket_views(devices, accelerator, ddp):
    chosen = strategy(Training(max_epochs=1, devices=devices, accelerator=accelerator))
    assert isinstance(chosen, DDPStrategy) == ddp
    if ddp:  # Lightning keeps the arguments it hands DistributedDataParallel here
        assert chosen._ddp_kwargs == {"bucket_cap_mb": DDP_BUCKET_MB, "gradient_as_bucket_view": True}
    else:
        assert chosen == "auto"
