"""The results verbs of `chemspec` besides report (cli_report): archive ls/show/verify, diff, pull and refit.

Like every verb they parse, call one api function and render; `cli` registers them."""

from __future__ import annotations

import json

import click

from chemspec import api
from chemspec.cli_report import echo_errors, echo_fits, hparams_text
from chemspec.words import shown


@click.group()
def archive() -> None:
    """Inspect the content-addressed archive."""


@archive.command(name="ls")
@click.option("--root", default="archive", type=click.Path(file_okay=False),
              help="Archive folder (not the project root).")
def archive_ls(root: str) -> None:
    """List archived runs (manifests); * marks each study's newest. `at` names the newest commit at which the run
    is its study's (what `pull` and `refit` take), `-` where no commit holds it as such."""
    runs, problems, leftovers = api.archive_ls(root)
    width = max([20, *(len(run["study"]) for run in runs)])
    if runs:
        click.echo(f"  {'manifest':<16}  {'study':<{width}} {'cells':>10}  {'at (commit)':<15}  compute")
    for run in runs:
        mark = "*" if run["current"] else " "
        cells = "?" if run["cells"] is None else run["cells"]
        click.echo(f"{mark} {run['manifest'][:16]}  {run['study']:<{width}} {cells:>4} cells  "
                   f"at {(run['at'] or '-')[:12]:<12}  {run['compute_hours']:.4f} h")
    _notes(leftovers)
    if problems:
        click.echo("error: archive ls could not read:\n" + "\n".join(f"  {p}" for p in problems), err=True)
        raise click.exceptions.Exit(1)


@archive.command(short_help="Show one archived run's manifest, by id (a prefix is enough) or study name.")
@click.argument("run", metavar="MANIFEST_ID|STUDY")
@click.option("--root", default="archive", type=click.Path(file_okay=False),
              help="Archive folder (not the project root).")
def show(run: str, root: str) -> None:
    """Show one archived run's manifest: give its id (a prefix is enough), or a study's name for its newest
    run, as `chemspec archive ls` lists them."""
    click.echo(json.dumps(api.archive_show(run, root), indent=2, sort_keys=True))


@archive.command()
@click.option("--root", default="archive", type=click.Path(file_okay=False),
              help="Archive folder (not the project root).")
def verify(root: str) -> None:
    """Re-hash every archived object and check every manifest's; exit 1 on any missing or corrupt object."""
    checked, leftovers = api.archive_verify(root)
    click.echo(f"{checked} objects verified in {root}")
    _notes(leftovers)


def _notes(lines: list[str]) -> None:
    for line in lines:
        click.echo(f"note: {line}", err=True)


@click.command(short_help="Compare the archived results of two git revisions.")
@click.argument("rev_a", default="HEAD")
@click.argument("rev_b", default="WORKTREE")
@click.option("--study", default=None, help="Study to compare (default: the one compiled into params.yaml, where "
                                            "several are archived).")
