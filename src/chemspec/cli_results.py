"""The results verbs of `chemspec`: report, archive ls/show/verify, diff, pull and refit.

Like every verb they parse, call one api function and render; `cli` registers them."""

from __future__ import annotations

import json

import click

from chemspec import api
from chemspec.words import count, number


def _fmt(value: float | None, missing: str = "-") -> str:
    if value is None:
        return missing
    return number(value)


@click.command(short_help="Show cells and fitted exponents; write HTML and Markdown pages.")
@click.option("--params", default="params.yaml", type=click.Path(dir_okay=False), help="Compiled params file.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--no-files", is_flag=True, help="Do not write report/index.html and report/report.md.")
@click.option("--from", "source", metavar="REV|ID",
              help="Report the run archived at this git revision (or WORKTREE), or with this manifest id (a start is "
                   "enough), instead; pages go to reports/<study>/.")
@click.option("--study", help="Study to report with --from (needed when several are archived); without --from, "
                               "only the compiled study.")
@click.option("--out", type=click.Path(file_okay=False), help="Folder for the pages of --from (default reports/<study>/).")
def report(params: str, as_json: bool, no_files: bool, source: str | None, study: str | None, out: str | None) -> None:
    """Show the study's cells and fitted scaling exponents; write an HTML page and a Markdown summary."""
    from chemspec.report import LOSS_NOTES, provenance_text, speed_text

    result = api.report(params, write=not no_files, source=source, study=study, out=out)
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
        if result.stale:
            click.echo(f"warning: {result.stale}", err=True)
        return
    click.echo(f"study {result.study}\n")
    forces = any("force_mae_meV_per_A" in c for c in result.cells)
    extra = f" {'test E MAE meV':>14} {'test F MAE meV/Å':>16}" if forces else ""
    click.echo(f"{'model':<10} {'params':>12} {'data':>9} {'val loss':>9} {'test loss':>9}{extra} {'speed':>22}  "
               "hparams")
    for c in result.cells:
        hp = _hparams(c["hparams"])
        flag = "" if c["status"] == "ok" else f"  {c['status'].upper()} (left out of the fits)"
        mae = f" {_fmt(c.get('energy_mae_meV')):>14} {_fmt(c.get('force_mae_meV_per_A')):>16}" if forces else ""
        click.echo(f"{c['model']:<10} {c['params']:>12,} {c['data_size']:>9,} {_fmt(c['val_loss']):>9} "
                   f"{_fmt(c.get('test_loss')):>9}{mae} {speed_text(c):>22}  {hp}{flag}")
    click.echo(f"\n{LOSS_NOTES[forces]}")
    click.echo()
    _echo_fits(result.fits, result.fit["confidence"])
    _echo_errors(result.fit.get("errors") or [])
    _echo_generation(result.cells)
    _echo_selection(result.selected)
    _echo_notes(result.fit)
    if provenance_text(result.provenance):
        click.echo(f"\n{provenance_text(result.provenance)}")
    for path in result.files:
        click.echo(f"wrote {path}")
    if result.stale:
        click.echo(f"\nwarning: {result.stale}", err=True)


def _echo_selection(selected: dict | None) -> None:
    """What TPE decided for each configuration it ranked, as the pages' table gives it."""
    if not selected or all(c.get("unranked") for c in selected["configs"]):
        return
    click.echo(f"\nTPE (estimate: {selected['estimator']}):")
    for c in selected["configs"]:
        click.echo(f"  {c['name']:<20} {_fmt(c['estimate']):>9}  rank {c['rank'] or '-':<3} {c['reason']}")


def _echo_notes(fit: dict) -> None:
    """The bootstrap, the seed noise and what TPE cost, a sentence each, worded as in the report pages."""
    from chemspec.report import bootstrap_text, cost_text, noise_text

    for text in (bootstrap_text(fit.get("bootstrap"), fit["confidence"]), noise_text(fit.get("noise"), fit.get("joint")),
                 cost_text(fit["cost"]) if fit.get("cost") else ""):
        if text:
            click.echo(f"\n{text}")


def _echo_generation(cells: list[dict]) -> None:
    sampled = [c for c in cells if c.get("generation")]
    if not sampled:
        return
    columns = {"validity": "valid", "trivial": "≤1 atom", "uniqueness": "unique", "novelty": "novel",
               "internal_diversity": "IntDiv", "fcd": "FCD"}
    click.echo(f"\n{'model':<10} {'data':>9} " + " ".join(f"{label:>9}" for label in columns.values()))
    for c in sampled:
        click.echo(f"{c['model']:<10} {c['data_size']:>9,} "
                   + " ".join(f"{_fmt(c['generation'][k]):>9}" for k in columns))
    from chemspec.report import few_valid_text, unfinished_text

    for said in (unfinished_text(sampled), few_valid_text(sampled)):
        if said:
            click.echo(said)
    unscored = [c for c in sampled if c["generation"]["fcd"] is None]
    if unscored:
        click.echo(f"FCD -: {count(len(unscored), 'cell')} not scored, as a rule for sampling fewer valid molecules "
                   f"than the {unscored[0]['generation'].get('fcd_molecules')} every cell's FCD is scored on "
                   "(generation.fcd_molecules); left out of the FCD fit (each sample cell's generation.json, "
                   "notes.fcd, says why)")


