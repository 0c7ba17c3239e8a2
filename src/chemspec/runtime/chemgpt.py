"""ChemGPT: a `transformers` GPT-Neo causal LM in a LightningModule that owns model, loss and optimiser."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset
from transformers import GPTNeoConfig, GPTNeoForCausalLM

from chemspec.runtime.molecules import BOS, EOS, PAD
from chemspec.specs.training import Optimizer, Scheduler

IGNORE = -100


def gpt_neo_config(size: dict, vocab_size: int) -> GPTNeoConfig:
    return GPTNeoConfig(
        vocab_size=vocab_size, max_position_embeddings=size["max_length"], hidden_size=size["n_embd"],
        num_layers=size["n_layer"], num_heads=size["n_head"], attention_types=[[["global"], size["n_layer"]]],
        intermediate_size=4 * size["n_embd"], embed_dropout=0.0, attention_dropout=0.0, resid_dropout=0.0,
        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)


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


def loader(tokens: np.ndarray, rows: np.ndarray, batch_size: int, shuffle: bool, seed: int,
           workers: int = 0) -> DataLoader:
    data = TensorDataset(torch.from_numpy(np.ascontiguousarray(tokens[rows])))
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=generator,
                      num_workers=workers, persistent_workers=workers > 0)


def lr_lambda(scheduler: Scheduler, total_steps: int, base_lr: float):
    floor = min(scheduler.min_lr / base_lr, 1.0)

    def factor(step: int) -> float:
        if step < scheduler.warmup_steps:
            return (step + 1) / scheduler.warmup_steps
        if scheduler.name == "cosine":
            progress = min(1.0, (step - scheduler.warmup_steps) / max(1, total_steps - scheduler.warmup_steps))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor


class ChemGPT(L.LightningModule):
    """Causal LM over token ids; records per-step training loss and per-token validation loss."""

    def __init__(self, config: GPTNeoConfig, learning_rate: float, optimizer: Optimizer,
                 scheduler: Scheduler, total_steps: int):
        super().__init__()
        self.model = GPTNeoForCausalLM(config)
        self.learning_rate = learning_rate
        self.optimizer_cfg = optimizer
        self.scheduler_cfg = scheduler
        self.total_steps = total_steps
        self.step_losses: list[list[float]] = []
        self.val_history: list[float] = []
        self.tokens_seen = 0
        self._epoch: list[torch.Tensor] = []
        self._tokens = torch.zeros((), dtype=torch.long)
        self._val = torch.zeros(2, dtype=torch.float64)

    def token_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed next-token cross-entropy and the number of predicted tokens."""
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        targets = batch["labels"][:, 1:]
        total = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.size(-1)), targets.reshape(-1),
            ignore_index=IGNORE, reduction="sum")
        return total, (targets != IGNORE).sum()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        total, count = self.token_loss(batch)
        loss = total / count
        self._epoch.append(loss.detach())
        self._tokens = self._tokens.to(count.device) + count
        return loss

    def on_train_epoch_end(self) -> None:
        if self._epoch:
            self.step_losses.append(torch.stack(self._epoch).float().cpu().tolist())
        self._epoch = []
        self.tokens_seen = int(self._tokens)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        total, count = self.token_loss(batch)
        self._val = self._val.to(total.device) + torch.stack([total.double(), count.double()])

    def on_validation_epoch_end(self) -> None:
        total, count = self.trainer.strategy.reduce(self._val, reduce_op="sum").tolist()
        self._val = torch.zeros(2, dtype=torch.float64)
        loss = total / max(count, 1.0)
        if not self.trainer.sanity_checking:
            self.val_history.append(loss)
        self.log("val_loss", loss, prog_bar=True, sync_dist=False)

    def configure_optimizers(self):
        cfg = self.optimizer_cfg
        kind = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
        fused = {"fused": True} if self.device.type == "cuda" else {}
        optimizer = kind(self.parameters(), lr=self.learning_rate, betas=cfg.betas,
                         weight_decay=cfg.weight_decay, **fused)
        if self.scheduler_cfg.name == "plateau":
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=self.scheduler_cfg.factor, patience=self.scheduler_cfg.patience,
                min_lr=self.scheduler_cfg.min_lr)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": plateau, "monitor": "val_loss"}}
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(self.scheduler_cfg, self.total_steps, self.learning_rate))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


@torch.no_grad()
def evaluate(module: ChemGPT, batches: DataLoader) -> float:
    """Per-token loss of a whole split, in float64 sums."""
    module.eval()
    device = next(module.parameters()).device
    total, count = 0.0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        s, c = module.token_loss(batch)
        total += float(s)
        count += int(c)
    return total / max(count, 1)
