"""`chemspec launch`: run the compiled pipeline with its per-cell stages fanned out as submitit jobs.

The pipeline runs in waves. Each wave first brings its upstream stages up to date with a plain
`dvc repro <stage>…` (`split` for the tpe cells, `select` for the train and calibrate cells, and
`select reference` for the sample cells, which need the trained models and the test set's statistics), then
asks `dvc status --json` which cells of the wave are stale and runs each as one job,
`dvc --wait-for-lock repro -s <stage>`, at most `jobs` at once (local: the launcher keeps that many
submitit subprocesses alive; slurm: one job array throttled with `%jobs`). A last `dvc repro`
runs what is left (fit, calibration, archive) and `dvc status` must then be clean.

Lock contention: `dvc repro` holds the repo lock (.dvc/tmp/lock) only while it reads the pipeline
and while it records outputs in the cache and dvc.lock; it releases it while the stage command runs
(dvc.stage.decorators.unlocked_repo). Concurrent cells therefore train in parallel and only the
bookkeeping is serialised. `--wait-for-lock` makes each job wait for the lock instead of giving up
after dvc's default 3 s, and dvc.lock is re-read under the lock before each stage's entry is written,
so no cell's entry is lost.

Calibrate cells are full training runs that only the last calibration stage reads, so they run beside
the train cells rather than holding up the tpe cells the selection waits for. Each job runs dvc in a
process group of its own (chemspec.stage_job says why); a launch stopped by SIGINT, SIGTERM or SIGHUP
cancels its jobs and waits for their processes, so none is left holding dvc's locks. On SLURM a failed
job cancels the wave's array tasks that have not started; the running ones end first.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from chemspec.compiler.render import PIPELINES
from chemspec.errors import Interrupted, LaunchError
from chemspec.launch_jobs import (SBATCH_FIX, Settings, cancel_pending, for_wave, hardlink_lock, job_reason,
                                  live_arrays, local_environment, make_executor, note_array, sbatch_script, stderr_to,
                                  submit_array, try_submission)
from chemspec.launch_stop import (LAUNCH_ENV, cancel_jobs, guard_lock_files, interrupted, one_launch, running_launch,
                                  stopped_by_signals)
from chemspec.runtime.io import ignored_folder
from chemspec.specs.sbatch import check_sbatch
from chemspec.stage_job import DVC, ENDED_BY_SLURM, STOPPED, job_command, run_group, run_stage_job
from chemspec.words import count

WAVES = ((("split",), ("tpe",)), (("select",), ("train", "calibrate")), (("select", "reference"), ("sample",)))
LOGS = Path(".chemspec") / "launch"


def _dvc(root: Path, *args: str, log: Path | None = None) -> str:
    """Run dvc in the project and return its output, which is also appended to `log` when given (a repro:
    dvc runs in its own process group and an interrupt reaches it as its Ctrl-C)."""
    command = [*DVC, *args]
    if log is None:
        done = subprocess.run(command, cwd=root, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        code, output = done.returncode, done.stderr or done.stdout
    else:
        with open(log, "a") as sink:
            start = sink.tell()
            code, stopped = run_group(command, cwd=root, log=sink)
        if stopped is not None:
            raise Interrupted(interrupted(stopped.name, f"`dvc {' '.join(args)}` stopped (log: {log})"))
        with open(log, "rb") as source:
            output = source.read()[start:].decode(errors="replace")
    if code != 0:
        where = f" (log: {log})" if log is not None else ""
        busy = ("\nanother dvc command holds this project's lock (the PID above): wait for it to end, or stop it, "
                "before you rerun; do not delete dvc's lock files while it runs") if " is busy" in output else ""
        raise LaunchError(f"`dvc {' '.join(args)}` failed{where}:\n{output.strip()[-2000:]}{busy}\nfix the cause "
                          "and rerun `chemspec launch`; stages already recorded in dvc.lock will not run again")
    return done.stdout if log is None else output


def stale(root: Path, groups: tuple[str, ...] | None = None) -> list[str]:
    """Stages `dvc status` reports as changed; only cells of `groups` (`train@...`) when given."""
    report = json.loads(_dvc(root, "status", "--json") or "{}")
    # Per-size pipelines name their stages `pipelines/<size>/dvc.yaml:train@<cell>`.
    return sorted((name for name in report
                   if groups is None or ("@" in name and name.split("@")[0].rsplit(":", 1)[-1] in groups)),
                  key=_in_number_order)


def _in_number_order(name: str) -> list:
    """m0-200 before m0-12800: the digits of a stage name compared as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


@dataclass
class Outcome:
    """What became of one wave's jobs."""

    records: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stopped: dict[str, str] = field(default_factory=dict)
    """{stage: signal} of the jobs a signal sent to them stopped (not the launcher's cancel)."""
    not_started: list[str] = field(default_factory=list)


