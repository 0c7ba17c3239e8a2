"""A compile that would change the pipeline under a running `dvc repro` or `chemspec launch` is refused."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from chemspec.launch_stop import one_launch
from tests.conftest import tiny_study, tool_env, write_spec

SLOW = """stages:
  wait:
    cmd: python -c "import time; time.sleep(120)" && echo done > out.txt
    outs: [out.txt]
"""


def _writers(project: Path) -> dict:
    try:
        return json.loads((project / ".dvc" / "tmp" / "rwlock").read_text()).get("write", {})
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def _repro(root: Path, pipeline: str):
    """`dvc repro <pipeline>` of SLOW running in the background, until its stage is recorded in the rwlock."""
    (root / pipeline).parent.mkdir(parents=True, exist_ok=True)
    (root / pipeline).write_text(SLOW)
    repro = subprocess.Popen(["dvc", "repro", pipeline], cwd=root, env=tool_env(), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _writers(root) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _writers(root), "dvc repro recorded the stage it runs"
        yield repro
    finally:
        os.killpg(repro.pid, signal.SIGINT)  # as Ctrl-C does: dvc waits for its stage's command
        repro.wait(timeout=60)


def test_a_compile_that_would_change_the_pipeline_under_a_running_repro_is_refused_and_writes_nothing(cli, tmp_path):
    for args in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(args, cwd=tmp_path, env=tool_env(), check=True)
    write_spec(tmp_path / "study.yaml", tiny_study())
    assert cli("compile", "study.yaml", "--root", "study", cwd=tmp_path).code == 0
    with _repro(tmp_path, "other/dvc.yaml"):
        write_spec(tmp_path / "study.yaml", tiny_study(**{"training.max_epochs": 3}))
        assert cli("compile", "study.yaml", "--root", "study", cwd=tmp_path).code == 0, "another pipeline runs"
    with _repro(tmp_path, "study/slow/dvc.yaml") as repro:
        assert cli("compile", "study.yaml", "--root", "study", cwd=tmp_path).code == 0, "nothing to change"
        before = {p.name: p.read_bytes() for p in (tmp_path / "study").iterdir() if p.is_file()}
        write_spec(tmp_path / "study.yaml", tiny_study())
        result = cli("compile", "study.yaml", "--root", "study", cwd=tmp_path)
        assert result.code == 1 and (f"compiling now would change study/dvc.yaml, study/params.yaml under the dvc "
                                     f"process {repro.pid} running this pipeline (writing study/slow/out.txt)"
                                     ) in result.err, result.err
        assert "then compile again (nothing was written)" in result.err and "Traceback" not in result.err
        assert {p.name: p.read_bytes() for p in (tmp_path / "study").iterdir() if p.is_file()} == before
        assert cli("compile", "--check", "study.yaml", "--root", "study", cwd=tmp_path).code == 1, "check reports"
    assert cli("compile", "study.yaml", "--root", "study", cwd=tmp_path).code == 0, "once it has stopped"
    write_spec(tmp_path / "study.yaml", tiny_study(**{"training.max_epochs": 3}))
    (tmp_path / "study" / ".chemspec").mkdir()
    with one_launch(tmp_path / "study" / ".chemspec"):
        result = cli("compile", "study.yaml", "--root", "study", cwd=tmp_path)
    assert result.code == 1 and ("would change study/dvc.yaml, study/params.yaml under the `chemspec launch` running "
                                 "in this project (pid ") in result.err, result.err
    assert cli("compile", "study.yaml", "--root", "study", cwd=tmp_path).code == 0


def test_a_write_entry_left_by_a_killed_dvc_whose_pid_now_runs_another_command_does_not_refuse(cli, tmp_path):
    for args in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(args, cwd=tmp_path, env=tool_env(), check=True)
    write_spec(tmp_path / "study.yaml", tiny_study())
    assert cli("compile", "study.yaml", cwd=tmp_path).code == 0
    (tmp_path / "dvc").write_text("import time; time.sleep(60)")  # a dvc of another command, in another project
    other = subprocess.Popen([sys.executable, str(tmp_path / "dvc"), "status"])
    try:
        (tmp_path / ".dvc" / "tmp").mkdir(exist_ok=True)
        entry = {"pid": other.pid, "cmd": "/usr/bin/dvc repro"}
        (tmp_path / ".dvc" / "tmp" / "rwlock").write_text(json.dumps({"write": {str(tmp_path / "data"): entry}}))
        write_spec(tmp_path / "study.yaml", tiny_study(**{"training.max_epochs": 3}))
        assert cli("compile", "study.yaml", cwd=tmp_path).code == 0
    finally:
        other.kill()
        other.wait()


HOLDS_LOCK = """import sys, time
from dvc.repo import Repo
Repo(".").lock.lock()
print("held", flush=True)
time.sleep(120)
"""


def test_a_compile_while_a_dvc_holds_the_project_lock_between_two_stages_is_refused_and_writes_nothing(cli, tmp_path):
    for args in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(args, cwd=tmp_path, env=tool_env(), check=True)
    write_spec(tmp_path / "study.yaml", tiny_study())
    assert cli("compile", "study.yaml", "--root", "study", cwd=tmp_path).code == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "study").iterdir() if p.is_file()}
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "dvc").write_text(HOLDS_LOCK)  # what `dvc repro` holds from one stage's end to the next's start
    holder = subprocess.Popen([sys.executable, str(tmp_path / "bin" / "dvc"), "repro", "study/dvc.yaml"], cwd=tmp_path,
                              env=tool_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        write_spec(tmp_path / "study.yaml", tiny_study(**{"training.max_epochs": 3}))
        result = cli("compile", "study.yaml", "--root", "study", cwd=tmp_path)
        assert result.code == 1 and (f"the dvc process {holder.pid} (`dvc repro study/dvc.yaml`) holds DVC's project "
                                     "lock (.dvc/tmp/lock), as a running `dvc repro` does between two stages, so "
                                     "compile cannot tell whether it runs the pipeline it would change "
                                     "(study/dvc.yaml, study/params.yaml)") in result.err, result.err
        assert "then compile again (nothing was written)" in result.err and "Traceback" not in result.err
        assert {p.name: p.read_bytes() for p in (tmp_path / "study").iterdir() if p.is_file()} == before
    finally:
        holder.kill()
        holder.wait()
    assert cli("compile", "study.yaml", "--root", "study", cwd=tmp_path).code == 0, "once it has let go"
    status = subprocess.run(["dvc", "status", "study/dvc.yaml"], cwd=tmp_path, env=tool_env(), capture_output=True,
                            text=True)
    assert status.returncode == 0, f"compile let go of the lock: {status.stderr}"


def test_compile_lets_go_of_dvcs_lock_before_it_rewrites_the_lock_files(cli, tmp_path, monkeypatch):
    """Rewriting a large grid's dvc.lock files takes seconds, and a `dvc repro` of another pipeline in the
    project fails when it cannot take DVC's lock back within 3 s of a stage's end."""
    from chemspec import relock

    for args in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(args, cwd=tmp_path, env=tool_env(), check=True)
    write_spec(tmp_path / "study.yaml", tiny_study())
    takes = [sys.executable, "-c", "from dvc.repo import Repo; Repo('.').lock.lock()"]
    free, carry = [], relock.carry

    def observed(*args, **kwargs):
        free.append(subprocess.run(takes, cwd=tmp_path, env=tool_env(), capture_output=True).returncode == 0)
        return carry(*args, **kwargs)

    monkeypatch.setattr(relock, "carry", observed)
    assert cli("compile", "study.yaml", cwd=tmp_path).code == 0
    assert free == [True], "another dvc took the lock while compile wrote"
