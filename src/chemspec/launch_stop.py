"""How a launch stops: on a signal, and when one of its jobs is killed.

SIGTERM and SIGHUP to the launcher stop it as Ctrl-C does. Its running jobs are then cancelled and, for
the local executor, waited for with their dvc and stage processes, so that none is left holding dvc's
locks (orphaned, they would run on, record nothing and make the next launch fail with "... is busy").
dvc rewrites a dvc.lock in place; a job killed while its dvc writes one leaves it cut short, so each
wave's dvc.lock files are put back if the wave broke them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from chemspec.errors import Interrupted, LaunchError
from chemspec.launch_jobs import scancel
from chemspec.stage_job import STOP_WAIT_S
from chemspec.words import count


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
    where they are not ignored (nohup) and the launch runs in the main thread (the only one that may set
    handlers); any of them ends as Interrupted."""
    def stop(signum: int, frame: object) -> None:
        raise _Signalled(signal.Signals(signum).name)

    main = threading.current_thread() is threading.main_thread()
    kinds = [s for s in (signal.SIGTERM, signal.SIGHUP) if main and signal.getsignal(s) is not signal.SIG_IGN]
    previous = {s: signal.signal(s, stop) for s in kinds}
    try:
        yield
    except KeyboardInterrupt as exc:
        raise Interrupted(interrupted(getattr(exc, "name", "SIGINT"), "its running jobs were cancelled")) from None
    finally:
        for kind, handler in previous.items():
            signal.signal(kind, handler)


def running_launch(folder: Path) -> str | None:
    """Who holds `folder`/launch.lock (pid, host, start), where a launch holds it; the lock is tried shared,
    for a moment, and nothing is written."""
    import fcntl

    try:
        with open(folder / "launch.lock") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return handle.read().strip() or "its pid unknown"
    except OSError:  # no lock file, or no locks here
        return None
    return None


LAUNCH_ENV = "CHEMSPEC_LAUNCH"
"""Set in the environment of what a launch starts (its jobs, its dvc repro): stages that run beside it. Any other
stage of the project is refused while the launch holds its lock (`stage_beside_launch`)."""


@contextlib.contextmanager
def one_launch(folder: Path):
    """Hold `folder`/launch.lock for the launch: a second launch in the project is refused, naming the first,
    before it runs anything (beside a running launch, its dvc would fail on locks with advice to delete
    them), and so is a stage it did not start. Where the filesystem takes no locks, launches are not checked."""
    import socket

    with open(folder / "launch.lock", "a+") as handle:
        try:
            _lock_soon(handle)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "its pid unknown"
            raise LaunchError(f"another `chemspec launch` is running in this project ({holder}); wait for it to "
                              "end, or stop it (Ctrl-C in its terminal, or `kill -INT <pid>`), then rerun") from None
        except OSError:
            pass  # no locks here (some network filesystems): nothing to check with
        else:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
            handle.flush()
        before = os.environ.get(LAUNCH_ENV)
        os.environ[LAUNCH_ENV] = str(os.getpid())
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(LAUNCH_ENV, None)
            else:
                os.environ[LAUNCH_ENV] = before


def stage_beside_launch(root: Path) -> str | None:
    """Why a pipeline stage must not run now in the project at `root`: a `chemspec launch` runs its cells,
    and this stage is none of its own (a `dvc repro` beside it trains the same cells twice, and their jobs
    then fail on dvc's locks). None otherwise."""
    from chemspec.launch import LOGS

    holder = running_launch(root / LOGS.parent)
    if not holder or holder.startswith(f"pid {os.environ.get(LAUNCH_ENV)} "):
        return None
    return (f"a `chemspec launch` is running this project's cells ({holder}); a `dvc repro` or stage beside it "
            "would train the same cells twice: wait for the launch to end, or stop it (Ctrl-C in its terminal, "
            "or `kill -INT <pid>`), then rerun")


def _lock_soon(handle, tries: int = 20) -> None:
    """Lock `handle` for this launch; a dry run's look (`running_launch`) holds it shared for a moment, so
    it is tried for up to a second before another launch is taken to hold it."""
    import fcntl

    for left in reversed(range(tries)):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if not left:
                raise
            time.sleep(0.05)


