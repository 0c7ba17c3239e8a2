"""`python -m chemspec` in a subprocess, from this checkout's src/ (benchmarks run on machines where
chemspec is not installed, only its dependencies)."""
from __future__ import annotations

import os, shlex, subprocess, sys, time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def chemspec(folder: Path, *argv: str, fault: str | None = None) -> subprocess.CompletedProcess:
    """Run chemspec ARGV in `folder`, output captured, with CHEMSPEC_FAULT set to `fault` (or unset);
    the wall time is on the result as `seconds`, the folder as `folder`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    env.pop("CHEMSPEC_FAULT", None)
    if fault:
        env["CHEMSPEC_FAULT"] = fault
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "chemspec", *argv], cwd=folder, env=env, text=True,
                          capture_output=True)
    done.seconds, done.folder = round(time.perf_counter() - start, 1), folder
    return done


def must(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """`done` (from `chemspec`), or exit with its command, folder and the end of its stderr when it failed."""
    if done.returncode:
        sys.exit(f"{shlex.join(done.args)} failed in {done.folder}:\n{done.stderr[-4000:]}")
    return done
