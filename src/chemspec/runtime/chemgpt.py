"""ChemGPT: a `transformers` GPT-Neo causal LM in a LightningModule that owns model, loss and optimiser.

Speed without changing the model: attention runs through SDPA (runtime.gptneo_sdpa: same logits as
eager), the tanh-GELU is transformers' fused `gelu_pytorch_tanh` (the formula of GPT-Neo's
`gelu_new`), training builds no KV cache, and batches are right-padded, so the causal mask alone
hides padding and no mask is passed (the flash kernel stays eligible). Packed batches
(runtime.packing) pass position ids, and on a GPU their molecule index, so that attention runs
within each molecule (runtime.molecule_attention); elsewhere a same-molecule mask, which SDPA's
cuDNN kernel takes first (MASKED_KERNELS). Divergence is checked every `CHECK_EVERY` steps (and before each
validation) rather than every step, so the GPU is not made to wait for each loss; the steps run
after a non-finite loss are not recorded.
"""

from __future__ import annotations

import contextlib
import math
from functools import partial

import lightning as L
import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import DataLoader, TensorDataset
from transformers import GPTNeoConfig, GPTNeoForCausalLM

from chemspec.runtime import molecule_attention
from chemspec.runtime.gptneo_sdpa import use_sdpa
from chemspec.runtime.molecules import BOS, EOS, PAD
from chemspec.runtime.packing import IGNORE, attention_mask, fixed_rows, pack
from chemspec.runtime.precision import MIXED
from chemspec.runtime.preempt import PreemptibleLoader, leave_sigterm_to_parent
from chemspec.runtime.resume import EpochSampler
from chemspec.specs.training import Optimizer, Scheduler

CHECK_EVERY = 25
# Masked SDPA's order of kernels (SDPA's own first choice is the memory-efficient one); kernels that
# cannot run are skipped. cuDNN's is faster per layer on MOSES's rows of 256 and equal end to end
# (BENCHMARKS.md, runs 6, 8 and 9). torch.compile fixes the kernel when it first traces GPT-Neo in a
# process and does not retrace when this changes.
MASKED_KERNELS = [SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION,
                  SDPBackend.MATH]
GPU_LOADER_WORKERS = 2


def gpt_neo_config(size: dict, vocab_size: int) -> GPTNeoConfig:
    return GPTNeoConfig(
        vocab_size=vocab_size, max_position_embeddings=size["max_length"], hidden_size=size["n_embd"],
        num_layers=size["n_layer"], num_heads=size["n_head"], attention_types=[[["global"], size["n_layer"]]],
        intermediate_size=4 * size["n_embd"], activation_function="gelu_pytorch_tanh", embed_dropout=0.0,
        attention_dropout=0.0, resid_dropout=0.0, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)


def non_embedding_parameters(model: GPTNeoForCausalLM) -> int:
    embeddings = model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
    return sum(p.numel() for p in model.parameters()) - embeddings