def _fan_out(settings: Settings, folder: Path, root: Path, stages: list[str], say: Callable[[str], None],
             ended: Callable[[], None] = lambda: None) -> Outcome:
    """Run `stages` as jobs, at most settings.jobs at once, calling `ended` as each ends. After a failure no
    job starts: locally none is submitted, on SLURM the array's pending tasks are cancelled; the running
    ones end."""
    executor = make_executor(settings, folder)
    env = local_environment(settings.jobs) if settings.kind == "local" else {}
    env[LAUNCH_ENV] = os.environ.get(LAUNCH_ENV)  # explicit: an sbatch --export=NONE would drop it
    pending, running, outcome, cancelled, tried_cancel = list(stages), {}, Outcome(), False, False

    def submit_one(stage: str) -> None:
        with stderr_to(folder / "controllers.log"):
            running[stage] = executor.submit(run_stage_job, str(root), stage, env)
        say(f"  submitted {stage} (job {running[stage].job_id})")

    try:
        if settings.kind == "slurm":  # one array; slurm keeps at most `jobs` of it running
            try:
                with stderr_to(folder / "controllers.log"):  # sbatch's own refusal is quoted below, once
                    running.update(submit_array(executor, root, pending, env))
            except Exception as exc:  # noqa: BLE001 -- sbatch's refusal, as submitit reports it
                raise LaunchError(f"sbatch refused the jobs: {str(exc).strip()[-1000:]}\n{SBATCH_FIX}") from None
            pending = []
            note_array(root / LOGS.parent, _array_id(running))
            say(f"  submitted {count(len(running), 'job')} as array {_array_id(running)}")
        while pending or running:
            ended_badly = outcome.failures or outcome.stopped
            while pending and len(running) < settings.jobs and not ended_badly:
                submit_one(pending.pop(0))
            if ended_badly and pending:
                outcome.not_started += pending
                pending = []
            if ended_badly and running and settings.kind == "slurm" and not tried_cancel:
                tried_cancel, cancelled = True, cancel_pending(_array_id(running), say)
            time.sleep(0.5)
            for stage, job in list(running.items()):
                # submitit waits for a PREEMPTED job's requeue, which --no-requeue rules out
                preempted = settings.kind == "slurm" and job.state.upper().startswith("PREEMPTED")
                if not (preempted or job.done()):
                    continue
                del running[stage]
                ended()
                log = str(job.paths.stdout)
                if cancelled and not job.paths.result_pickle.exists() and job.state.upper().startswith("CANCELLED"):
                    outcome.not_started.append(stage)
                    continue
                if preempted and not job.paths.result_pickle.exists():
                    outcome.stopped[stage] = "PREEMPTED"
                    say(f"  STOPPED {stage} by PREEMPTED; log {log}")
                    continue
                try:
                    record = job.result()
                except Exception as exc:  # noqa: BLE001 -- submitit wraps the job's exception
                    if stopped := STOPPED.search(str(exc)) or ENDED_BY_SLURM.search(str(exc)):
                        outcome.stopped[stage] = stopped.group(1)
                        say(f"  STOPPED {stage} by {stopped.group(1)}; log {log}")
                        continue
                    outcome.failures.append(f"{stage}: {job_reason(job, exc)}\n    logs: {log}, {job.paths.stderr}")
                    say(f"  FAILED {stage}; log {log}")
                    continue
                outcome.records.append({**record, "job_id": job.job_id, "log": log})
                say(f"  done {stage} in {record['end'] - record['start']:.1f} s")
    except BaseException:
        cancel_jobs(settings.kind, list(running.values()), say)
        raise
    return outcome


def _array_id(running: dict) -> str:
    return next(iter(running.values())).job_id.split("_")[0]


def _stages(path: Path) -> Counter[str]:
    """The stage names of a dvc.yaml (those of the root one include the waves' upstream stages), with the cells
    each runs (its foreach entries, or 1)."""
    import yaml

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Counter({name: len(stage.get("foreach") or [None]) for name, stage in document["stages"].items()})
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise LaunchError(f"{path} is not a readable pipeline ({exc.__class__.__name__}); rewrite it with "
                          "`chemspec compile <study.yaml>`") from None


@dataclass
class LaunchResult:
    kind: str
    jobs: int
    folder: str
    dry_run: bool
    waves: list[dict]
    records: list[dict] = field(default_factory=list)
    final: list[str] = field(default_factory=list)
    repro_ran: list[str] = field(default_factory=list)


