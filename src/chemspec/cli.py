"""The `chemspec` command: each verb parses, calls one api function, renders the result, returns a code."""

from __future__ import annotations

import errno
import faulthandler
import gc
import json
import os
import shlex
import signal
import sys
import traceback

import click

from chemspec import __version__, api
from chemspec.errors import INTERRUPTED, ChemspecError
from chemspec.cli_report import report
from chemspec.cli_results import archive, diff, pull, refit
from chemspec.runtime import STAGES
from chemspec.words import count


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks of errors.")
@click.version_option(__version__, prog_name="chemspec")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Declarative, reproducible neural-scaling studies of deep chemical models.

    \b
    chemspec compile specs/quickstart.yaml   # study -> dvc.yaml + params.yaml
    dvc repro                                # data, split, tpe, select, train, reference, sample, fit, archive
    chemspec report                          # cells and fitted exponents
    """
    ctx.obj = {"verbose": verbose}


@cli.command(short_help="Check a study file; every problem with its line:column.")
@click.argument("spec", type=click.Path(dir_okay=False))
def validate(spec: str) -> None:
    """Check a study file; list every problem with its line:column and field, and exit 2 if there is one."""
    study = api.validate(spec)
    sizes = f"{count(len(study.model.size_names()), 'model size')} x {count(len(study.data.sizes), 'data size')}"
    click.echo(f"{spec}: valid study {study.study!r} ({study.model.family}, {sizes}, "
               f"{count(len(study.hpo.grid.configs()), 'hyperparameter config')})")
    for note in study.notes():
        click.echo(f"note: {note}", err=True)


@cli.command()
def schema() -> None:
    """Print the JSON Schema of study files (for editor completion)."""
    click.echo(json.dumps(api.schema(), indent=2, sort_keys=True))


@cli.command(name="compile", short_help="Compile a study file into dvc.yaml and params.yaml.")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--check", is_flag=True,
              help="Write nothing; exit 1 if dvc.yaml, params.yaml, a pipelines/<size>/dvc.yaml or the .gitignore block is stale.")
@click.option("--root", default=".", type=click.Path(file_okay=False), help="Project root to write into.")
def compile_(spec: str, check: bool, root: str) -> None:
    """Compile a study file into dvc.yaml and params.yaml, and keep the block of .gitignore that holds the
    outputs DVC caches out of git."""
    result = api.compile(spec, root=root, check=check)
    if check:
        if result.stale:
            again = shlex.join(["chemspec", "compile", spec] + (["--root", root] if root != "." else []))
            changed = [name for name in result.stale if name not in result.missing]
            parts = [f"{label}: {', '.join(names)}" for label, names in (("missing", result.missing), ("stale", changed))
                     if names]
            click.echo(f"{'; '.join(parts)}; run `{again}`", err=True)
            raise click.exceptions.Exit(1)
        click.echo(f"up to date: {', '.join([*result.files, '.gitignore (its chemspec block)'])}")
        return
    written = ", ".join(result.written) or "nothing (already up to date)"
    removed = f"; removed {', '.join(result.removed)} (no stage of this grid is there now)" if result.removed else ""
    relocked = (f"; moved the DVC records of {len(result.relocked)} finished stages to the dvc.lock beside "
                "their new dvc.yaml (they stay up to date)" if result.relocked else "")
    click.echo(f"study {result.study!r}: wrote {written}{removed}{relocked}")
    for note in result.notes:
        click.echo(f"note: {note}", err=True)


@cli.command(short_help="Run one pipeline stage (dvc repro calls it).",
             help="Run one pipeline STAGE (called by `dvc repro`): " + ", ".join(STAGES) + ". `kill -USR2` "
             "prints the stack of every thread of a stage that seems hung (of every DDP rank and loader worker, sent "
             "to the process group).")
@click.argument("stage", type=click.Choice(STAGES), metavar="STAGE")
@click.option("--params", default="params.yaml", type=click.Path(dir_okay=False), help="Compiled params file.")
@click.option("--cell", default=None, help="Cell key of per-cell stages (tpe, calibrate, train, sample).")
@click.option("--identity", default=None, help="Expected identity of the cell (written by compile).")
def run(stage: str, params: str, cell: str | None, identity: str | None) -> None:
    if hasattr(signal, "SIGUSR2") and sys.__stderr__ is not None:  # the process's own stderr, not a capture
        faulthandler.register(signal.SIGUSR2, file=sys.__stderr__, all_threads=True)
    result = api.run(stage, params=params, cell=cell, expected_identity=identity)
    if result.get("status") == "worker":  # a DDP rank other than 0: rank 0 reports the cell
        return
    summary = {k: v for k, v in result.items()
               if isinstance(v, (int, float, str)) and k != "identity" and not k.endswith("sha256")}
    if isinstance(result.get("counts"), dict):  # the data stage's rows read and dropped, where any were
        summary.update((k, v) for k, v in result["counts"].items() if isinstance(v, int) and v and k not in summary)
    click.echo(f"{stage}{'@' + cell if cell else ''}: "
               + ", ".join(f"{k}={v if k == 'seed' else _brief(v)}" for k, v in summary.items()))


def _brief(value: int | float | str) -> str:
    """A number as a person reads it in a progress line (the full values are in the stage's JSON)."""
    if isinstance(value, (str, bool)):
        return str(value)
    if abs(value) >= (1e3 if isinstance(value, int) else 1e4):
        return f"{value:,.0f}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _sbatch_option(ctx, param, values: tuple[str, ...]) -> dict[str, str | bool]:
    """KEY=VALUE, or KEY alone for a flag without value (True: `#SBATCH --KEY`)."""
    pairs = [v.partition("=") for v in values]
    bad = [v for v, (key, _, _) in zip(values, pairs) if not key]
    if bad:
        raise click.BadParameter(f"{bad[0]!r}: write KEY=VALUE, e.g. qos=high, or KEY alone for a flag, e.g. exclusive")
    return {key: value if eq else True for key, eq, value in pairs}


@cli.command(short_help="Run the pipeline, stale cells as parallel jobs (local or SLURM).")
@click.option("--executor", "kind", type=click.Choice(["local", "slurm"]), default=None,
              help="Where cells run; default: the study's executor.kind.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Cells run at once; default: the study's executor.jobs.")
@click.option("--dry-run", is_flag=True, help="Run nothing: print the stale cells, their commands and sbatch scripts.")
@click.option("--sbatch", multiple=True, metavar="KEY[=VALUE]", callback=_sbatch_option,
              help="Extra #SBATCH option for slurm jobs (repeatable), e.g. --sbatch qos=high, --sbatch exclusive.")
@click.option("--params", default="params.yaml", type=click.Path(dir_okay=False), help="Compiled params file.")
def launch(kind: str | None, jobs: int | None, dry_run: bool, sbatch: dict[str, str], params: str) -> None:
    """Run the pipeline with stale per-cell stages (tpe, calibrate, train, sample) as parallel submitit jobs
    (local or SLURM)."""
    result = api.launch(params, kind=kind, jobs=jobs, dry_run=dry_run, sbatch=sbatch, say=click.echo)
    if not dry_run:
        ran = count(len(result.records), "job") if result.records else "no cell was stale, so no job ran"
        rest = (f"then dvc repro ran {', '.join(result.repro_ran)}" if result.repro_ran else
                "then dvc repro had nothing else to run")
        click.echo(f"launch complete: {ran} ({result.kind}, {result.jobs} at once), {rest}, dvc status clean; logs "
                   f"in {result.folder}")
        return
    click.echo(f"dry run: {result.kind} executor, {count(result.jobs, 'job')} at once, logs would go to "
               f"{result.folder}")
    for number, wave in enumerate(result.waves, 1):
        click.echo(f"\nwave {number}: `{wave['upstream']}`, then {count(len(wave['stages']), 'cell')} stale now as "
                   "jobs (more may turn stale when that command runs)")
        for command in wave["commands"]:
            click.echo(f"  job: {command}")
        if "sbatch" in wave:
            click.echo("  sbatch script:\n" + "\n".join(f"    {line}" for line in wave["sbatch"].splitlines()))
    click.echo(f"\nthen: {'; '.join(result.final)}")


for command in (report, archive, diff, pull, refit):
    cli.add_command(command)


def _os_error(exc: OSError) -> str:
    """A failed read or write, naming the file the user knows rather than a temporary one beside it."""
    from chemspec.runtime.io import final_path

    path = final_path(os.fsdecode(exc.filename))
    if exc.errno in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
        return f"{path}: {exc.strerror}; a file stands where a folder goes, or a folder where a file goes: move it"
    if exc.errno == errno.ENOENT:  # a bare name without a suffix is a program that a subprocess could not find
        program = len(path.parts) == 1 and not path.suffix
        named = "check the path, or install the program if it is one" if program else "check the path"
        return f"{path}: {exc.strerror}; {named}"
    return (f"{path}: {exc.strerror or exc}; check that you may read and write it and its folder, and that "
            "the disk has room, then rerun")


CLOSED_PIPE = 141
"""The exit code where the reader of the output closed it early (`chemspec report | head`): 128 + SIGPIPE, as a
Unix tool killed by the signal exits (git, grep), which `set -o pipefail` scripts know."""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    verbose = "-v" in args or "--verbose" in args
    if verbose:  # the group's flag, taken after the subcommand too (`chemspec validate x.yaml -v`)
        args = ["--verbose", *(arg for arg in args if arg not in ("-v", "--verbose"))]
    stdout = sys.stdout
    try:
        code = cli.main(args=args, prog_name="chemspec", standalone_mode=False)
    except ChemspecError as exc:
        if verbose:  # the traceback, and the exit code the error carries (2 for a bad spec), as without -v
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        for note in getattr(exc, "__notes__", ()):
            click.echo(f"note: {note}", err=True)
        return exc.exit_code
    except click.exceptions.Abort as exc:  # click's form of a KeyboardInterrupt in a command
        click.echo(INTERRUPTED, err=True)
        for note in getattr(exc.__cause__, "__notes__", ()):
            click.echo(f"note: {note}", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt as exc:
        click.echo(INTERRUPTED, err=True)
        for note in getattr(exc, "__notes__", ()):
            click.echo(f"note: {note}", err=True)
        return 130
    except SystemExit:
        if sys.stdout is not stdout:  # click wraps it where the reader closed the pipe (`| head`), then exits 1
            return CLOSED_PIPE
        raise
    except Exception as exc:  # noqa: BLE001 -- the last line of defence against a traceback
        if verbose:
            raise
        if isinstance(exc, OSError) and isinstance(exc.filename, (str, bytes, os.PathLike)):
            click.echo(f"error: {_os_error(exc)}", err=True)
            return 1
        click.echo(f"internal error: {type(exc).__name__}: {exc}\nrerun with `chemspec -v ...` for the "
                   "traceback, and report it", err=True)
        return 1
    return code if isinstance(code, int) else 0


def entry() -> None:
    code = main()
    # Python's last garbage collection walks every object that torch, lightning and transformers made,
    # about 1 s of each stage's start-to-exit on 2 cores; every result is written and closed by now.
    # atexit handlers still run; finalizers of objects caught in reference cycles no longer do.
    gc.freeze()
    sys.exit(code)
