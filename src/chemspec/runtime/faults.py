"""Fault injection for tests of divergence and resumption, off unless CHEMSPEC_FAULT is set.

CHEMSPEC_FAULT=<stage>@<key>:<kind>@<step> with kind `nan` (that step's loss becomes NaN; `nan-rank<r>`:
on DDP rank r alone, as one rank's batch can overflow), `kill`
(SIGKILL after that step), `term` (SIGTERM to this process after that step), `term-all` (SIGTERM to this
process and its loader workers, as SLURM preemption signals every process of a job step), `int` (SIGINT),
`int-all` (SIGINT to this process and its loader workers, as a terminal's Ctrl-C reaches them all) or
`kill-dvc` (SIGKILL to the dvc that runs this stage, and no other process).
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time

import lightning as L

from chemspec.runtime.dvc_parent import dvc_ancestor

VARIABLE = "CHEMSPEC_FAULT"
SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "term-all": signal.SIGTERM, "int": signal.SIGINT,
           "int-all": signal.SIGINT, "kill-dvc": signal.SIGKILL}


def fault_for(cell_name: str) -> tuple[str, int] | None:
    target, _, fault = os.environ.get(VARIABLE, "").rpartition(":")
    kind, _, step = fault.partition("@")
    if target != cell_name or not (kind in SIGNALS or re.fullmatch(r"nan(-rank\d+)?", kind)) or not step.isdigit():
        return None
    return kind, int(step)


def nan_at(fault: tuple[str, int] | None) -> tuple[int, int | None] | None:
    """(step, rank) whose loss a `nan` fault makes NaN; rank None: every rank."""
    if fault is None or not fault[0].startswith("nan"):
        return None
    rank = fault[0].removeprefix("nan").removeprefix("-rank")
    return fault[1], int(rank) if rank else None


class Faults(L.Callback):
    """Sends the configured signal once the given optimiser step has completed."""

    def __init__(self, fault: tuple[str, int] | None):
        self.fault = fault

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args) -> None:
        if self.fault and self.fault[0] in SIGNALS and trainer.global_step == self.fault[1]:
            kind = self.fault[0]
            if kind.endswith("-all"):  # from another process, as slurmstepd sends it: workers tell their parent apart
                name = SIGNALS[kind].name
                workers = [str(child.pid) for child in multiprocessing.active_children()]
                print(f"fault: {name} from another process to this one and {len(workers)} loader workers",
                      file=sys.stderr, flush=True)
                subprocess.run(["kill", "-s", name.removeprefix("SIG"), str(os.getpid()), *workers], check=True)
            elif kind == "kill-dvc":  # then wait until the stage's next look (resume.LOOK_EVERY_S) finds it gone
                dvc = dvc_ancestor()
                if dvc is None:
                    raise RuntimeError("fault kill-dvc: no dvc runs this stage")
                dvc.kill()
                while not dvc.gone():
                    time.sleep(0.01)
                time.sleep(1.1)
            else:
                os.kill(os.getpid(), SIGNALS[kind])
