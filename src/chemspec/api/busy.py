"""Whether a `chemspec launch` or a `dvc repro` is running in a project, which a compile must not change under.

A running `dvc repro` read dvc.yaml when it started, and each stage checks that params.yaml still compiles to
the identity dvc.yaml gave it: a compile in between fails every later stage. DVC records the outputs each
running stage writes, with its process, in .dvc/tmp/rwlock (dvc.rwlock); a process of this machine that is
gone, or is no dvc, left its entry behind when it was killed, and is not counted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def running(project: Path, root: Path) -> str | None:
    """What runs in the DVC project `project` (compiled into `root`), as a clause to follow "compiling now would
    change the pipeline under"; None where nothing does."""
    from chemspec.launch import LOGS
    from chemspec.launch_stop import running_launch

    if holder := running_launch(root / LOGS.parent):
        return f"the `chemspec launch` running in this project ({holder})"
    writers: dict[int, list[str]] = {}
    try:
        with open(project / ".dvc" / "tmp" / "rwlock", encoding="utf-8") as handle:
            entries = json.load(handle).get("write", {})
    except (OSError, ValueError, AttributeError):  # none yet, or being rewritten: DVC writes it in place
        return None
    for path, info in entries.items() if isinstance(entries, dict) else ():
        pid = info.get("pid") if isinstance(info, dict) else None
        if isinstance(pid, int) and pid != os.getpid() and _is_dvc(pid):
            writers.setdefault(pid, []).append(os.path.relpath(path, project))
    if not writers:
        return None
    pid, paths = next(iter(writers.items()))
    more = f" and {len(writers) - 1} other dvc process(es)" if len(writers) > 1 else ""
    return (f"the dvc process {pid} running in this project (writing {', '.join(sorted(paths)[:3])}"
            f"{' …' if len(paths) > 3 else ''}){more}")


def _is_dvc(pid: int) -> bool:
    try:
        import psutil  # dvc's own dependency: without dvc, no dvc runs
    except ImportError:
        return False
    try:
        return any(Path(part).name == "dvc" for part in psutil.Process(pid).cmdline()[:3])
    except (psutil.Error, OSError):
        return False
