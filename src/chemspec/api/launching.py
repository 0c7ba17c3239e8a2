"""The verb that runs a compiled pipeline with its stale cells as parallel jobs: launch."""

from __future__ import annotations

from pathlib import Path

from chemspec.api.compiled import changed_study
from chemspec.api.stages import load_cells
from chemspec.errors import UsageError


def _unchanged_since_compiled(params: Path) -> None:
    """Refuse a launch whose study file compiles to other files now: launch runs dvc.yaml and params.yaml,
    executor section included, as they were last compiled."""
    changed = changed_study(params)
    if changed:
        why, again, errors = changed
        raise UsageError(f"{why}; launch runs the pipeline as last compiled, executor section included: run "
                         f"`{again}` first{errors}")


def launch(params: str | Path = "params.yaml", kind: str | None = None, jobs: int | None = None,
           dry_run: bool = False, sbatch: dict[str, str | bool] | None = None, say=lambda _: None):
    """Run the compiled pipeline with stale cells as submitit jobs; defaults come from the study's executor."""
    from chemspec.launch import launch as run_launch
    from chemspec.launch_jobs import Settings

    cells = load_cells(params)
    _unchanged_since_compiled(Path(params))
    executor = cells.executor
    training = next(iter(cells.train.values())).training  # every cell's, as compiled
    kind = kind or executor.kind
    if sbatch and kind != "slurm":
        raise UsageError(f"--sbatch sets options of SLURM jobs, but this launch runs its cells on the {kind} "
                         "executor (--executor or the study's executor.kind); drop --sbatch, or add --executor slurm")
    given = (sbatch or {}).get("gpus-per-node")
    devices = training.devices if training.accelerator != "cpu" and isinstance(training.devices, int) else 0
    if isinstance(given, str) and given.rpartition(":")[2].isdigit() and int(given.rpartition(":")[2]) < devices:
        raise UsageError(f"--sbatch gpus-per-node={given} is fewer than training.devices ({devices}): a cell's job "
                         f"needs a GPU per device; give {devices}, or leave it out")
    settings = Settings(kind=kind, jobs=jobs or executor.jobs, study=cells.archive.study,
                        partition=executor.slurm.partition, account=executor.slurm.account,
                        gpus_per_job=executor.slurm.gpus(training), time_min=executor.slurm.time_min,
                        setup=tuple(executor.slurm.setup), stage_time_min=dict(executor.slurm.stage_time_min),
                        sbatch={**executor.slurm.sbatch, **(sbatch or {})},
                        spec_sbatch=frozenset(executor.slurm.sbatch.keys() - (sbatch or {}).keys()))
    return run_launch(settings, Path(params).resolve().parent, dry_run=dry_run, say=say)
