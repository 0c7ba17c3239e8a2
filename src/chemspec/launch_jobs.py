"""How `chemspec launch` configures and submits its jobs: submitit executors, SLURM job arrays, the sbatch
script a dry run prints (the rules of the options a user may add: specs.sbatch), the environment of local jobs,
and the reason a failed job gives."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from chemspec.errors import LaunchError
from chemspec.stage_job import DVC, run_stage_job

LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # no scheduler limit to respect on this machine
TEST_ONLY_TIMEOUT_S = 120
# srun has not passed the job's --cpus-per-task on to its step since SLURM 22.05: the step would run on one CPU.
SRUN_CPUS = 'if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK"; fi'


@dataclass(frozen=True)
class Settings:
    kind: str
    jobs: int
    study: str
    partition: str | None = None
    account: str | None = None
    gpus_per_job: int = 0
    time_min: int = 60
    sbatch: dict[str, str | bool] = field(default_factory=dict)
    """Extra #SBATCH options, KEY: VALUE, or KEY: True for a flag without value."""
    spec_sbatch: frozenset[str] = frozenset()
    """The keys of `sbatch` that the study's executor.slurm.sbatch gave, not --sbatch."""
    setup: tuple[str, ...] = ()
    """Shell lines each SLURM job runs before its cell."""
    stage_time_min: dict[str, int] = field(default_factory=dict)
    """{tpe, train or sample: minutes}: the time limit of that wave's jobs, where it is not time_min."""

    def submitit_parameters(self) -> dict:
        """What AutoExecutor.update_parameters receives."""
        if self.kind == "local":
            return {"name": f"chemspec-{self.study}", "timeout_min": LOCAL_TIMEOUT_MIN}
        return {"name": f"chemspec-{self.study}", "timeout_min": self.time_min,
                "gpus_per_node": self.gpus_per_job or None, "slurm_partition": self.partition,
                "slurm_account": self.account, "slurm_array_parallelism": self.jobs,
                "slurm_setup": [SRUN_CPUS, *self.setup],
                # submitit's own keys have underscores (gpus_per_node) and it writes each key once:
                # `gpus-per-node` must become that key to replace submitit's value, not to sit beside it.
                "slurm_additional_parameters": {"no_requeue": True,
                                                **{k.replace("-", "_"): v for k, v in self.sbatch.items()}}}


def for_wave(settings: Settings, groups: tuple[str, ...]) -> Settings:
    """The settings of one wave's jobs: its stage's time limit where the study sets one, and sample cells
    generate on one GPU, whatever training.devices made gpus_per_job for the training cells."""
    changes = {"time_min": settings.stage_time_min[groups[0]]} if groups[0] in settings.stage_time_min else {}
    if groups == ("sample",) and settings.gpus_per_job > 1:
        changes["gpus_per_job"] = 1
    return replace(settings, **changes) if changes else settings


def make_executor(settings: Settings, folder: Path):
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster=settings.kind)
    executor.update_parameters(**settings.submitit_parameters())
    return executor


def sbatch_script(settings: Settings, folder: Path, count: int) -> str:
    """The sbatch file submitit writes for `count` jobs (an array when count > 1), without submitting."""
    from submitit.slurm.slurm import _make_sbatch_string

    renamed = {"name": "job_name", "timeout_min": "time"}
    parameters = {renamed.get(k, k.removeprefix("slurm_")): v
                  for k, v in settings.submitit_parameters().items() if v is not None}
    if count > 1:
        parameters["map_count"] = count
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, **parameters)


SBATCH_FIX = ("check executor.slurm (partition, account, gpus_per_job, time_min, stage_time_min, sbatch) and --sbatch "
              "options; `chemspec launch --dry-run` prints the script")


def try_submission(settings: Settings, waves: list[tuple[tuple[str, ...], int]], folder: Path) -> None:
    """`sbatch --test-only` of the job script of each wave (`waves`: their stage groups and cells, as an array
    of that many tasks, the most the wave can submit), which SLURM checks without queueing it: a partition,
    account, option or array size (MaxArraySize) the cluster refuses stops the launch here, before the data and
    split stages run on this node."""
    for groups, cells in waves:
        script = folder / f"test-only-{'-'.join(groups)}.sh"
        script.write_text(sbatch_script(for_wave(settings, groups), folder, cells))
        try:
            done = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=TEST_ONLY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise LaunchError(f"sbatch --test-only gave no answer in {TEST_ONLY_TIMEOUT_S} s (is the SLURM "
                              "controller reachable from here?); nothing ran") from None
        if done.returncode != 0:
            raise LaunchError(f"sbatch --test-only refused the script of the {'/'.join(groups)} jobs ({script}), "
                              f"so nothing ran: {(done.stderr or done.stdout).strip()[-1000:]}\n{SBATCH_FIX}")


def submit_array(executor, root: Path, stages: list[str], env: dict[str, str | None]) -> dict:
    """Submit every stage at once (a SLURM job array when there are several); {stage: job}."""
    with executor.batch():
        jobs = {stage: executor.submit(run_stage_job, str(root), stage, env) for stage in stages}
    return jobs


