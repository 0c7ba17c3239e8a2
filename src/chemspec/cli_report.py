"""`chemspec report`: the study's cells, fits, test errors, generation quality and TPE decisions in the terminal;
the helpers that render numbers and fits there, which the results verbs (cli_results) share."""

from __future__ import annotations

import json

import click

from chemspec import api
from chemspec.words import count, shown


def hparams_text(values: dict | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (values or {}).items())


@click.command(short_help="Show cells and fitted exponents; write HTML and Markdown pages.")
@click.option("--params", default="params.yaml", type=click.Path(dir_okay=False), help="Compiled params file.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--no-files", is_flag=True, help="Do not write report/index.html and report/report.md.")
@click.option("--from", "source", metavar="REV|ID",
              help="Report the run archived at this git revision (or WORKTREE), or with this manifest id (a start is "
                   "enough), instead; pages go to reports/<study>/.")
@click.option("--study", help="Study to report with --from (needed when several are archived); without --from, "
                               "only the compiled study.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for the pages of --from (default reports/<study>/).")
def report(params: str, as_json: bool, no_files: bool, source: str | None, study: str | None, out: str | None) -> None:
    """Show the study's cells and fitted scaling exponents; write an HTML page and a Markdown summary."""
    from chemspec.report import (LOSS_NOTES, baseline_text, data_text, errors_text, provenance_text, speed_text,
                                 untimed_text)

    result = api.report(params, write=not no_files, source=source, study=study, out=out)
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
        if result.stale:
            click.echo(f"warning: {result.stale}", err=True)
        return
    click.echo(f"study {result.study} from {source} (manifest {result.manifest[:12]})\n" if source else
               f"study {result.study}\n")
    click.echo(f"{' '.join(filter(None, [result.model, data_text(result.data)]))}\n")
    forces = any("force_mae_meV_per_A" in c for c in result.cells)
    extra = f" {'test F MAE meV/Å':>16} {'test E MAE meV':>14}" if forces else ""  # the pages' order
    click.echo(f"{'model':<10} {'params':>12} {'data':>9} {'val loss':>9} {'test loss':>9}{extra} {'speed':>22}  "
               "hparams")
    for c in result.cells:
        hp = hparams_text(c["hparams"])
        flag = "" if c["status"] == "ok" else f"  {c['status'].upper()} (left out of the fits)"
        mae = f" {shown(c.get('force_mae_meV_per_A')):>16} {shown(c.get('energy_mae_meV')):>14}" if forces else ""
        click.echo(f"{c['model']:<10} {c['params']:>12,} {c['data_size']:>9,} {shown(c['val_loss']):>9} "
                   f"{shown(c.get('test_loss')):>9}{mae} {speed_text(c):>22}  {hp}{flag}")
    click.echo(f"\n{' '.join(filter(None, [LOSS_NOTES[forces], untimed_text(result.cells)]))}")
    if baseline := baseline_text(result.cells):
        click.echo(f"\n{baseline}")
    click.echo()
    echo_fits(result.fits, result.fit["confidence"])
    echo_errors(result.fit.get("errors") or [])
    if errors := errors_text(result.cells, result.fit, result.study, result.manifest):
        click.echo(f"\n{errors}")
    _echo_generation(result.cells)
    _echo_selection(result.selected)
    _echo_notes(result.fit)
    if provenance_text(result.provenance):
        click.echo(f"\n{provenance_text(result.provenance)}")
    for path in result.files:
        click.echo(f"wrote {path}")
    for note in (result.pages, result.checkpoints):
        if note:
            click.echo(f"\nnote: {note}", err=True)
    if result.stale:
        click.echo(f"\nwarning: {result.stale}", err=True)


def _echo_selection(selected: dict | None) -> None:
    """What TPE decided for each configuration it ranked, as the pages' table gives it."""
    if not selected or all(c.get("unranked") for c in selected["configs"]):
        return
    click.echo(f"\nTPE (estimate: {selected['estimator']}):")
    for c in selected["configs"]:
        click.echo(f"  {c['name']:<20} {shown(c['estimate']):>9}  rank {c['rank'] or '-':<3} {c['reason']}")


def _echo_notes(fit: dict) -> None:
    """The bootstrap, the seed noise and what TPE cost, a sentence each, worded as in the report pages."""
    from chemspec.report import bootstrap_text, cost_text, noise_text

    for text in (bootstrap_text(fit.get("bootstrap"), fit["confidence"]),
                 noise_text(fit.get("noise"), fit.get("joint")), cost_text(fit["cost"]) if fit.get("cost") else ""):
        if text:
            click.echo(f"\n{text}")


def _echo_generation(cells: list[dict]) -> None:
    sampled = [c for c in cells if c.get("generation")]
    if not sampled:
        return
    from chemspec.report import few_valid_text, unfinished_text
    from chemspec.runtime.quality import METRICS, SHORT_LABELS

    click.echo(f"\n{'model':<10} {'data':>9} " + " ".join(f"{SHORT_LABELS[k]:>9}" for k in METRICS))
    for c in sampled:
        click.echo(f"{c['model']:<10} {c['data_size']:>9,} "
                   + " ".join(f"{shown(c['generation'][k]):>9}" for k in METRICS))

    for said in (unfinished_text(sampled), few_valid_text(sampled)):
        if said:
            click.echo(said)
    unscored = [c for c in sampled if c["generation"]["fcd"] is None]
    if unscored:
        click.echo(f"FCD -: {count(len(unscored), 'cell')} not scored, as a rule for sampling fewer valid molecules "
                   f"than the {unscored[0]['generation'].get('fcd_molecules')} every cell's FCD is scored on "
                   "(generation.fcd_molecules); left out of the FCD fit (each sample cell's generation.json, "
                   "notes.fcd, says why)")


def echo_errors(fits: list[dict]) -> None:
    """A force field's test-error power laws, under the loss's."""
    from chemspec.report import interval_text
    from chemspec.report.texts import untrained_points

    if not fits:
        return
    click.echo(f"\n{'test error':<24} {'axis':<7} {'group':<10} {'exponent':>9}  {'Wald (t)':<18}  n  R²")
    for f in fits:
        lead = f"{f['quantity']:<24} {f['axis']:<7} {f['group']:<10}"
        weak = f"  ({untrained_points(f)})" if untrained_points(f) else ""
        click.echo((f"{lead} {f['exponent']:>9.3f}  {interval_text(f['ci']):<18} {f['n']:>2}  {f['r2']:.3f}"
                    if f["status"] == "ok" else f"{lead} {'-':>9}  cannot fit: {f['reason']}") + weak)


def echo_fits(fits: list[dict], confidence: float) -> None:
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
