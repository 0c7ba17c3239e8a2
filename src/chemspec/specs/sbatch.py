"""The rules of extra sbatch options, from the study's executor.slurm.sbatch or `chemspec launch --sbatch`:
sbatch long options with one-line values, none that launch sets itself, GPUs asked for one way."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator

from chemspec.errors import UsageError
from chemspec.specs.base import PROBLEMS_SEPARATOR

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
    "ntasks-per-gpu": "one task on one node per cell; a cell's DDP ranks start inside it",
    "ntasks-per-socket": "one task on one node per cell; a cell's DDP ranks start inside it",
    "ntasks-per-core": "one task on one node per cell; a cell's DDP ranks start inside it",
    "test-only": "sbatch --test-only of each wave's script before anything runs, then a real submission",
    "hold": "jobs that start as slurm frees their turn; a held array would keep the launch waiting",
    "wait": "the launch watches its jobs itself",
    "requeue": ("a stopped cell's job ends, and the next `chemspec launch` resumes the cell from its checkpoint; "
                "a requeued job would run on beside it, unwatched"),
}
WRITTEN = {"requeue": "--no-requeue"}
"""The option launch writes for a MANAGED one, where it is not the option itself."""
GPU_OPTIONS = ("gpus", "gpus-per-task")
"""sbatch options that ask for GPUs beside --gpus-per-node, which launch sets from executor.slurm.gpus_per_job."""
# sbatch options that take a value, which a bare --sbatch KEY (a flag) would leave without one.
VALUED = {"account", "begin", "chdir", "cluster", "clusters", "comment", "constraint", "cpus-per-gpu",
          "cpus-per-task", "dependency", "exclude", "gpus", "gpus-per-node", "gpus-per-task", "gres", "job-name",
          "licenses", "mail-type", "mail-user", "mem", "mem-per-cpu", "mem-per-gpu", "nodelist", "partition", "qos",
          "reservation", "time", "time-min", "tmp", "wckey"}
COUNTS = ("cpus-per-task", "cpus-per-gpu")


def slurm_minutes(text: str) -> int | None:
    """The minutes of a SLURM time with a fixed limit, rounded up ("02:00:00" -> 120); None for other text."""
    if not SLURM_TIME.fullmatch(text) or not text[0].isdigit():
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(part) for part in clock.split(":")]
    if days:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:  # HH:MM:SS
        hours, minutes, seconds = parts
    else:  # MM, MM:SS
        hours, (minutes, seconds) = 0, (parts + [0])[:2]
    return (int(days or 0) * 24 + hours) * 60 + minutes + (1 if seconds else 0)


def _option(key: str, value: str | bool | None = None, spec: Collection[str] = ()) -> str:
    """An sbatch option as the user gave it: `--sbatch KEY[=VALUE]`, or `executor.slurm.sbatch.KEY[: VALUE]`
    where the study gave it (a flag: `: true` there, nothing on the command line)."""
    if key in spec:
        return f"executor.slurm.sbatch.{key}" + ("" if value is None else f": {'true' if value is True else value}")
    return f"--sbatch {key}" + ("" if value is None or value is True else f"={value}")


def check_sbatch(options: dict[str, str | bool], gpus_per_job: int = 0, spec: Collection[str] = ()) -> None:
    """UsageError (bad options: exit 2) listing every problem of `sbatch_problems`, a line each."""
    if problems := list(sbatch_problems(options, gpus_per_job, spec)):
        raise UsageError(PROBLEMS_SEPARATOR.join(problems))


def sbatch_problems(options: dict[str, str | bool], gpus_per_job: int = 0, spec: Collection[str] = ()) -> Iterator[str]:
    """Sbatch options that are no sbatch long option, take no one-line value, that launch sets, or that ask
    for GPUs a second way beside executor.slurm.gpus_per_job; `spec`: the keys the study gave
    (executor.slurm.sbatch), named so, the others came from --sbatch."""
    bad = [key for key in options if not SBATCH_KEY.match(key)]
    if bad:
        yield f"sbatch option names {bad} are not sbatch long options; write them as e.g. qos=high"
    for key in (key for key in options if key in MANAGED):
        yield (f"{_option(key, spec=spec)}: chemspec launch sets {WRITTEN.get(key, f'--{key}')} of every job itself "
               f"({MANAGED[key]}); drop it")
    values = {key: value for key, value in options.items() if value is not True}
    bad = [key for key, value in values.items() if not value]
    if bad:
        fix = (f"write {_option(bad[0], 'VALUE', spec)}" if bad[0] in VALUED else
               f"write KEY=VALUE, or KEY alone for a flag ({_option(bad[0], True, spec)})")
        yield f"sbatch options {bad} have an empty value, which sbatch refuses: {fix}"
    bad = [key for key, value in values.items() if not value.isprintable()]
    if bad:
        yield (f"sbatch option values of {bad} hold a line break or control character; an #SBATCH line takes one "
               "line: give one value per option")
    for key in ("time", "time-min"):
        if options.get(key) is True or (values.get(key) and not SLURM_TIME.fullmatch(values[key])):
            yield (f"{_option(key, values.get(key, ''), spec)} is not a SLURM time (minutes, MM:SS, HH:MM:SS, D-HH, "
                   "D-HH:MM or D-HH:MM:SS); fix it, or set executor.slurm.time_min in the study")
        elif values.get(key) and re.fullmatch(r"\d+:\d+", values[key]) and int(values[key].split(":")[0]) < 5:
            minutes, seconds = values[key].split(":")  # a job of minutes: meant as hours, surely
            yield (f"{_option(key, values[key], spec)} reads in sbatch as {minutes} min {seconds} s, not "
                   f"{minutes} h {seconds} min; write {int(minutes):02d}:{seconds}:00 for {minutes} h {seconds} min, "
                   f"or 00:{int(minutes):02d}:{seconds} for what sbatch reads")
    if values.get("gpus-per-node") and not re.fullmatch(r"([^:\s]+:)?\d+", values["gpus-per-node"]):
        yield (f"{_option('gpus-per-node', values['gpus-per-node'], spec)} is not a GPU count ([type:]count, as "
               "a100:2); fix it")
    for key in sorted(key for key, value in options.items() if value is True and key in VALUED and key not in
                      ("time", "time-min")):
        yield (f"{_option(key, spec=spec)} needs a value, which sbatch would refuse to go without: "
               f"write {_option(key, 'VALUE', spec)}")
    for key in (key for key in COUNTS if values.get(key) and not (values[key].isdigit() and int(values[key]) > 0)):
        yield f"{_option(key, values[key], spec)} is not a count of CPUs; give a whole number above 0"
    if not gpus_per_job:
        return
    twice = [key for key in GPU_OPTIONS if key in options]
    if re.search(r"(^|,)gpu\b", str(values.get("gres", ""))):
        twice.insert(0, "gres")
    for key in twice:
        yield (f"{_option(key, values.get(key), spec)} asks for GPUs beside the {gpus_per_job} that "
               "executor.slurm.gpus_per_job (or training.devices) asks for with --gpus-per-node; give them one way: "
               f"drop {'the gpu gres' if key == 'gres' else key}, or set executor.slurm.gpus_per_job: 0 in the study")