def scancel(args: list[str], what: str, say: Callable[[str], None], then: str = "", unless: str = "") -> bool:
    """`scancel ARGS`, saying that `what` was cancelled (and `then`), or what scancel said where it failed (and
    `unless`); whether it succeeded."""
    command = ["scancel", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
        failed = (done.stderr or done.stdout).strip() if done.returncode else ""
    except (OSError, subprocess.TimeoutExpired) as exc:
        failed = str(exc)
    if failed:
        say(f"  could not cancel {what} (`{shlex.join(command)}`: {failed}){unless}")
        return False
    say(f"  cancelled {what} (`{shlex.join(command)}`){then}")
    return True


def cancel_pending(array: str, say: Callable[[str], None]) -> bool:
    """Cancel the array's tasks that have not started; SLURM picks them by state, so a task that has just
    started runs on."""
    return scancel(["--state=PENDING", array], "the array's pending tasks", say, then="; running ones end first",
                   unless="; they still run")


ARRAYS = "slurm-arrays"
"""The file, in a project's .chemspec folder, of the SLURM arrays its launches submitted and may not have seen end."""


def note_array(folder: Path, array: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ARRAYS, "a") as handle:
        handle.write(f"{array}\n")


LIVE = "PENDING,RUNNING,SUSPENDED,CONFIGURING,REQUEUED,REQUEUE_HOLD,RESIZING"
"""Job states whose tasks may yet train a cell (COMPLETING ones are ending: a launch's own cancel leaves them)."""


def live_arrays(folder: Path, say: Callable[[str], None] = lambda _: None) -> dict[str, int]:
    """{array: tasks pending or running} of the arrays earlier launches submitted that squeue still lists: a
    launcher that died (SIGKILL, a login node's reboot) leaves its jobs running, which DVC's locks do not
    guard across nodes, so a new launch would train their cells a second time. The file keeps only those
    still listed; without squeue (no SLURM here) nothing is checked, and a squeue that fails is named."""
    path = folder / ARRAYS
    if not path.is_file():
        return {}
    arrays = sorted(set(path.read_text().split()))
    command = ["squeue", "--noheader", "--array", "--format=%F", f"--states={LIVE}", f"--jobs={','.join(arrays)}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    except FileNotFoundError:
        return {}
    except (OSError, subprocess.TimeoutExpired) as exc:
        done = subprocess.CompletedProcess(command, 1, "", str(exc))
    if done.returncode and "invalid job id" not in done.stderr.lower():  # all ended and purged: not an error
        say(f"note: could not ask squeue whether the jobs of an earlier launch (arrays {', '.join(arrays)}) still "
            f"run ({done.stderr.strip()[-300:]}); if they do, this launch trains their cells a second time")
        return {}
    live: dict[str, int] = {}
    for line in done.stdout.split():
        live[line] = live.get(line, 0) + 1
    path.write_text("".join(f"{array}\n" for array in arrays if array in live))
    return live


@contextlib.contextmanager
def stderr_to(path: Path):
    """This process's stderr (fd 2) goes to `path` meanwhile, and so does that of what it starts: submitit's
    local controllers, which print a traceback when a Ctrl-C reaches them, keep it in the launch's log."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as sink:
            os.dup2(sink.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def hardlink_lock(root: Path) -> bool:
    """Whether the project's dvc locks by hard links (core.hardlink_lock), which NFS keeps coherent."""
    done = subprocess.run([*DVC, "config", "core.hardlink_lock"], cwd=root, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    return done.returncode == 0 and done.stdout.strip().lower() == "true"


def local_environment(jobs: int, base: dict[str, str] | None = None) -> dict[str, str | None]:
    """What each local job's stage runs with: the caller's GPUs (submitit's local controller would set
    CUDA_VISIBLE_DEVICES from gpus_per_node), and, where jobs share the cores, OpenMP threads that sleep
    rather than spin while they wait, unless the caller chose: 2 jobs each spinning a thread per core ran
    tiny CPU cells 10-40x slower. The thread count stays the serial run's, so results stay bitwise those
    of `dvc repro`."""
    base = os.environ if base is None else base
    env = {"CUDA_VISIBLE_DEVICES": base.get("CUDA_VISIBLE_DEVICES")}
    if jobs > 1:
        env["OMP_WAIT_POLICY"] = base.get("OMP_WAIT_POLICY", "PASSIVE")
    return env


def job_reason(job, exc: Exception) -> str:
    """The stage's own last error from the job's log (`chemspec run`'s `error: ...`, which says what failed),
    else dvc's last ERROR, with the indented lines it continues on (the processes that hold a busy output),
    else the last line of the job's exception."""
    try:
        text = Path(job.paths.stderr).read_text(errors="replace")
    except OSError:
        text = ""
    if own := [line.rstrip() for line in text.splitlines() if line.startswith("error: ")]:
        return own[-1]
    errors, continued = [], False
    for line in text.splitlines():
        if line.startswith("ERROR:"):
            errors.append(line.rstrip())
            continued = True
        elif continued and line[:1].isspace() and line.strip():
            errors[-1] += " " + line.strip()
        else:
            continued = False
    if errors and " is busy, it is being blocked by:" in errors[-1]:
        errors[-1] += " (another dvc held this stage's outputs: rerun `chemspec launch` once it has ended)"
    lines = [line.strip() for line in str(exc).splitlines() if "Error" in line]
    return errors[-1] if errors else lines[-1] if lines else type(exc).__name__