def launch(settings: Settings, root: str | Path = ".", dry_run: bool = False,
           say: Callable[[str], None] = lambda _: None) -> LaunchResult:
    root = Path(root).resolve()
    if not (root / ".dvc").is_dir():
        raise LaunchError(f"{root} is not a DVC project (it has no .dvc folder); run `git init && dvc init` there, "
                          "then `chemspec compile <study.yaml>`")
    if not (root / "dvc.yaml").is_file():
        raise LaunchError(f"{root} holds no DVC pipeline (dvc.yaml); run `chemspec compile <study.yaml>` there first")
    stages = _stages(root / "dvc.yaml")
    check_sbatch(settings.sbatch, settings.gpus_per_job if settings.kind == "slurm" else 0, settings.spec_sbatch)
    if settings.kind == "slurm" and not dry_run:
        import shutil

        missing = [program for program in ("sbatch", "srun") if shutil.which(program) is None]
        if missing:
            raise LaunchError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not on PATH: run "
                              "`chemspec launch --executor slurm` on a SLURM login node, `--executor local` to run "
                              "the cells on this machine (the study's executor.kind, or --executor, chose slurm), or "
                              "`--dry-run` to see the scripts it would submit")
    if settings.kind == "slurm" and not hardlink_lock(root):
        say("note: core.hardlink_lock is not set, so dvc locks this project with flock, which every node must "
            "see coherently on the shared filesystem (NFS may not); if in doubt, with no dvc running: `dvc config "
            "core.hardlink_lock true && rm -f .dvc/tmp/lock .dvc/tmp/rwlock.lock`")
    folder = root / LOGS / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    result = LaunchResult(kind=settings.kind, jobs=settings.jobs, folder=str(folder), dry_run=dry_run, waves=[])
    cell_stages = sum((_stages(path) for path in sorted(root.glob(f"{PIPELINES}/*/dvc.yaml"))), stages)
    waves = [([s for s in upstream if s in stages], groups) for upstream, groups in WAVES
             if set(cell_stages).intersection(groups)]  # a study without generation has no sample wave
    if dry_run:
        if holder := running_launch(root / LOGS.parent):
            raise LaunchError(f"a `chemspec launch` is running in this project ({holder}); while its dvc holds the "
                              "project's lock, which cells are stale cannot be read: dry-run when it has ended")
        for upstream, groups in waves:
            cells = stale(root, groups)
            wave = {"upstream": shlex.join(["dvc", "repro", *upstream]), "stages": cells,
                    "commands": [shlex.join(job_command(s)) for s in cells]}
            if settings.kind == "slurm" and cells:
                wave["sbatch"] = sbatch_script(for_wave(settings, groups), folder, len(cells))
            result.waves.append(wave)
        result.final = ["dvc repro"]
        return result
    ignored_folder(root / LOGS.parent)
    with one_launch(root / LOGS.parent), stopped_by_signals():
        if live := live_arrays(root / LOGS.parent, say):
            listed = ", ".join(f"{array} ({count(tasks, 'task')})" for array, tasks in live.items())
            raise LaunchError(f"jobs of an earlier launch in this project still run or wait on SLURM (array {listed}), "
                              "though their launcher has ended; a new launch would train their cells a second time: "
                              f"wait for them to end, or `scancel {' '.join(live)}`, then rerun")
        folder.mkdir(parents=True, exist_ok=True)
        if settings.kind == "slurm":
            try_submission(settings, [(groups, sum(cell_stages[g] for g in groups)) for _, groups in waves], folder)
        for upstream, groups in waves:
            say(f"dvc repro {' '.join(upstream)} (log: {folder / 'dvc.log'})")
            _dvc(root, "repro", *upstream, log=folder / "dvc.log")
            cells = stale(root, groups)
            result.waves.append({"upstream": f"dvc repro {' '.join(upstream)}", "stages": cells})
            if not cells:
                continue
            noun = "cell" if len(cells) == 1 else "cells"
            serial = " (executor.jobs, or -j, runs more)" if settings.jobs == 1 and len(cells) > 1 else ""
            say(f"{len(cells)} stale {'/'.join(groups)} {noun}, {settings.jobs} at once{serial} ({settings.kind}); "
                f"logs in {folder}")
            with guard_lock_files(root, say, after_errors=settings.kind == "local") as guard:
                outcome = _fan_out(for_wave(settings, groups), folder, root, cells, say, guard.seen)
            result.records += outcome.records
            (folder / "jobs.json").write_text(json.dumps(result.records, indent=2))
            stopped = sorted(outcome.stopped, key=cells.index)  # jobs end in any order; name them in cell order
            if stopped and not outcome.failures:
                kinds = sorted(set(outcome.stopped.values()))
                raise Interrupted(interrupted("/".join(kinds), f"{count(len(stopped), 'job')} received it "
                                              f"({', '.join(stopped)}), not through the launch (a signal to "
                                              "the whole process group, a cancel, a time limit or preemption)"))
            if outcome.failures:
                outcome.failures += [f"{stage}: stopped by {outcome.stopped[stage]}" for stage in stopped]
                listed = "\n".join(f"  {f}" for f in outcome.failures)
                unstarted = (f"\n{len(outcome.not_started)} not started: {', '.join(outcome.not_started)}"
                             if outcome.not_started else "")
                raise LaunchError(f"{len(outcome.failures)} of {len(cells)} jobs failed:\n{listed}{unstarted}\nfix "
                                  "the cause and rerun `chemspec launch`; cells that finished are recorded in "
                                  "dvc.lock and will not run again")
        say(f"dvc repro (log: {folder / 'dvc.log'})")
        ran = _dvc(root, "repro", log=folder / "dvc.log")
        result.repro_ran = list(dict.fromkeys(re.findall(r"^Running stage '([^']+)'", ran, flags=re.MULTILINE)))
    result.final = stale(root)
    if result.final:
        raise LaunchError(f"`dvc status` still reports {', '.join(result.final)} after the launch; "
                          "run `dvc repro` to finish, and report this")
    return result