def _echo_errors(fits: list[dict]) -> None:
    """A force field's test-error power laws, under the loss's."""
    from chemspec.report import interval_text

    if not fits:
        return
    click.echo(f"\n{'test error':<24} {'axis':<7} {'group':<10} {'exponent':>9}  {'Wald (t)':<18}  n  R²")
    for f in fits:
        lead = f"{f['quantity']:<24} {f['axis']:<7} {f['group']:<10}"
        click.echo(f"{lead} {f['exponent']:>9.3f}  {interval_text(f['ci']):<18} {f['n']:>2}  {f['r2']:.3f}"
                   if f["status"] == "ok" else f"{lead} {'-':>9}  cannot fit: {f['reason']}")


def _echo_fits(fits: list[dict], confidence: float) -> None:
    from chemspec.report import interval_text, intervals_note

    ok = [f for f in fits if f["status"] == "ok"]
    wald = max([18] + [len(interval_text(f["ci"])) for f in ok])
    profile = max([18] + [len(interval_text(f.get("ci_profile"))) for f in ok])
    click.echo(f"{'axis':<7} {'group':<10} {'law':<10} {'exponent':>9}  {'Wald (t)':<{wald}} {'profile (F)':<{profile}}"
               "  n  R²")
    for f in fits:
        if f["status"] != "ok":
            click.echo(f"{f['axis']:<7} {f['group']:<10} {f['law']:<10} {'-':>9}  cannot fit: {f['reason']}")
            continue
        click.echo(f"{f['axis']:<7} {f['group']:<10} {f['law']:<10} {f['exponent']:>9.3f}  "
                   f"{interval_text(f['ci']):<{wald}} {interval_text(f.get('ci_profile')):<{profile}} {f['n']:>2}  "
                   f"{f['r2']:.3f}")
    click.echo(f"\n{intervals_note(confidence)}")


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
    from chemspec.archive.history import WORKTREE
    from chemspec.runtime.result_files import TEST_ERRORS

    result = api.diff(rev_a, rev_b, study, params)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"study {result['study']}: {rev_a} ({result['a']['manifest'][:12]}) -> "
               f"{rev_b} ({result['b']['manifest'][:12]})")
    for change in result["spec"]:
        click.echo(f"  spec {change['field']}: {json.dumps(change['before'])} -> {json.dumps(change['after'])}")
    for change in result["selection"]:
        search = "" if change["group"] == "*" else f" of {change['group']}"
        before, after = ("; ".join(map(_hparams, kept)) if kept else "none"
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
            shown = cells["losses"][key]
            loss = f"val loss {_fmt(shown['val_loss'])}" if shown["status"] == "ok" else shown["status"]
            click.echo(f"  {sign} cell {key}: {loss}")
    for row in cells["changed"]:
        status = (f"{row['status_before']} -> {row['status_after']}, "
                  if row["status_before"] != row["status_after"] else "")
        params = f"params {row['params_before']:,} -> {row['params_after']:,}, " if "params_before" in row else ""
        before, after = (_hparams(row.get(f"hparams_{side}")) or "none" for side in ("before", "after"))
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
    for row in cells["generation"]:
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
    if not (result["spec"] or result["selection"] or any(cells[k] for k in ("added", "removed", "changed", "generation"))
            or changed):
        same = "the same run" if result["a"]["manifest"] == result["b"]["manifest"] else "runs alike"
        if result["unarchived"] or result["stale"]:  # the study on disk is not what either archived run ran
            unrun = ("what is compiled was not run (see the notes)" if result["unarchived"] else
                     "the working tree's study may not be what they ran (see the note on its results)")
            click.echo(f"  no changes between the archived runs (spec, cells and exponents); {unrun}")
        else:
            click.echo(f"  no changes: {same} (spec, cells and exponents)")
    if result["stale"] or result["unarchived"]:
        _notes([*result["unarchived"], *([f"{WORKTREE}: {result['stale']}"] if result["stale"] else [])])


def _with_ci(value: float | None, ci: list | None, profile: list | None = None) -> str:
    """The exponent with its Wald interval, which the significance test uses, and the profile interval the report
    tells to quote, where the law has one."""
    if value is None or not ci:
        return _fmt(value, "none")
    text = f"{_fmt(value)} [{_fmt(ci[0], 'open')}, {_fmt(ci[1], 'open')}]"
    return f"{text} (profile [{_fmt(profile[0], 'open')}, {_fmt(profile[1], 'open')}])" if profile else text


def _change(before: float | None, after: float | None) -> str:
    return f"{_fmt(before, 'none')} -> {_fmt(after, 'none')}"


def _hparams(values: dict | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (values or {}).items())


@click.command(short_help="Bring an archived run back, checkpoints included.")
@click.argument("target")
@click.option("--to", "to", default=None, type=click.Path(file_okay=False),
              help="Directory to create (default: pulled/<study>-<manifest id>).")
@click.option("--study", default=None, help="Study to pull (needed when several are archived).")
def pull(target: str, to: str | None, study: str | None) -> None:
    """Bring an archived run (git revision or manifest id) back into a directory, checkpoints included."""
    result = api.pull(target, to, study)
    click.echo(f"pulled study {result['study']} (manifest {result['manifest'][:12]} at {result['rev'][:12]}): "
               f"{result['objects']} objects, {result['checkpoints']} checkpoints -> {result['to']}")
    if result["unchecked"]:
        _notes([f"{result['unchecked']} checkpoints were archived before chemspec recorded their hashes, so "
                "they are as the remote returned them, unchecked"])


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
        _echo_fits(result["fits"], result["confidence"])
        _echo_errors(result["errors"] or [])
    if not result["fitted"]:
        click.echo("error: no law could be fitted to these cells (each fit above says why); refit with a law the "
                   "grid has the sizes for (--law power needs 3 sizes on an axis)", err=True)
    return 0 if result["fitted"] else 1
