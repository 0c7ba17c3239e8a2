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
from pathlib import Path

import psutil


PROC = Path("/proc/self/stat").exists()
"""Linux: a process's start is read from /proc, in clock ticks since boot, which a step of the wall clock
(NTP, a VM resumed) does not move as it moves psutil's create_time; elsewhere psutil's, compared loosely."""


@dataclass(frozen=True)
class Process:
    """A process by its pid and start (a pid alone may be taken again by another); picklable, as
    Lightning's callbacks may need to be, where psutil's handle is not."""

    pid: int
    started: float | None

    def gone(self) -> bool:
        """Whether it has ended (a zombie that its parent has not reaped yet has); one whose start this user
        may not read is taken to run on."""
        state = _state(self.pid)
        if state is None or state[1]:
            return True
        if state[0] is None or self.started is None:
            return False
        return abs(state[0] - self.started) > (0 if PROC else 5.0)

    def kill(self) -> None:
        if not self.gone():
            os.kill(self.pid, signal.SIGKILL)


def _state(pid: int) -> tuple[float | None, bool] | None:
    """(start, zombie) of process `pid`; None if there is none."""
    if PROC:
        try:
            fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
            return float(fields[19]), fields[0] == b"Z"
        except FileNotFoundError:
            return None
        except (OSError, IndexError, ValueError):
            return None, False
    try:
        process = psutil.Process(pid)
        return process.create_time(), process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return None
    except psutil.Error:
        return None, False


def dvc_ancestor() -> Process | None:
    """The nearest process above this one that is dvc (`dvc …`, its script under a Python, or `python -m
    dvc …`); None when there is none."""
    try:
        for process in psutil.Process().parents():
            if _is_dvc(process.cmdline()):
                state = _state(process.pid)
                return Process(process.pid, state[0] if state else None)
    except psutil.Error:  # a parent that ended, or whose command line this user may not read
        return None
    return None


def _is_dvc(args: list[str]) -> bool:
    python = bool(args) and os.path.basename(args[0]).startswith("python")
    return any(os.path.basename(arg) == "dvc" for arg in args[:2]) or (
        python and ["-m", "dvc"] in (args[1:3], args[2:4]))
