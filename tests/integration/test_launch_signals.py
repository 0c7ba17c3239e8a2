"""Signals around launched jobs, on tiny hand-written DVC projects: SLURM's SIGUSR2 before the time limit,
SLURM's task variables under a DDP stage, and a launcher stopped by SIGINT or SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.conftest import sh, tool_env

pytestmark = pytest.mark.slow

# A stage that notes its pid, sleeps STAGE_SLEEP seconds (cells only), then writes the dispositions it
# inherited of SIGUSR2, SIGTERM and SIGINT. With TERM_NOTE (INT_NOTE) set it handles SIGTERM (SIGINT) as
# `chemspec run` does a preemption (a first Ctrl-C): it writes a checkpoint and exits.
STAGE = textwrap.dedent("""
    import json, os, signal, sys, time
    from pathlib import Path

    out, name = Path(sys.argv[1]), sys.argv[2]
    inherited = {s.name: getattr(signal.getsignal(s), "name", "handler")
                 for s in (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)}
    def checkpoint(signum, frame):
        Path(f"checkpoint-{name}").write_text("saved")
        sys.exit(1)
    if os.environ.get("TERM_NOTE"):
        signal.signal(signal.SIGTERM, checkpoint)
    if os.environ.get("INT_NOTE"):  # a first Ctrl-C, as `chemspec run` takes it
        signal.signal(signal.SIGINT, checkpoint)
    Path(f"inherited-{name}").write_text(json.dumps(inherited))
    Path(f"started-{name}").write_text(str(os.getpid()))
    if name != "split":
        time.sleep(float(os.environ.get("STAGE_SLEEP", "0")))
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(inherited))
""")

PIPELINE = """
stages:
  split:
    cmd: python stage.py split.json split
    outs:
    - split.json
  tpe:
    foreach: [a, b]
    do:
      cmd: python stage.py out/${item}.json ${item}
      deps:
      - stage.py
      - split.json
      outs:
      - out/${item}.json
"""

LAUNCHER = textwrap.dedent("""
    import sys
    from chemspec.errors import ChemspecError
    from chemspec.launch import launch
    from chemspec.launch_jobs import Settings

    try:
        launch(Settings(kind="local", jobs=2, study="tiny"), ".", say=lambda line: print(line, flush=True))
    except ChemspecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
""")

# Run one job's body as submitit would, with submitit's SIGUSR2 handler for a function that cannot
# checkpoint itself installed first: it would end the job.
JOB = textwrap.dedent("""
    import json, signal, sys
    from chemspec.stage_job import run_stage_job

    def submitits(signum, frame):
        raise RuntimeError("submitit: job not requeued because: timed-out and not checkpointable")

    signal.signal(signal.SIGUSR2, submitits)
    print(json.dumps(run_stage_job(".", sys.argv[1], {})), flush=True)
""")

SLURM_TASK = {"SLURM_NTASKS": "1", "SLURM_NPROCS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
              "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost", "SLURM_JOB_ID": "4242",
              "SLURM_JOB_NAME": "chemspec-tiny"}


def dvc_project(root: Path, pipeline: str = PIPELINE, **files: str) -> Path:
    sh("dvc", "init", "--no-scm", "-q", cwd=root)
    (root / "dvc.yaml").write_text(pipeline)
    (root / "stage.py").write_text(STAGE)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def wait_for(paths: list[Path], process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{paths} not there after {timeout} s"
        time.sleep(0.1)


def start_job(root: Path, stage: str, **env: str) -> subprocess.Popen:
    """One job's body in a session of its own, as srun starts a task."""
    (root / "job.py").write_text(JOB)
    return subprocess.Popen([sys.executable, "job.py", stage], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=tool_env() | env, start_new_session=True)


def gone(pid: int) -> bool:
    """No such process, or one that has exited but that no parent has reaped."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def recorded(root: Path) -> set[str]:
    lock = root / "dvc.lock"
    return set(yaml.safe_load(lock.read_text())["stages"]) if lock.exists() else set()


def test_slurms_sigusr2_stops_the_stage_with_its_checkpoint_and_the_job_ends_as_stopped(tmp_path):
    """The job had let the stage run on to the limit's SIGTERM, leaving its checkpoint SLURM's KillWait (30 s by
    default) before SIGKILL; submitit's own handler would kill it outright."""
    root = dvc_project(tmp_path)
    sh("dvc", "repro", "split", cwd=root)
    job = start_job(root, "tpe@a", STAGE_SLEEP="60", INT_NOTE="1")
    wait_for([root / "started-a"], job)
    (dvc,) = psutil.Process(job.pid).children()
    inherited = json.loads((root / "inherited-a").read_text())
    # SLURM signals every process of the job step: the job, dvc and the stage under it.
    for group in {job.pid, os.getpgid(dvc.pid)}:
        os.killpg(group, signal.SIGUSR2)
    out, err = job.communicate(timeout=120)
    assert job.returncode == 1, err
    assert "SIGUSR2 at" in out and "(SLURM's warning, 90 s before the time limit); stopping the stage" in out
    assert "stopped: the job received SIGUSR2 (SLURM's warning before the time limit)" in err
    assert (root / "checkpoint-a").read_text() == "saved"
    assert "tpe@a" not in recorded(root)
    assert gone(int((root / "started-a").read_text()))
    assert inherited["SIGUSR2"] == "SIG_IGN", "the stage inherits SIGUSR2 ignored; `chemspec run` handles it"
    assert inherited["SIGTERM"] == "SIG_DFL", "SIGTERM, which checkpoints a training cell, is untouched"
    assert not any(json.loads((root / ".dvc" / "tmp" / "rwlock").read_text()).values()), "no lock left behind"


