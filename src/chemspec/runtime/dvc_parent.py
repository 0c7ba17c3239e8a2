"""The dvc process that runs a stage, so that a training stage whose dvc was killed alone stops.

`dvc repro` runs a stage's command and records its outputs when it ends. Killed by itself (`kill <pid>`,
the out-of-memory killer), dvc leaves the stage running on, unrecorded, and a `dvc repro` started then
would train the same cell beside it, both writing one resume checkpoint. So a training stage looks at
every batch's end whether the dvc above it still runs, and if not checkpoints and stops as on SIGTERM
(runtime.resume): the next `dvc repro` resumes the cell. A stage started by hand has no dvc above it.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Process:
    """A process by its pid and start time (a pid alone may be taken again by another); picklable, as
    Lightning's callbacks may need to be, where psutil's handle is not."""

    pid: int
    started: float

    def gone(self) -> bool:
        """Whether it has ended (a zombie that its parent has not reaped yet has)."""
        try:
            process = psutil.Process(self.pid)
            return process.create_time() != self.started or process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    def kill(self) -> None:
        if not self.gone():
            os.kill(self.pid, signal.SIGKILL)


def dvc_ancestor() -> Process | None:
    """The nearest process above this one that is dvc (`dvc …`, its script under a Python, or `python -m
    dvc …`); None when there is none."""
    try:
        for process in psutil.Process().parents():
            if _is_dvc(process.cmdline()):
                return Process(process.pid, process.create_time())
    except psutil.Error:  # a parent that ended, or whose command line this user may not read
        return None
    return None


def _is_dvc(args: list[str]) -> bool:
    return any(os.path.basename(arg) == "dvc" for arg in args[:2]) or any(
        flag == "-m" and module == "dvc" for flag, module in zip(args, args[1:]))
