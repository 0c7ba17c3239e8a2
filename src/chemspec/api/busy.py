"""Whether a `chemspec launch` or a `dvc repro` is running a compiled pipeline, which a compile must not change
under.

A running `dvc repro` read dvc.yaml when it started, and each stage checks that params.yaml still compiles to
the identity dvc.yaml gave it: a compile in between fails every later stage. DVC records the outputs each
running stage writes, with its process and command line, in .dvc/tmp/rwlock (dvc.rwlock): a stage writing
under the compiled folder belongs to its pipeline. An entry whose process is gone, or now runs another
command, was left by a dvc that was killed, and is not counted. Between two stages DVC holds its project
lock instead, which compile takes for that check. Not for its writes: rewriting the dvc.lock files of a large
grid takes seconds, and a `dvc repro` of another pipeline waits only 3 s for the lock after each stage.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

READ_TRIES = 5
"""DVC rewrites the rwlock file in place at each stage's start and end: a read that finds it half-written
tries again."""


def running(project: Path, root: Path) -> str | None:
    """What runs the pipeline compiled into `root` of the DVC project `project`, as a clause to follow
    "compiling now would change the pipeline under"; None where nothing does."""
    from chemspec.launch import LOGS
    from chemspec.launch_stop import running_launch

    if holder := running_launch(root / LOGS.parent):
        return f"the `chemspec launch` running in this project ({holder})"
    writers: dict[int, list[str]] = {}
    folder = root.resolve()
    for path, info in _writes(project).items():
        pid, command = info.get("pid"), info.get("cmd")
        inside = Path(path).resolve().is_relative_to(folder)
        if inside and isinstance(pid, int) and isinstance(command, str) and pid != os.getpid() and _runs(pid, command):
            writers.setdefault(pid, []).append(os.path.relpath(path, project))
    if not writers:
        return None
    pid, paths = next(iter(writers.items()))
    more = f" and {len(writers) - 1} other dvc process(es)" if len(writers) > 1 else ""
    return (f"the dvc process {pid} running this pipeline (writing {', '.join(sorted(paths)[:3])}"
            f"{' …' if len(paths) > 3 else ''}){more}")


def _writes(project: Path) -> dict[str, dict]:
    """The rwlock file's write entries, {absolute path: {"pid", "cmd"}}; none where there is no such file."""
    for left in reversed(range(READ_TRIES)):
        try:
            with open(project / ".dvc" / "tmp" / "rwlock", encoding="utf-8") as handle:
                entries = json.load(handle).get("write", {})
            return {path: info for path, info in entries.items() if isinstance(info, dict)}
        except OSError:
            return {}
        except (ValueError, AttributeError):
            if not left:
                return {}
            time.sleep(0.05)
    return {}


def _runs(pid: int, command: str) -> bool:
    """Whether process `pid` still runs `command`, the sys.argv DVC recorded (joined by spaces): its command
    line ends in the same arguments (the interpreter and the way dvc was started may differ)."""
    try:
        line = psutil.Process(pid).cmdline()
    except (psutil.Error, OSError):
        return False
    joined, arguments = " ".join(line), command.partition(" ")[2]
    return "dvc" in joined and (not arguments or joined.endswith(" " + arguments))


@contextmanager
def dvc_lock(project: Path) -> Iterator[str | None]:
    """DVC's project lock, held for the block, which gets None; where another process holds it past DVC's own
    wait (3 s), the block runs without it and gets that process as a clause ("the dvc process 12 (`dvc repro`)").

    A `dvc repro` holds this lock from start to end and lets go only while a stage's command runs, which the
    rwlock then shows. After each stage it waits no longer than DVC's 3 s to take it back: hold it briefly.
    Without dvc installed (a GPU node's image), or where .dvc/tmp cannot be written, no dvc can hold it here: the
    block runs unlocked."""
    try:
        from dvc.lock import LockError

        lock = _project_lock(project)
        lock.lock()
    except (ImportError, OSError):
        yield None
        return
    except LockError:
        yield _holder(project / ".dvc" / "tmp" / "lock")
        return
    try:
        yield None
    finally:
        lock.unlock()


def _project_lock(project: Path):
    """DVC's lock of `project`, of the kind its configuration names (`core.hardlink_lock` on NFS)."""
    from dvc.config import Config, ConfigError
    from dvc.lock import make_lock

    tmp = project / ".dvc" / "tmp"
    try:
        hardlink = Config(str(project / ".dvc"))["core"].get("hardlink_lock", False)
    except ConfigError:
        hardlink = False
    tmp.mkdir(exist_ok=True)
    return make_lock(str(tmp / "lock"), tmp_dir=str(tmp), hardlink_lock=hardlink)


def _holder(lockfile: Path) -> str:
    """The process holding DVC's project lock, whose pid zc.lockfile wrote into the lock file."""
    try:
        pid = int(lockfile.read_text(encoding="utf-8").split()[0])
        line = psutil.Process(pid).cmdline()
    except (OSError, ValueError, IndexError, psutil.Error):
        return "a dvc command of this project"
    after = next((line[i + 1:] for i, part in enumerate(line) if Path(part).name == "dvc"), None)
    command = shlex.join(["dvc", *after] if after is not None else line)
    return f"the dvc process {pid} (`{command if len(command) <= 80 else command[:79] + '…'}`)"
