"""Resumable training: a killed cell continues from its last checkpoint and ends bitwise where an
uninterrupted run would have (on CPU, with deterministic settings).

Three pieces make that hold. The shuffle order of an epoch is a pure function of (seed, epoch), so
it does not depend on what ran before. A callback counts the batches trained in the current epoch
and stores the count in each checkpoint; after a restore the sampler skips exactly those samples.
Checkpoints are written to a temporary name and renamed, at every `interval` epochs and when
SIGTERM arrives (SLURM preemption), or a first Ctrl-C: training stops at the end of the next training
batch, or of validation if that runs first (DDP ranks at a step they agree on, runtime.preempt), and
the callback saves there. The checkpoint lives beside the cell's outputs, not among them, because DVC deletes a
stage's outputs before running it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import shutil
import signal
import sys
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
import torch
from torch.utils.data import Sampler

from chemspec.errors import RunError
from chemspec.runtime.dvc_parent import dvc_ancestor
from chemspec.runtime.io import ignored_folder
from chemspec.runtime.preempt import AgreedStop

CHECKPOINT = "last.ckpt"
LOOK_EVERY_S = 1.0  # how often a training stage looks whether its dvc still runs (50 us a look)


def bucketed(order: torch.Tensor, lengths: torch.Tensor, batch_size: int, window: int,
             generator: torch.Generator) -> torch.Tensor:
    """`order` regrouped so that each run of `batch_size` rows holds rows of similar length: sorted by
    length within windows of `window` batches, cut into batches, the full batches shuffled, a short
    last batch kept last (so a DataLoader of that batch size cuts exactly these batches)."""
    batches: list[torch.Tensor] = []
    for piece in order.split(batch_size * window):
        batches += list(piece[torch.argsort(lengths[piece], stable=True)].split(batch_size))
    short = [batches.pop()] if len(batches[-1]) < batch_size else []
    return torch.cat([batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()] + short)


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochSampler(Sampler[int]):
    """A permutation per epoch from a generator seeded by (seed, epoch); can skip a resumed prefix.

    With `lengths` and `window`, the permutation is length-bucketed for batches of `batch_size`.
    `distributed`: under torch.distributed each rank takes every world-th row of the epoch's order,
    and a resumed rank skips a prefix of its own share, so that every rank resumes where it stopped.
    A shuffled (training) order is padded by wrapping round to a multiple of the world size, as
    DistributedSampler does, so that every rank takes as many steps; an unshuffled (evaluation) one
    is not, so that every row is scored once, unless it has fewer rows than there are ranks (a rank
    without a batch would skip the evaluation's collective and leave the others waiting)."""

    def __init__(self, size: int, seed: int, shuffle: bool = True, lengths: torch.Tensor | None = None,
                 batch_size: int = 1, window: int | None = None, distributed: bool = False):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.lengths, self.batch_size, self.window = lengths, batch_size, window
        self.distributed = distributed
        self.epoch = 0
        self._skip: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, epoch: int, samples: int) -> None:
        """Every iteration of `epoch` starts after `samples`, however many times a loader begins it."""
        self._skip = (epoch, samples)

    def __iter__(self):
        order = self.order(self.epoch)
        if self._skip is not None and self._skip[0] == self.epoch:
            order = order[self._skip[1]:]
        return iter(order.tolist())

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's whole order of `epoch`, the skip aside; batches cut it into runs of the batch size."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=generator)
            if self.window is not None and self.size:
                order = bucketed(order, self.lengths, self.batch_size, self.window, generator)
        else:
            order = torch.arange(self.size)
        rank, world = _rank_and_world() if self.distributed else (0, 1)
        if world > 1 and len(order):
            order = (order.repeat(world) if self._padded(world) else order)[:len(self) * world][rank::world]
        return order

    def _padded(self, world: int) -> bool:
        return self.shuffle or self.size < world

    def __len__(self) -> int:
        rank, world = _rank_and_world() if self.distributed else (0, 1)
        return -(-self.size // world) if self._padded(world) else len(range(rank, self.size, world))


class Resume(L.Callback):
    """Counts trained batches per epoch, writes atomic checkpoints, and restores the sampler position."""

    def __init__(self, folder: Path, sampler: EpochSampler, batch_size: int, interval: int, tag: dict):
        self.folder, self.sampler, self.batch_size, self.interval = folder, sampler, batch_size, interval
        self.tag = tag
        self.batches = 0
        self.elapsed_before = 0.0
        self._started = time.perf_counter()
        self._epoch = 0
        self._restored_epoch: int | None = None
        self._stop_requested = False
        self._dvc, self._looked = dvc_ancestor(), 0.0
        self._request: Callable[[int, object], None] = self._note
        self._ctrl_c: Callable | int | None = None  # SIGINT's handler before fit, while fit has its own
        self.stopped_by = "SIGTERM"
        """What a stop at a checkpoint was asked by, for the error that ends the cell."""

    @property
    def path(self) -> Path:
        return self.folder / CHECKPOINT

    def resume_from(self) -> str | None:
        """The checkpoint to resume from, if one exists for this very cell and configuration."""
        if not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=False).get("callbacks", {})
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as exc:
            return self._set_aside(exc)
        except RuntimeError as exc:
            if "PytorchStreamReader" in str(exc):  # torch's words for a cut or corrupt zip
                return self._set_aside(exc)
            raise RunError(f"resume: {self.path} could not be loaded ({exc}); it is kept: free memory or run where "
                           "there is more, then re-run `dvc repro`") from None
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # torch's zip reader's words for a file cut short after its first records
                return self._set_aside(exc)
            raise RunError(f"resume: {self.path} could not be read ({exc.strerror or exc}); it is kept: re-run "
                           "`dvc repro` once the file system answers") from None
        state = next((v for k, v in saved.items() if k.startswith("Resume")), {})
        if state.get("tag") != self.tag:
            print(f"resume: {self.path} was written for another configuration of this cell (other data or split, "
                  "another number of devices, or another chemspec version); training starts over", file=sys.stderr,
                  flush=True)
            shutil.rmtree(self.folder, ignore_errors=True)
            return None
        if rank_zero_only.rank == 0:  # Lightning's reading of the launcher's rank variables
            epoch, batches = self._position(state.get("epoch", 0), state.get("batches", 0))
            where = f"after batch {batches} of it" if batches else "from its start"
            print(f"resume: continuing from {self.path}, epoch {epoch + 1}, {where}", file=sys.stderr, flush=True)
        # The sampler skips what the checkpoint trained (load_state_dict), so this does resume exactly.
        warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended")
        return str(self.path)

    def _set_aside(self, exc: BaseException) -> None:
        aside = self.folder.with_name(f"{self.folder.name}.damaged")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(self.folder, aside)
        print(f"resume: {self.path} cannot be read ({type(exc).__name__}: {exc}); moved to {aside} (delete it once "
              "you have looked); training starts over", file=sys.stderr, flush=True)

    def elapsed(self) -> float:
        """Training seconds of this cell, the runs before a resume included."""
        return self.elapsed_before + time.perf_counter() - self._started

    def state_dict(self) -> dict:
        return {"batches": self.batches, "epoch": self._epoch, "tag": self.tag, "elapsed_s": self.elapsed()}

    def _position(self, epoch: int, batches: int) -> tuple[int, int]:
        """(epoch, batches trained in it) where a checkpoint resumes: the next epoch's start after its last batch."""
        return (epoch + 1, 0) if batches * self.batch_size >= len(self.sampler) else (epoch, batches)

    def load_state_dict(self, state: dict) -> None:
        self.elapsed_before = state.get("elapsed_s", 0.0) - (time.perf_counter() - self._started)
        epoch, self.batches = self._position(state["epoch"], state["batches"])
        self._epoch = self._restored_epoch = epoch  # Lightning calls no epoch-start hook in a resumed epoch
        self.sampler.set_epoch(epoch)  # Lightning starts loader workers fetching before it sets the epoch
        self.sampler.skip(epoch, self.batches * self.batch_size)

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._epoch = trainer.current_epoch
        if self._restored_epoch != trainer.current_epoch:
            self.batches = 0
        self._restored_epoch = None

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args) -> None:
        if self._dvc is not None and time.monotonic() - self._looked >= LOOK_EVERY_S:
            self._looked = time.monotonic()
            if self._dvc.gone():
                print(f"resume: the dvc that ran this stage (pid {self._dvc.pid}) is gone, killed alone; "
                      "checkpointing and stopping, so that the next `dvc repro` resumes this cell rather than "
                      "training it beside this process", file=sys.stderr, flush=True)
                self._dvc, self.stopped_by = None, "the death of its dvc"
                self._request(signal.SIGTERM, None)
        self.batches += 1
        trainer._signal_connector.received_sigterm |= self._stop_requested

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """A stop requested by now waits for validation's end: Lightning would stop inside it, and a
        resumed run would validate the rest of that epoch over other batches."""
        connector = trainer._signal_connector
        self._stop_requested |= connector.received_sigterm
        connector.received_sigterm = False

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        trainer._signal_connector.received_sigterm |= self._stop_requested

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.interval == 0:
            self.save(trainer)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """SIGTERM only notes the request, passed to Lightning at the end of a training batch or of
        validation; under DDP, AgreedStop stops all ranks at one step."""
        connector = trainer._signal_connector
        note = self._note
        if trainer.world_size > 1:  # a signal that came before training started joins the agreement
            stop = AgreedStop(trainer, requested=connector.received_sigterm)
            connector.received_sigterm = False
            trainer.fit_loop.epoch_loop._broadcast_sigterm_tensor = stop
            note = stop.note
        self._request = note
        signal.signal(signal.SIGTERM, note)
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job's, which nothing interrupts
            self._ctrl_c = signal.signal(signal.SIGINT, self._interrupt)

    def _note(self, signum: int, frame: object) -> None:
        self._stop_requested = True

    def _interrupt(self, signum: int, frame: object) -> None:
        """A first Ctrl-C stops as SIGTERM does, at the end of a training batch with a checkpoint of it; a second
        stops at once, as Ctrl-C would have."""
        if self.stopped_by == "SIGINT":
            self._let_ctrl_c_through()
            raise KeyboardInterrupt
        self.stopped_by = "SIGINT"
        if rank_zero_only.rank == 0:
            print("interrupt: stopping at the end of this training batch with a checkpoint of it (Ctrl-C again "
                  "stops at once, losing this epoch's progress)", file=sys.stderr, flush=True)
        self._request(signal.SIGTERM, frame)

    def _let_ctrl_c_through(self) -> None:
        if self._ctrl_c is not None:
            signal.signal(signal.SIGINT, self._ctrl_c)
            self._ctrl_c = None

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._let_ctrl_c_through()

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self._let_ctrl_c_through()
        if type(exception).__name__ == "SIGTERMException":
            self.save(trainer)

    def save(self, trainer: L.Trainer) -> None:
        ignored_folder(self.folder)  # a checkpoint to resume from, never committed
        tmp = self.folder / f".{CHECKPOINT}.tmp"
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            with open(tmp, "rb") as handle:  # on disk before it takes the name a resume trusts
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)


def discard(folder: str | Path) -> None:
    """Delete a cell's resume folder, once its results are written."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(folder)