@click.option("--params", default="params.yaml", type=click.Path(dir_okay=False),
              help="Compiled params file, whose study is the default.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def diff(rev_a: str, rev_b: str, study: str | None, params: str, as_json: bool) -> None:
    """Compare the archived results of two git revisions: REV_A (default HEAD) and REV_B (default WORKTREE,
    the files on disk). Either may be a manifest id (a prefix is enough) instead, as `chemspec archive ls`
    lists them: the run that id names, of its study."""
    from chemspec.archive.snapshot import WORKTREE
    from chemspec.runtime.result_files import TEST_ERRORS

    result = api.diff(rev_a, rev_b, study, params)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    was = f" (against a run of {result['study_a']!r})" if "study_a" in result else ""
    click.echo(f"study {result['study']}{was}: {rev_a} ({result['a']['manifest'][:12]}) -> "
               f"{rev_b} ({result['b']['manifest'][:12]})")
    for change in result["spec"]:
        click.echo(f"  spec {change['field']}: {json.dumps(change['before'])} -> {json.dumps(change['after'])}")
    for change in result["data"]:
        what = ("contents (files' hash)" if change["field"] == "data.sha256" else change["field"].removeprefix("data."))
        click.echo(f"  data {what}: {json.dumps(change['before'])} -> {json.dumps(change['after'])}")
    for change in result["selection"]:
        search = "" if change["group"] == "*" else f" of {change['group']}"
        before, after = ("; ".join(map(hparams_text, kept)) if kept else "none"
                         for kept in (change["before"], change["after"]))
        labels = ["hpo.grid's only configuration" if change[f"unranked_{side}"] else "TPE kept"
                  for side in ("before", "after")]
        if labels[0] == labels[1]:
            click.echo(f"  {labels[0]}{search}: {before} -> {after}")
        else:
            click.echo(f"  selection{search}: {before} ({labels[0]}) -> {after} ({labels[1]})")
    cells = result["cells"]
    for sign, keys in (("+", cells["added"]), ("-", cells["removed"])):
        for key in keys:
            cell = cells["losses"][key]
            loss = f"val loss {shown(cell['val_loss'])}" if cell["status"] == "ok" else cell["status"]
            click.echo(f"  {sign} cell {key}: {loss}")
    for row in cells["changed"]:
        status = (f"{row['status_before']} -> {row['status_after']}, "
                  if row["status_before"] != row["status_after"] else "")
        params = f"params {row['params_before']:,} -> {row['params_after']:,}, " if "params_before" in row else ""
        before, after = (hparams_text(row.get(f"hparams_{side}")) or "none" for side in ("before", "after"))
        hparams = f"hparams {before} -> {after}, " if "hparams_before" in row else ""
        errors = "".join(f", test {label} {_change(row[f'{key}_before'], row[f'{key}_after'])}"
                         for key, label in TEST_ERRORS.values() if f"{key}_before" in row)
        again = ("; the same stage and cell identity trained both: it did not reproduce"
                 if row.get("same_identity") else "")
        if "ranks_left_out_after" in row:  # runs archived before 2026-12-06 record no ranks left out
            before, after = row["ranks_left_out_before"], row["ranks_left_out_after"]
            ranks = [f"{name} {status}" + (f" (was {before[name]})" if before.get(name, status) != status else "")
                     for name, status in after.items()]
            ranks += [f"{name} {status} before, not now" for name, status in before.items() if name not in after]
            again += "; other kept configurations: " + ", ".join(ranks)
        click.echo(f"  ~ cell {row['cell']}: {status}{params}{hparams}val loss "
                   f"{_change(row['val_loss_before'], row['val_loss_after'])}{errors}{again}")
    alike = cells["generation_alike"]
    for metric in alike:
        rows = [row for row in cells["generation"] if row["metric"] == metric]
        click.echo(f"  ~ all {len(rows)} cells: {metric} {_change(rows[0]['before'], rows[0]['after'])}")
    for row in (row for row in cells["generation"] if row["metric"] not in alike):
        click.echo(f"  ~ cell {row['cell']}: {row['metric']} {_change(row['before'], row['after'])}")
    changed = [row for row in result["exponents"] if row["before"] != row["after"]]
    for row in changed:
        flag = {True: "significant", False: "not significant", None: "untested"}[row["significant"]]
        sides = (_with_ci(row[side], row[f"ci_{side}"], row.get(f"ci_profile_{side}")) for side in ("before", "after"))
        reasons = "".join(f"; {side}: {row[f'reason_{side}']}" for side in ("before", "after")
                          if f"reason_{side}" in row)
        click.echo(f"  exponent {row['axis']}/{row['group']} ({row['law']}): "
                   f"{' -> '.join(sides)} ({flag} at {result['confidence']:.0%}{reasons})")
    if any(row["significant"] is not None for row in changed):
        click.echo(f"  (significance: {result['test']})")
    if not (result["spec"] or result["data"] or result["selection"]
            or any(cells[k] for k in ("added", "removed", "changed", "generation"))
            or changed):
        same = "the same run" if result["a"]["manifest"] == result["b"]["manifest"] else "runs alike"
        if result["unarchived"] or result["stale"]:  # the study on disk is not what either archived run ran
            unrun = ("what is compiled was not run (see the notes)" if result["unarchived"] else
                     "the working tree's study may not be what they ran (see the note on its results)")
            click.echo(f"  no changes between the archived runs (spec, data, cells and exponents); {unrun}")
        else:
            click.echo(f"  no changes: {same} (spec, data, cells and exponents)")
    if result["stale"] or result["unarchived"]:
        _notes([*result["unarchived"], *([f"{WORKTREE}: {result['stale']}"] if result["stale"] else [])])


def _with_ci(value: float | None, ci: list | None, profile: list | None = None) -> str:
    """The exponent with its Wald interval, which the significance test uses, and the profile interval the report
    tells to quote, where the law has one."""
    if value is None or not ci:
        return shown(value, missing="none")
    text = f"{shown(value)} [{shown(ci[0], missing='open')}, {shown(ci[1], missing='open')}]"
    if not profile:
        return text
    return f"{text} (profile [{shown(profile[0], missing='open')}, {shown(profile[1], missing='open')}])"


def _change(before: float | None, after: float | None) -> str:
    return f"{shown(before, missing='none')} -> {shown(after, missing='none')}"


@click.command(short_help="Bring an archived run back, checkpoints included.")
@click.argument("target")
@click.option("--to", "to", default=None, type=click.Path(file_okay=False),
              help="Directory to create (default: pulled/<study>-<manifest id>).")
@click.option("--study", default=None, help="Study to pull (needed when several are archived).")
def pull(target: str, to: str | None, study: str | None) -> None:
    """Bring an archived run (git revision or manifest id) back into a directory, checkpoints included."""
    result = api.pull(target, to, study)
    if result.get("already"):
        click.echo(f"study {result['study']} (manifest {result['manifest'][:12]} at {result['rev'][:12]}) is already "
                   f"pulled into {result['to']}, unedited: nothing to do")
        return
    click.echo(f"pulled study {result['study']} (manifest {result['manifest'][:12]} at {result['rev'][:12]}): "
               f"{result['objects']} objects, {result['checkpoints']} checkpoints -> {result['to']}")
    notes = [f"{result['unchecked']} checkpoints were archived before chemspec recorded their hashes, so they are "
             "as the remote returned them, unchecked"] if result["unchecked"] else []
    if not result["checkpoints"]:
        notes.append("this run's manifest names no checkpoints (its models were not archived), so its results came "
                     "back without them (refit needs none)")
    _notes(notes)


@click.command(short_help="Refit archived losses without training.")
@click.argument("source")
@click.option("--law", "laws", multiple=True, type=click.Choice(["power", "saturating", "joint"]),
              help="Law to fit (repeatable); default: the laws of the archived fit.")
@click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Confidence level of the intervals; default: the archived fit's.")
@click.option("--study", default=None, help="Study to refit (needed when several are archived).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def refit(source: str, laws: tuple[str, ...], confidence: float | None, study: str | None, as_json: bool) -> int:
    """Refit archived losses (a pulled directory, a git revision or a manifest id) without training; exit 1
    when no law could be fitted anywhere."""
    result = api.refit(source, list(laws) or None, confidence, study)
    if result["edited"]:
        verb = "differs" if len(result["edited"]) == 1 else "differ"
        _notes([f"{', '.join(result['edited'])} of {source} {verb} from the run pulled into it (its manifest.json): "
                "these fits are of the edited files, not of the archive"])
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(f"study {result['study']} from {source}\n" if result["study"] else f"cells of {source}\n")
        echo_fits(result["fits"], result["confidence"])
        echo_errors(result["errors"] or [])
    if not result["fitted"]:
        click.echo("error: no law could be fitted to these cells (each fit above says why); refit with a law the "
                   "grid has the sizes for (--law power needs 3 sizes on an axis)", err=True)
    return 0 if result["fitted"] else 1
