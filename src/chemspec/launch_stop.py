"""How a launch stops on a signal.

SIGTERM and SIGHUP to the launcher stop it as Ctrl-C does. Its running jobs are then cancelled and, for
the local executor, waited for with their dvc and stage processes, so that none is left holding dvc's
locks (orphaned, they would run on, record nothing and make the next launch fail with "... is busy").
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable

from chemspec.errors import Interrupted
from chemspec.stage_job import STOP_WAIT_S


class _Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where a Ctrl-C would be, so that the same cancellation runs."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def interrupted(name: str, what: str) -> str:
    return (f"launch stopped by {name}: {what}; cells that finished are recorded in dvc.lock, rerun "
            "`chemspec launch` to go on")


@contextlib.contextmanager
def stopped_by_signals():
    """SIGTERM and SIGHUP stop the launch as Ctrl-C does (its jobs cancelled, their processes waited for),
    where they are not ignored (nohup); any of them ends as Interrupted."""
    def stop(signum: int, frame: object) -> None:
        raise _Signalled(signal.Signals(signum).name)

    kinds = [s for s in (signal.SIGTERM, signal.SIGHUP) if signal.getsignal(s) is not signal.SIG_IGN]
    previous = {s: signal.signal(s, stop) for s in kinds}
    try:
        yield
    except KeyboardInterrupt as exc:
        raise Interrupted(interrupted(getattr(exc, "name", "SIGINT"), "its running jobs were cancelled")) from None
    finally:
        for kind, handler in previous.items():
            signal.signal(kind, handler)


def cancel_jobs(kind: str, jobs: list, say: Callable[[str], None]) -> None:
    """Cancel `jobs`. Local ones stop as dvc's Ctrl-C stops them: SIGINT to each job's dvc process group
    (dvc ignores it while the stage runs, the stage stops, dvc records nothing and releases its locks), then
    the jobs end of themselves and are waited for, their dvc and stage processes included; what still runs
    after STOP_WAIT_S is cancelled through submitit. SLURM's are cancelled with scancel."""
    if kind != "local":
        for job in jobs:
            job.cancel(check=False)
        return
    import psutil

    processes = psutil.Process().children(recursive=True)
    for process in processes:
        with contextlib.suppress(OSError):
            if os.getpgid(process.pid) == process.pid != os.getpgrp():
                os.killpg(process.pid, signal.SIGINT)
    if jobs:
        say(f"  stopping {len(jobs)} running job{'' if len(jobs) == 1 else 's'}; waiting for their processes "
            f"(at most {STOP_WAIT_S} s)")
    deadline = time.monotonic() + STOP_WAIT_S
    while (left := [p for p in processes if _running(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        for job in jobs:
            job.cancel(check=False)
        say(f"  still running after {STOP_WAIT_S} s: pids {', '.join(str(p.pid) for p in left)}")


def _running(process) -> bool:
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