def test_a_jobs_sigterm_reaches_the_stage_which_checkpoints_before_the_job_ends(tmp_path):
    root = dvc_project(tmp_path)
    sh("dvc", "repro", "split", cwd=root)
    job = start_job(root, "tpe@a", STAGE_SLEEP="60", TERM_NOTE="1")
    wait_for([root / "started-a"], job)
    os.kill(job.pid, signal.SIGTERM)  # only the job: a cluster whose process tracking misses dvc's group
    out, err = job.communicate(timeout=120)
    assert job.returncode == 1
    assert "stopped: the job received SIGTERM" in err
    assert (root / "checkpoint-a").read_text() == "saved"
    assert "tpe@a" not in recorded(root)
    assert gone(int((root / "started-a").read_text()))


DDP = textwrap.dedent("""
    import sys
    from pathlib import Path

    import lightning as L
    import torch


    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

        def training_step(self, batch, index):
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)


    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 1)), batch_size=1)
    trainer.fit(Tiny(), data)
    out = Path(sys.argv[1])
    out.mkdir(exist_ok=True)
    environment = type(trainer.strategy.cluster_environment).__name__
    (out / f"rank{trainer.global_rank}-of-{trainer.world_size}").write_text(environment)
    trainer.strategy.barrier()
""")


def test_a_two_device_stage_starts_its_second_rank_inside_a_slurm_job(tmp_path):
    """submitit runs each job as one SLURM task; with SLURM_NTASKS=1 reaching it, Lightning would take
    the stage for one of SLURM's tasks and train on one device."""
    pipeline = "stages:\n  ddp:\n    cmd: python ddp.py ranks\n    deps:\n    - ddp.py\n    outs:\n    - ranks\n"
    root = dvc_project(tmp_path, pipeline, **{"ddp.py": DDP})
    job = start_job(root, "ddp", **SLURM_TASK)
    out, err = job.communicate(timeout=300)
    assert job.returncode == 0, err
    ranks = {p.name: p.read_text() for p in (root / "ranks").iterdir()}
    assert ranks == {"rank0-of-2": "LightningEnvironment", "rank1-of-2": "LightningEnvironment"}


def heed_sigint() -> None:
    """A suite started in the background by a non-interactive shell passes SIGINT on ignored, and Python
    then never turns it into KeyboardInterrupt; the launcher must see it as a terminal's Ctrl-C would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_launch_stopped_by_a_signal_stops_its_jobs_and_a_second_launch_runs(tmp_path, stop):
    """The signal reaches the launcher alone (`kill <pid>`): its jobs' dvc and stage processes must stop,
    release dvc's locks and record nothing, so that the next launch runs the cells."""
    root = dvc_project(tmp_path, **{"launch_it.py": LAUNCHER})
    launcher = subprocess.Popen([sys.executable, "launch_it.py"], cwd=root, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=tool_env() | {"STAGE_SLEEP": "120"},
                                start_new_session=True, preexec_fn=heed_sigint)
    wait_for([root / "started-a", root / "started-b"], launcher)
    stages = [int((root / f"started-{cell}").read_text()) for cell in "ab"]
    launcher.send_signal(stop)
    out, err = launcher.communicate(timeout=150)
    assert launcher.returncode == 130, err
    assert f"launch stopped by {stop.name}: its running jobs were cancelled" in err
    assert "stopping 2 running jobs" in out
    assert all(gone(pid) for pid in stages), "the stages stopped with the launch"
    assert recorded(root) == {"split"}
    again = subprocess.run([sys.executable, "launch_it.py"], cwd=root, capture_output=True, text=True,
                           env=tool_env() | {"STAGE_SLEEP": "0"}, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "done tpe@a" in again.stdout and "done tpe@b" in again.stdout
    assert recorded(root) == {"split", "tpe@a", "tpe@b"}


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("heeded", [True, False], ids=["launcher-heeds-sigint", "launcher-ignores-sigint"])
def test_a_ctrl_c_to_the_whole_process_group_stops_the_launch_without_tracebacks(tmp_path, heeded):
    """A terminal's Ctrl-C reaches every process of the foreground group: the launcher, submitit's local
    controllers and the jobs. A launcher started with `&` from a script ignores it, and its jobs stop alone."""
    root = dvc_project(tmp_path, **{"launch_it.py": LAUNCHER})
    launcher = subprocess.Popen([sys.executable, "launch_it.py"], cwd=root, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=tool_env() | {"STAGE_SLEEP": "120"},
                                start_new_session=True, preexec_fn=heed_sigint if heeded else ignore_sigint)
    wait_for([root / "started-a", root / "started-b"], launcher)
    stages = [int((root / f"started-{cell}").read_text()) for cell in "ab"]
    os.killpg(launcher.pid, signal.SIGINT)
    out, err = launcher.communicate(timeout=150)
    assert launcher.returncode == 130, err
    assert "Traceback" not in err and "Traceback" not in out, err
    if heeded:
        assert "launch stopped by SIGINT: its running jobs were cancelled" in err
    else:
        assert "launch stopped by SIGINT: 2 jobs received it (tpe@a, tpe@b), not through the launch" in err
        assert "fix the cause" not in err
    assert all(gone(pid) for pid in stages), "the stages stopped with the launch"
    assert recorded(root) == {"split"}
