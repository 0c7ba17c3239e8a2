"""The body of one `chemspec launch` job, and how the launcher runs dvc: in a process group of its own,
so that the signals a scheduler or a user sends reach dvc and the stage under it as each needs.

- SLURM signals every process of a job step: SIGUSR2 90 s before the time limit (submitit's
  `--signal=USR2@90`), SIGTERM at the limit or on preemption. dvc has no SIGUSR2 handler and would die
  of it, leaving the stage running on unrecorded and its lock entries behind, so dvc starts with
  SIGUSR2 ignored. An ignored signal stays ignored across exec: the stage command inherits that,
  `chemspec run` installs its own handler over it (it prints its stacks), and SIGTERM keeps its default,
  so the time limit's SIGTERM still checkpoints a training cell.
- submitit's own SIGUSR2 handler ends a job whose function cannot checkpoint itself at once (90 s
  early, killing the stage before its checkpoint). A job here stops its stage on SIGUSR2 as a Ctrl-C
  does: dvc's group gets SIGINT, dvc releases its locks, a training cell checkpoints at the end of its
  batch, and the job ends as stopped, 90 s before the limit. Waiting for the limit's SIGTERM would
  leave the checkpoint SLURM's KillWait (30 s by default) before SIGKILL, too short for a large
  model's optimiser state; a job killed before it returns is one submitit finds with no result. The
  next `chemspec launch` resumes.
- SIGINT or SIGHUP to the job (Ctrl-C, a closed terminal) goes on to dvc's group as SIGINT, dvc's own
  Ctrl-C, which is also how a launch cancels its local jobs: dvc ignores it while the stage command
  runs, the stage stops, and dvc records nothing and releases its locks. A job's SIGTERM goes on as
  SIGTERM, as the scheduler sends it. The job then waits for the group to end, at most STOP_WAIT_S,
  and kills what is left, so no dvc outlives its job holding locks.
- SLURM_NTASKS (and its older name SLURM_NPROCS) describes the job's single task. Lightning reads it as
  "SLURM started this cell's ranks" (SLURMEnvironment) and starts no second rank of a
  `training.devices: 2` cell, which then trains on one GPU. A job's stage starts its own ranks, so dvc
  runs without those two; SLURM's other variables stay (job id, node list). A user's own sbatch script
  that runs `chemspec run` under srun with ntasks-per-node = devices keeps SLURMEnvironment.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping

DVC = (sys.executable, "-m", "dvc")
STOP_WAIT_S = 120  # a stopped stage's checkpoint and dvc's clean-up, then the group is killed
PER_TASK = ("SLURM_NTASKS", "SLURM_NPROCS")
PASSED_ON = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOPPED = re.compile(r"stopped: the job received (SIG[A-Z0-9]+)")
"""What a job stopped by a signal raises, as the launcher finds it in the error submitit hands back."""
ENDED_BY_SLURM = re.compile(r"has not produced any output \(state: (TIMEOUT|NODE_FAIL)")
"""What submitit says of a job that SLURM killed before it returned (past KillWait or GraceTime, a node lost):
stopped too, its cell resumed from its last checkpoint by the next launch."""


def job_command(stage: str) -> list[str]:
    return [*DVC, "--wait-for-lock", "repro", "-s", stage]


def stage_environment(env: Mapping[str, str | None], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """dvc's environment in a job: `base` (this process's) without SLURM's task count, then `env`
    (None removes a variable). PATH leads to this Python's scripts, where dvc finds the stages' `chemspec`
    also in a job that sbatch --export=NONE started, or a launch from a virtual environment not activated."""
    environ = {key: value for key, value in (os.environ if base is None else base).items() if key not in PER_TASK}
    environ["PYTHONUNBUFFERED"] = "1"
    scripts, path = os.path.dirname(sys.executable), environ.get("PATH", "")
    if scripts not in path.split(os.pathsep):
        environ["PATH"] = os.pathsep.join(filter(None, (scripts, path)))
    for key, value in env.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return environ


class _PassOn:
    """Signal handlers of a process waiting for a dvc group: each signal kind is passed on once."""

    def __init__(self, term_as: signal.Signals, on_usr2: Callable[[], None] | None):
        self.term_as, self.on_usr2 = term_as, on_usr2
        self.group: int | None = None
        self.received: signal.Signals | None = None
        self.sent: set[signal.Signals] = set()
        self.timer: threading.Timer | None = None

    def handle(self, signum: int, frame: object) -> None:
        if signum == signal.SIGUSR2:
            self.on_usr2()
        self.received = self.received or signal.Signals(signum)
        self.pass_on(self._as(signum))

    def _as(self, signum: int) -> signal.Signals:
        """What a signal received goes on to the group as: SIGTERM as `term_as`, the others (SIGUSR2 too: the time
        limit near) as SIGINT, dvc's Ctrl-C, which stops the stage and releases dvc's locks."""
        return self.term_as if signum == signal.SIGTERM else signal.SIGINT

    def started(self, group: int) -> None:
        self.group = group
        if self.received is not None:
            self.pass_on(self._as(self.received))

    def pass_on(self, signum: signal.Signals) -> None:
        if self.group is None or signum in self.sent:
            return
        self.sent.add(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.group, signum)
        if self.timer is None:
            self.timer = threading.Timer(STOP_WAIT_S, self.kill)
            self.timer.daemon = True
            self.timer.start()

    def kill(self) -> None:
        cause = self.received.name if self.received else "an error"
        print(f"chemspec launch: process group {self.group} still runs {STOP_WAIT_S} s after {cause}; killing it",
              file=sys.stderr, flush=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.group, signal.SIGKILL)


def run_group(command: list[str], *, cwd: str | os.PathLike, env: Mapping[str, str] | None = None,
              log=None, on_line: Callable[[bytes], None] | None = None, term_as: signal.Signals = signal.SIGINT,
              on_usr2: Callable[[], None] | None = None) -> tuple[int, signal.Signals | None]:
    """Run `command` in a new process group with SIGUSR2 ignored: its output to `log` (a file) or, line by
    line, to `on_line`. SIGINT, SIGHUP and SIGTERM that reach this process meanwhile go on to the group
    (SIGTERM as `term_as`, the others as SIGINT) and this waits for it; with `on_usr2`, SIGUSR2 calls it and
    goes on as SIGINT.
    Signal handlers are only installed from the main thread; an ignored SIGHUP or SIGTERM stays ignored
    (nohup). Returns the exit code and the signal that stopped the run, if one did."""
    passer = _PassOn(term_as, on_usr2)
    main = threading.current_thread() is threading.main_thread()
    # SIGINT is how a launch stops its jobs: handled even where inherited as ignored (a launcher started
    # with `&` from a script), so that dvc, once exec resets the handler, starts with its default.
    kinds = [s for s in PASSED_ON if main and (s == signal.SIGINT or signal.getsignal(s) is not signal.SIG_IGN)]
    previous = {s: signal.signal(s, passer.handle) for s in kinds}
    try:
        # Set in this process around the fork, so the child starts with it: no preexec_fn needed.
        usr2 = signal.signal(signal.SIGUSR2, signal.SIG_IGN) if main else None
        try:
            process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE if on_line else log,
                                       stderr=subprocess.STDOUT if log is not None else None, process_group=0)
        finally:
            if main:
                signal.signal(signal.SIGUSR2, passer.handle if on_usr2 else signal.SIG_DFL if usr2 is None else usr2)
                if on_usr2:
                    previous[signal.SIGUSR2] = usr2
        passer.started(process.pid)
        try:
            if on_line is not None:
                with process.stdout:
                    for line in process.stdout:
                        on_line(line)
            code = process.wait()
        except BaseException:
            passer.pass_on(signal.SIGINT)  # no group left running unwatched; the timer bounds the wait
            process.wait()
            raise
    finally:
        for kind, handler in previous.items():
            signal.signal(kind, signal.SIG_DFL if handler is None else handler)  # None: a handler set from C
        if passer.timer is not None:
            passer.timer.cancel()
    return code, passer.received


def _note_usr2() -> None:
    # os.write: a print from a signal handler can interrupt a print of the main thread and fail as reentrant.
    os.write(sys.stdout.fileno(), f"chemspec launch: SIGUSR2 at {time.strftime('%H:%M:%S')} (SLURM's warning, 90 s "
             "before the time limit); stopping the stage, which checkpoints a training cell for the next `chemspec "
             "launch`\n".encode())


def run_stage_job(root: str, stage: str, env: dict[str, str | None]) -> dict:
    """The body of one job: reproduce one stage. dvc's output goes to the job's log; the times at which
    dvc starts the stage command and records its outputs are kept (`ran`; None when restored from cache)."""
    command = job_command(stage)
    start, ran = time.time(), [None, None]
    print(f"chemspec launch: {stage} starts: {shlex.join(command)}", flush=True)

    def echo(line: bytes) -> None:
        marker = 0 if line.startswith(b"Running stage ") else 1 if line.startswith(b"Updating lock file") else None
        if marker is not None and ran[marker] is None:
            ran[marker] = time.time()
        sys.stdout.buffer.write(line)
        sys.stdout.flush()

    code, stopped = run_group(command, cwd=root, env=stage_environment(env), on_line=echo, term_as=signal.SIGTERM,
                              on_usr2=_note_usr2)
    end = time.time()
    print(f"chemspec launch: {stage} exited {code} after {end - start:.1f} s", flush=True)
    if stopped is not None:
        why = ("SLURM's warning before the time limit" if stopped == signal.SIGUSR2 else
               "a cancel, the time limit or preemption")
        raise RuntimeError(f"`{shlex.join(command)}` stopped: the job received {stopped.name} ({why}); a training "
                           "cell checkpointed then resumes at the next `chemspec launch`")
    if code != 0:
        raise RuntimeError(f"`{shlex.join(command)}` exited {code}")
    return {"stage": stage, "start": start, "end": end, "ran": ran if None not in ran else None,
            "host": os.uname().nodename}