def cancel_jobs(kind: str, jobs: list, say: Callable[[str], None]) -> None:
    """Cancel `jobs`. Local ones stop as dvc's Ctrl-C stops them: SIGINT to each job's dvc process group
    (dvc ignores it while the stage runs, the stage stops, dvc records nothing and releases its locks), then
    the jobs end of themselves and are waited for, their dvc and stage processes included; what still runs
    after STOP_WAIT_S is cancelled through submitit. SLURM's are cancelled by one scancel of their arrays (a
    call a task kept a controller busy for a minute on grids of hundreds, and a second Ctrl-C broke it off)."""
    if kind != "local":
        if arrays := sorted({str(job.job_id).split("_")[0] for job in jobs}):
            scancel(arrays, "the running jobs", say, unless="; cancel them yourself")
        return
    import psutil

    processes = psutil.Process().children(recursive=True)
    for process in processes:
        with contextlib.suppress(OSError):
            if os.getpgid(process.pid) == process.pid != os.getpgrp():
                os.killpg(process.pid, signal.SIGINT)
    if jobs:
        say(f"  stopping {count(len(jobs), 'running job')}; waiting for their processes "
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


def _lock_files(root: Path) -> list[Path]:
    return [path for path in [root / "dvc.lock", *sorted((root / "pipelines").glob("*/dvc.lock"))] if path.is_file()]


def _stage_names(text: bytes) -> set[str] | None:
    """The stages a dvc.lock records; None if it does not parse as one."""
    import yaml

    from chemspec.runtime.io import load_yaml

    try:
        document = load_yaml(text)
    except yaml.YAMLError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("stages", {}), dict):
        return None
    return set(document.get("stages", {}))


class LockGuard:
    """The last whole copy of each dvc.lock seen in a wave: one that parses, records every stage the one
    before it did, and reads the same twice, SETTLE_S apart (a dvc rewriting the file meanwhile, which
    truncates it and writes it anew within milliseconds, would change it). `seen()` looks for a new copy;
    the launcher calls it as each job ends, when that job's dvc has written its record."""

    SETTLE_S = 0.05

    def __init__(self, root: Path):
        self.root = root
        self.before = {path: path.read_bytes() for path in _lock_files(root)}
        self.whole = {path: (text, _stage_names(text)) for path, text in self.before.items()}

    def seen(self) -> None:
        for path in _lock_files(self.root):
            text = _read(path)
            last, names = self.whole.get(path, (None, None))
            if text is None or text == last:
                continue
            found = _stage_names(text)
            if found is None or (names is not None and not names <= found):
                continue
            time.sleep(self.SETTLE_S)
            if _read(path) == text:
                self.whole[path] = (text, found)

    def put_back(self, say: Callable[[str], None]) -> None:
        for path in set(_lock_files(self.root)) - set(self.whole):  # never seen whole: nothing to put back
            if _stage_names(path.read_bytes()) is None:
                path.unlink()
                say(f"  {path.relative_to(self.root)}, first written in this wave, was left cut short (a job was "
                    "killed while dvc wrote it); removed: the wave's cells recorded there run again, or come from "
                    "the run cache")
        for path, (text, names) in self.whole.items():
            now = _read(path)
            parsed = _stage_names(now) if now is not None else None
            if names is None or (parsed is not None and names <= parsed):
                continue
            tmp = path.with_name(f".{path.name}.restore")
            tmp.write_bytes(text)
            os.replace(tmp, path)
            when = "before this wave" if text == self.before.get(path) else "when the launch last saw it whole"
            say(f"  {path.relative_to(self.root)} was left cut short (a job was killed while dvc wrote it); put "
                f"back as it was {when}: cells that finished since run again, or come from the run cache")


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def guard_lock_files(root: Path, say: Callable[[str], None], after_errors: bool = True):
    """dvc rewrites a dvc.lock in place (truncate, then write): a job killed meanwhile leaves it cut short.
    A wave only adds to them, so a dvc.lock that no longer parses, or lost a stage, after the wave is put
    back to its last whole copy (LockGuard), and one the wave created that never parsed is removed. After an
    error, only with `after_errors`: cancelled SLURM jobs may still be writing when the launch stops."""
    guard = LockGuard(root)
    try:
        yield guard
    except BaseException:
        if after_errors:
            guard.put_back(say)
        raise
    guard.put_back(say)
