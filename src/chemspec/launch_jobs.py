"""How `chemspec launch` configures and submits its jobs: submitit executors, SLURM job arrays, the sbatch
script a dry run prints, and the --sbatch options a user may add."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path

from chemspec.errors import LaunchError
from chemspec.stage_job import DVC, run_stage_job

LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # no scheduler limit to respect on this machine
SBATCH_KEY = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
SLURM_TIME = re.compile(r"(\d+-\d+|\d+)(:\d+){0,2}|unlimited|infinite", re.IGNORECASE)
"""sbatch --time's forms: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, or no limit."""
# sbatch options each job's script needs as launch sets them: why a user's value would break it.
MANAGED = {
    "array": "one array task per stale cell, at most -j at once",
    "output": "each job's log, which the launch reads for its errors",
    "error": "each job's log, which the launch reads for its errors",
    "open-mode": "each job's log, which the launch reads for its errors",
    "signal": "submitit's SIGUSR2 90 s before the time limit, which the job and the stage handle",
    "nodes": "one task on one node per cell; a cell's DDP ranks start inside it",
    "ntasks": "one task on one node per cell; a cell's DDP ranks start inside it",
    "ntasks-per-node": "one task on one node per cell; a cell's DDP ranks start inside it",
}
# sbatch options that take a value, which a bare --sbatch KEY (a flag) would leave without one.
VALUED = {"account", "begin", "chdir", "cluster", "clusters", "comment", "constraint", "cpus-per-gpu",
          "cpus-per-task", "dependency", "exclude", "gpus", "gpus-per-node", "gpus-per-task", "gres", "job-name",
          "licenses", "mail-type", "mail-user", "mem", "mem-per-cpu", "mem-per-gpu", "nodelist", "partition", "qos",
          "reservation", "time", "time-min", "tmp", "wckey"}
COUNTS = ("cpus-per-task", "cpus-per-gpu")


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

    def submitit_parameters(self) -> dict:
        """What AutoExecutor.update_parameters receives."""
        if self.kind == "local":
            return {"name": f"chemspec-{self.study}", "timeout_min": LOCAL_TIMEOUT_MIN}
        return {"name": f"chemspec-{self.study}", "timeout_min": self.time_min,
                "gpus_per_node": self.gpus_per_job or None, "slurm_partition": self.partition,
                "slurm_account": self.account, "slurm_array_parallelism": self.jobs,
                # submitit's own keys have underscores (gpus_per_node) and it writes each key once:
                # `gpus-per-node` must become that key to replace submitit's value, not to sit beside it.
                "slurm_additional_parameters": {k.replace("-", "_"): v for k, v in self.sbatch.items()} or None}


def for_wave(settings: Settings, groups: tuple[str, ...]) -> Settings:
    """The settings of one wave's jobs: sample cells generate on one GPU, whatever training.devices
    made gpus_per_job for the training cells."""
    if groups == ("sample",) and settings.gpus_per_job > 1:
        return replace(settings, gpus_per_job=1)
    return settings


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


SBATCH_FIX = ("check executor.slurm (partition, account, gpus_per_job, time_min, sbatch) and --sbatch options; "
              "`chemspec launch --dry-run` prints the script")


def try_submission(settings: Settings, waves: list[tuple[str, ...]], folder: Path) -> None:
    """`sbatch --test-only` of the job script of each wave (`waves`: their stage groups), which SLURM checks
    without queueing it: a partition, account or option the cluster refuses stops the launch here, before the
    data and split stages run on this node."""
    for groups in waves:
        script = folder / f"test-only-{'-'.join(groups)}.sh"
        script.write_text(sbatch_script(for_wave(settings, groups), folder, 1))
        done = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise LaunchError(f"sbatch --test-only refused the script of the {'/'.join(groups)} jobs ({script}), "
                              f"so nothing ran: {(done.stderr or done.stdout).strip()[-1000:]}\n{SBATCH_FIX}")