def collate(rows: list[tuple[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack token rows and trim the padding columns that no row in the batch needs."""
    ids = torch.stack([r[0] for r in rows]).long()
    mask = ids != PAD
    width = int(mask.sum(1).max())
    ids, mask = ids[:, :width], mask[:, :width]
    labels = ids.masked_fill(~mask, IGNORE)
    return {"input_ids": ids, "attention_mask": mask.long(), "labels": labels}


def collate_packed(rows: list[tuple[torch.Tensor]], length: int, count: int, slots: int) -> dict[str, torch.Tensor]:
    """The molecules of `rows` packed into `count` rows of `length` positions (runtime.packing)."""
    return pack(torch.stack([r[0] for r in rows]), length, count, slots)


def loader_workers(setting: int | None, cuda: bool) -> int:
    """training.num_workers, or its default: in-process collation starved the GPU in 2 of 3 runs
    (BENCHMARKS.md run 11); on a CPU, worker processes would take cores from training."""
    return setting if setting is not None else (GPU_LOADER_WORKERS if cuda else 0)


def loader(tokens: np.ndarray, rows: np.ndarray, batch_size: int, shuffle: bool, seed: int,
           workers: int = 0, bucket_batches: int | None = None, distributed: bool = False,
           pack_length: int | None = None, pin_memory: bool = False) -> DataLoader:
    """Batches of `rows`; `bucket_batches` groups rows of similar length, `pack_length` packs each
    batch into a fixed number of rows of that many positions, `distributed` gives each DDP rank its
    share (see EpochSampler), `pin_memory` lets the copy to the GPU run alongside its work."""
    data = TensorDataset(torch.from_numpy(np.ascontiguousarray(tokens[rows])))
    lengths = (data.tensors[0] != PAD).sum(1)
    sampler = EpochSampler(len(data), seed, shuffle, lengths if bucket_batches else None, batch_size,
                           bucket_batches, distributed)
    batch = collate
    if pack_length:
        count = fixed_rows(lengths.numpy(), batch_size, pack_length)
        batch = partial(collate_packed, length=pack_length, count=count, slots=batch_size)
    return PreemptibleLoader(data, batch_size=batch_size, sampler=sampler, collate_fn=batch, num_workers=workers,
                             persistent_workers=workers > 0, pin_memory=pin_memory,
                             worker_init_fn=leave_sigterm_to_parent)


def lr_lambda(scheduler: Scheduler, total_steps: int, base_lr: float):
    floor = min(scheduler.min_lr / base_lr, 1.0)

    warmup = scheduler.warmup(total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if scheduler.name == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor


PARAM_GROUPS = ["weight matrices and embeddings: decayed", "biases and LayerNorm gains: not decayed"]
"""The optimiser's parameter groups, as nanoGPT and Hugging Face's Trainer form them. A resume checkpoint
records them: one written with other groups (a single group before 2026-12-05) is not resumed."""


class ChemGPT(L.LightningModule):
    """Causal LM over token ids; records per-step training loss and per-token validation loss."""

    def __init__(self, config: GPTNeoConfig, learning_rate: float, optimizer: Optimizer,
                 scheduler: Scheduler, total_steps: int, nan_at: tuple[int, int | None] | None = None,
                 compile: bool | str = False, activation_checkpointing: bool = False):
        super().__init__()
        self.model = use_sdpa(GPTNeoForCausalLM(config))
        if activation_checkpointing:
            if hasattr(self.model, "activation_checkpointing_enable"):  # gradient_checkpointing_enable: its old name
                self.model.activation_checkpointing_enable({"use_reentrant": False})
            else:
                self.model.gradient_checkpointing_enable({"use_reentrant": False})
        if compile == "cuda-graphs":  # batches of one shape (packing): one graph
            self.model.compile(mode="reduce-overhead", dynamic=False)
        elif compile:
            self.model.compile(dynamic=True)
        self.learning_rate = learning_rate
        self.optimizer_cfg = optimizer
        self.scheduler_cfg = scheduler
        self.total_steps = total_steps
        self.nan_at = nan_at
        self.losses: list[list[torch.Tensor | float]] = []
        self.val_history: list[float] = []
        self.lr_history: list[float] = []
        self.diverged: dict | None = None
        self.plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self._plateau_state: dict | None = None
        self._tokens = torch.zeros((), dtype=torch.long)
        self._val = torch.zeros(2, dtype=torch.float64)

    @property
    def step_losses(self) -> list[list[float]]:
        return [[float(v) for v in epoch] for epoch in self.losses]

    @property
    def tokens_seen(self) -> int:
        return int(self._tokens)

    def token_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed next-token cross-entropy and the number of predicted tokens."""
        inputs, kernels = {"input_ids": batch["input_ids"]}, contextlib.nullcontext()
        config = self.model.config
        if "segments" in batch and molecule_attention.supported(
                batch["input_ids"].device, config.hidden_size // config.num_heads, batch["molecules"].shape[1]):
            inputs.update(position_ids=batch["position_ids"], attention_mask=batch["molecules"][None, None])
        elif "segments" in batch:
            inputs.update(position_ids=batch["position_ids"], attention_mask=attention_mask(batch["segments"]))
            kernels = sdpa_kernel(MASKED_KERNELS, set_priority=True)
        with kernels:
            logits = self.model(**inputs, use_cache=False).logits
        targets = batch["labels"][:, 1:]
        total = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.size(-1)), targets.reshape(-1),
            ignore_index=IGNORE, reduction="sum")
        return total, (targets != IGNORE).sum()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        total, count = self.token_loss(batch)
        loss = total / count
        step, rank = self.nan_at or (None, None)
        if step == self.global_step and rank in (None, self.global_rank):
            loss = loss * float("nan")
        while len(self.losses) <= self.current_epoch:
            self.losses.append([])
        self.losses[self.current_epoch].append(loss.detach())
        self._tokens = self._tokens.to(count.device) + count
        if (self.global_step + 1) % CHECK_EVERY == 0:
            self._check_finite()
        return loss

    def on_train_epoch_end(self) -> None:
        self._check_finite()

    def on_validation_epoch_start(self) -> None:
        self._check_finite()

    def _check_finite(self) -> None:
        """Find the first non-finite loss since the last check on any DDP rank; cut every rank's log there
        and stop training. The ranks agree on the step, so none stops while another waits in a collective."""
        if self.diverged is not None or not self.losses:
            return
        recent = self.losses[-1][-CHECK_EVERY:]
        values = [torch.as_tensor(v, dtype=torch.float32, device=self.device) for v in recent]
        finite = torch.isfinite(torch.stack(values)).tolist() if values else []
        local = torch.tensor(len(recent) if all(finite) else finite.index(False), device=self.device)
        first = int(self.trainer.strategy.reduce(local, reduce_op="min"))
        if first == len(recent):
            return
        bad = len(self.losses[-1]) - len(recent) + first
        earlier = sum(len(epoch) for epoch in self.losses[:-1])
        self.losses[-1] = self.losses[-1][:bad]
        kept = [float(v) for epoch in self.losses for v in epoch]
        self.diverged = {"step": earlier + bad, "last_finite_loss": kept[-1] if kept else None}
        self.trainer.should_stop = True

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Every DDP rank saves together and rank 0 writes: keep all ranks' tokens, restored to rank 0.
        tokens = self.trainer.strategy.reduce(self._tokens.to(self.device).double(), reduce_op="sum")
        checkpoint["chemspec"] = {"losses": self.step_losses, "val_history": self.val_history,
                                  "lr_history": self.lr_history, "tokens": int(tokens),
                                  "plateau": self.plateau.state_dict() if self.plateau else None}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["chemspec"]
        self.losses, self.val_history = state["losses"], state["val_history"]
        self.lr_history, self._plateau_state = state.get("lr_history", []), state.get("plateau")
        self._tokens = torch.tensor(state["tokens"] if self.global_rank == 0 else 0, dtype=torch.long)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        total, count = self.token_loss(batch)
        self._val = self._val.to(total.device) + torch.stack([total.double(), count.double()])

    def on_validation_epoch_end(self) -> None:
        total, count = self.trainer.strategy.reduce(self._val, reduce_op="sum").tolist()
        self._val = torch.zeros(2, dtype=torch.float64)
        loss = total / max(count, 1.0)
        if not self.trainer.sanity_checking and self.diverged is None:
            self.val_history.append(loss)
            if self.trainer.state.fn == "fit":
                if self.plateau is not None:
                    self.plateau.step(loss)
                self.lr_history.append(self.optimizers().param_groups[0]["lr"])
        self.log("val_loss", loss, prog_bar=True, sync_dist=False)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip here: Lightning refuses to clip for a fused optimiser, which without fp16 loss scaling
        steps with the very gradients this clips (by total norm, or by value when asked)."""
        if not gradient_clip_val:
            return
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(self.parameters(), gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)

    def configure_optimizers(self):
        cfg = self.optimizer_cfg
        kind = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
        # Under fp16 loss scaling a fused optimiser unscales inside its step, after any clipping.
        unscaled = self.trainer.precision != "16-mixed" or not self.trainer.gradient_clip_val
        fused = {"fused": True} if self.device.type == "cuda" and unscaled else {}
        groups = [{"params": [p for p in self.parameters() if p.ndim >= 2], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in self.parameters() if p.ndim < 2], "weight_decay": 0.0}]
        optimizer = kind(groups, lr=self.learning_rate, betas=cfg.betas, **fused)
        if self.scheduler_cfg.name == "plateau":
            # Stepped after each validation here, not by Lightning: Lightning steps it after the epoch-end
            # checkpoint, and not at all in a resumed epoch, so a resumed run's rate would lag.
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=self.scheduler_cfg.factor, patience=self.scheduler_cfg.patience,
                min_lr=self.scheduler_cfg.min_lr)
            if self._plateau_state is not None:
                self.plateau.load_state_dict(self._plateau_state)
            return optimizer
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(self.scheduler_cfg, self.total_steps, self.learning_rate))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


@torch.no_grad()
def evaluate(module: ChemGPT, batches: DataLoader, device: torch.device | None = None,
             precision: str = "32-true") -> float:
    """Per-token loss of a whole split, in float64 sums, on `device` (Lightning leaves a trained module
    on the CPU) and under the autocast of a mixed `precision`, as validation ran."""
    device = device or next(module.parameters()).device
    module.to(device).eval()
    dtype = MIXED.get(precision)
    total, count = 0.0, 0
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            s, c = module.token_loss(batch)
            total += float(s)
            count += int(c)
    return total / max(count, 1)
