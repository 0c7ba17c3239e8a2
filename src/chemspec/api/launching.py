"""The verb that runs a compiled pipeline with its stale cells as parallel jobs: launch."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from chemspec.api.project import compile, load_cells
from chemspec.compiler.render import GENERATED
from chemspec.errors import SpecError, UsageError


def compiled_from(params: Path) -> Path | None:
    """The study file that params.yaml's first line says it was compiled from (relative to the project
    root, where params.yaml is); None where the line names none, or a file that is not there."""
    try:
        with open(params, encoding="utf-8") as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError):
        return None
    named = first.removeprefix(GENERATED).strip().partition("`")[0] if first.startswith(GENERATED) else ""
    spec = params.parent / named
    return spec if named and spec.is_file() else None


def _unchanged_since_compiled(params: Path) -> None:
    """Refuse a launch whose study file compiles to other files now: launch runs dvc.yaml and params.yaml,
    executor section included, as they were last compiled."""
    spec = compiled_from(params)
    if spec is None:
        return
    root = params.parent
    again = shlex.join(["chemspec", "compile", os.path.relpath(spec)]
                       + ([] if root.resolve() == Path.cwd().resolve() else ["--root", os.path.relpath(root)]))
    try:
        stale = compile(spec, root, check=True).stale
    except SpecError as exc:
        raise UsageError(f"{os.path.relpath(spec)}, which {params} was compiled from, does not validate now (the "
                         f"study, its data or chemspec changed since); fix it and run `{again}`, then launch "
                         f"again:\n{exc}") from None
    if stale:
        raise UsageError(f"{os.path.relpath(spec)} compiles to other files now ({', '.join(stale)} would differ: the "
                         "study or chemspec changed since the last compile), and launch runs the pipeline as last "
                         f"compiled, executor section included; run `{again}` first")


def launch(params: str | Path = "params.yaml", kind: str | None = None, jobs: int | None = None,
           dry_run: bool = False, sbatch: dict[str, str | bool] | None = None, say=lambda _: None):
    """Run the compiled pipeline with stale cells as submitit jobs; defaults come from the study's executor."""
    from chemspec.launch import launch as run_launch
    from chemspec.launch_jobs import Settings
    from chemspec.specs.training import Training

    cells = load_cells(params)
    _unchanged_since_compiled(Path(params))
    executor = cells.executor
    training = Training.model_validate(cells.archive.spec["training"])
    kind = kind or executor.kind
    if sbatch and kind != "slurm":
        raise UsageError(f"--sbatch sets options of SLURM jobs, but this launch runs its cells on the {kind} "
                         "executor (--executor or the study's executor.kind); drop --sbatch, or add --executor slurm")
    settings = Settings(kind=kind, jobs=jobs or executor.jobs, study=cells.archive.study,
                        partition=executor.slurm.partition, account=executor.slurm.account,
                        gpus_per_job=executor.slurm.gpus(training), time_min=executor.slurm.time_min,
                        sbatch={**executor.slurm.sbatch, **(sbatch or {})},
                        spec_sbatch=frozenset(executor.slurm.sbatch.keys() - (sbatch or {}).keys()))
    return run_launch(settings, Path(params).resolve().parent, dry_run=dry_run, say=say)