def submit_array(executor, root: Path, stages: list[str], env: dict[str, str | None]) -> dict:
    """Submit every stage at once (a SLURM job array when there are several); {stage: job}."""
    with executor.batch():
        jobs = {stage: executor.submit(run_stage_job, str(root), stage, env) for stage in stages}
    return jobs


def cancel_pending(array: str, say: Callable[[str], None]) -> bool:
    """Cancel the array's tasks that have not started; SLURM picks them by state, so a task that has just
    started runs on."""
    done = subprocess.run(["scancel", "--state=PENDING", array], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        say(f"  could not cancel the array's pending tasks (`scancel --state=PENDING {array}`: "
            f"{(done.stderr or done.stdout).strip()}); they still run")
        return False
    say(f"  cancelled the array's pending tasks (`scancel --state=PENDING {array}`); running ones end first")
    return True


def _option(key: str, value: str | bool | None = None, spec: Collection[str] = ()) -> str:
    """An sbatch option as the user gave it: `--sbatch KEY[=VALUE]`, or `executor.slurm.sbatch.KEY[: VALUE]`
    where the study gave it (a flag: `: true` there, nothing on the command line)."""
    if key in spec:
        return f"executor.slurm.sbatch.{key}" + ("" if value is None else f": {'true' if value is True else value}")
    return f"--sbatch {key}" + ("" if value is None or value is True else f"={value}")


def check_sbatch(options: dict[str, str | bool], gpus_per_job: int = 0, spec: Collection[str] = ()) -> None:
    """Refuse sbatch options that are no sbatch long option, take no one-line value, that launch sets, or
    that ask for GPUs a second way beside executor.slurm.gpus_per_job; `spec`: the keys the study gave
    (executor.slurm.sbatch), named so, the others came from --sbatch."""
    bad = [key for key in options if not SBATCH_KEY.match(key)]
    if bad:
        raise LaunchError(f"sbatch option names {bad} are not sbatch long options; write them as e.g. qos=high")
    managed = [key for key in options if key in MANAGED]
    if managed:
        key = managed[0]
        raise LaunchError(f"{_option(key, spec=spec)}: chemspec launch sets --{key} of every job itself "
                          f"({MANAGED[key]}); drop it")
    values = {key: value for key, value in options.items() if value is not True}
    bad = [key for key, value in values.items() if not value]
    if bad:
        fix = (f"write {_option(bad[0], 'VALUE', spec)}" if bad[0] in VALUED else
               f"write KEY=VALUE, or KEY alone for a flag ({_option(bad[0], True, spec)})")
        raise LaunchError(f"sbatch options {bad} have an empty value, which sbatch refuses: {fix}")
    bad = [key for key, value in values.items() if not value.isprintable()]
    if bad:
        raise LaunchError(f"sbatch option values of {bad} hold a line break or control character; an #SBATCH "
                          "line takes one line: give one value per option")
    for key in ("time", "time-min"):
        if options.get(key) is True or (key in values and not SLURM_TIME.fullmatch(values[key])):
            raise LaunchError(f"{_option(key, values.get(key, ''), spec)} is not a SLURM time (minutes, MM:SS, "
                              "HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS); fix it, or set executor.slurm.time_min in the "
                              "study")
    flags = sorted(key for key, value in options.items() if value is True and key in VALUED)
    if flags:
        raise LaunchError(f"{_option(flags[0], spec=spec)} needs a value, which sbatch would refuse to go without: "
                          f"write {_option(flags[0], 'VALUE', spec)}")
    bad = [key for key in COUNTS if key in values and not (values[key].isdigit() and int(values[key]) > 0)]
    if bad:
        raise LaunchError(f"{_option(bad[0], values[bad[0]], spec)} is not a count of CPUs; give a whole number "
                          "above 0")
    if gpus_per_job and re.search(r"(^|,)gpu\b", str(values.get("gres", ""))):
        raise LaunchError(f"{_option('gres', values['gres'], spec)} asks for GPUs beside the {gpus_per_job} that "
                          "executor.slurm.gpus_per_job (or training.devices) asks for with --gpus-per-node; give "
                          "them one way: drop the gpu gres, or set executor.slurm.gpus_per_job: 0 in the study")


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
