"""The report pages and `chemspec report` output, made from the real fit stage's outputs: a compiled
tiny study whose train metrics are written by hand from a known law, fitted by `chemspec run fit`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from chemspec.api.folders import pages_folder
from chemspec.errors import UsageError
from chemspec.report import interval_text
from chemspec.runtime import io
from chemspec.runtime.quality import COLUMNS
from tests.conftest import REPO, archive_commit, launch_project, tiny_study, write_spec

PARAMS = {"xs": 1_000, "s": 4_000, "m": 16_000, "w8d2": 2_000, "w16d2": 8_000, "w32d2": 32_000}


def _loss(params: int, data: int) -> float:
    return 0.5 + 40 * params ** -0.3 + 30 * data ** -0.4


def fitted(cli, root: Path, study: dict, noise: float = 0.01, extra: dict | None = None) -> Path:
    """Compile `study` in `root`, write each train cell's metrics.json from a known law (with seeded
    multiplicative noise, and `extra` keys), run the fit stage; the study's results folder."""
    write_spec(root / "study.yaml", study)
    assert cli("compile", "study.yaml", cwd=root).code == 0
    fit = yaml.safe_load((root / "params.yaml").read_text())["cells"]["fit"]
    rng = np.random.default_rng(0)
    for key, path in fit["metrics"].items():
        model, size = key.split("-")[:2]
        params = PARAMS[model]
        loss = _loss(params, int(size)) * float(np.exp(rng.normal(0, noise)))
        io.write_json(root / path, {"cell": key, "model": model, "params": params, "data_size": int(size),
                                    "val_loss": loss, "test_loss": loss, "hparams": {"learning_rate": 0.001},
                                    "epochs": 2, "wall_time_s": 1.0, **(extra or {})})
    run = cli("run", "fit", cwd=root)
    assert run.code == 0, run.err
    return root / Path(fit["out_dir"]).parent


def test_report_md_links_the_plots_where_they_are(cli, tmp_path):
    results = fitted(cli, tmp_path, tiny_study())
    assert cli("report", cwd=tmp_path).code == 0
    page = results / "report" / "report.md"
    links = re.findall(r"!\[\w+\]\(([^)]+)\)", page.read_text())
    assert links and all((page.parent / link).is_file() for link in links), links
    assert "../fit/plots/scaling.png" in links
    assert "Figures (the fit stage's, which DVC keeps: a clone shows them after `dvc pull`" in page.read_text()


def test_an_archived_report_links_the_plots_it_copied(cli, tmp_path, git_env):
    import subprocess

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    data = b"\x89PNG\r\n\x1a\n"  # the report copies and embeds the bytes, it does not decode them
    cells = [{"cell": "xs-100", "model": "xs", "params": 1000, "data_size": 100, "val_loss": 2.0, "hparams": {},
              "epochs": 1, "wall_time_s": 1.0, "status": "ok"}]
    archive_commit(tmp_path, cells, [], plots={"scaling.png": data, "scaling.svg": b"<svg/>"})
    assert cli("report", "--from", "HEAD", cwd=tmp_path).code == 0
    page = tmp_path / "reports" / "s" / "report.md"
    links = re.findall(r"!\[\w+\]\(([^)]+)\)", page.read_text())
    assert links == ["plots/scaling.png"] and (page.parent / links[0]).read_bytes() == data
    assert "\nFigures:\n" in page.read_text(), "the pages' own copies need no pull"


def test_every_output_names_what_the_archived_cells_trained_with_and_on(cli, tmp_path, git_env):
    import subprocess

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    cells = [{"cell": "xs-100", "model": "xs", "params": 1000, "data_size": 100, "val_loss": 2.0, "hparams": {},
              "epochs": 1, "wall_time_s": 1.0, "status": "ok"}]
    archive_commit(tmp_path, cells, [])
    plain = cli("report", "--from", "HEAD", cwd=tmp_path)
    assert plain.code == 0 and "Trained with" not in plain.out, "a run archived before cells recorded their stack"
    gpu = {"python": "3.12.3", "torch": "2.11.0+cu130", "cuda": "13.0", "lightning": "2.6.6", "transformers": "5.17.0"}
    cpu = {**gpu, "torch": "2.13.0+cpu", "cuda": None, "transformers": None}
    archive_commit(tmp_path, cells, [], provenance={
        "git": {"commit": None}, "compute_hours": 0.0, "trained_with": [gpu, cpu],
        "trained_on": ["1x NVIDIA H100 80GB HBM3", "cpu (x86_64, 2 threads)"], "trained_unrecorded": 1})
    said = ("Trained with 2 stacks: torch 2.11.0+cu130 (CUDA 13.0), lightning 2.6.6, transformers 5.17.0, Python "
            "3.12.3; torch 2.13.0+cpu (CPU build), lightning 2.6.6, Python 3.12.3 on 1x NVIDIA H100 80GB HBM3, "
            "cpu (x86_64, 2 threads); 1 cell recorded none.")
    text = cli("report", "--from", "HEAD", cwd=tmp_path)
    assert text.code == 0 and said in text.out, text.out
    assert re.match(r"study s from HEAD \(manifest [0-9a-f]{12}\)\n", text.out), "which run the pages show"
    pages = tmp_path / "reports" / "s"
    assert said in (pages / "report.md").read_text() and said in (pages / "index.html").read_text()


def test_an_archived_report_keeps_the_users_files_and_goes_where_out_says(cli, tmp_path, git_env):
    import subprocess

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    cells = [{"cell": "xs-100", "model": "xs", "params": 1000, "data_size": 100, "val_loss": 2.0, "hparams": {},
              "epochs": 1, "wall_time_s": 1.0, "status": "ok"}]
    archive_commit(tmp_path, cells, [], plots={"scaling.png": b"\x89PNG\r\n\x1a\n"})
    pages = tmp_path / "reports" / "s"
    (pages / "mine").mkdir(parents=True)
    (pages / "notes.txt").write_text("my notes")
    (pages / "mine" / "a.txt").write_text("kept")
    (pages / "plots").mkdir()
    (pages / "plots" / "old.png").write_bytes(b"an earlier run's plot")
    assert cli("report", "--from", "HEAD", cwd=tmp_path).code == 0
    assert (pages / "notes.txt").read_text() == "my notes" and (pages / "mine" / "a.txt").read_text() == "kept"
    assert sorted(p.name for p in (pages / "plots").iterdir()) == ["scaling.png"], "plots/ is the run's, whole"
    assert (pages / "report.md").is_file() and (pages / "index.html").is_file()
    assert cli("report", "--from", "HEAD", "--out", "compare/first", cwd=tmp_path).code == 0
    assert (tmp_path / "compare" / "first" / "report.md").read_text() == (pages / "report.md").read_text()
    (tmp_path / "blocked").write_text("a file where the folder goes")
    blocked = cli("report", "--from", "HEAD", "--out", "blocked", cwd=tmp_path)
    assert blocked.code == 2 and "Directory 'blocked' is a file" in blocked.err, blocked.err
    shutil.rmtree(pages)
    pages.write_text("a file where the default folder goes")
    blocked = cli("report", "--from", "HEAD", cwd=tmp_path)
    assert blocked.code == 1 and "reports/s" in blocked.err and "Traceback" not in blocked.err, blocked.err
    assert pages.read_text() == "a file where the default folder goes"
    workspace = cli("report", "--out", "compare", cwd=tmp_path)
    assert workspace.code == 2 and "--out applies with --from only" in workspace.err, workspace.err
    pageless = cli("report", "--from", "HEAD", "--no-files", "--out", "compare", cwd=tmp_path)
    assert pageless.code == 2 and "--no-files writes none: drop one of them" in pageless.err, pageless.err
    fit = tmp_path / "results" / "s" / "fit"
    (fit / "plots").mkdir(parents=True)
    (fit / "fit.json").write_text("{}")
    (fit / "plots" / "scaling.png").write_bytes(b"the workspace run's plot")
    for out, holder, marker in (("results/s/fit", "results/s/fit", "fit.json"),
                                ("results/s/fit/pages", "results/s/fit", "fit.json"), ("archive", "archive", "refs")):
        inside = cli("report", "--from", "HEAD", "--out", out, cwd=tmp_path)
        assert inside.code == 2 and f"--out {out}: {holder} holds {marker}, written by a pipeline stage" in inside.err
        assert "Give a folder of its own" in inside.err and "Traceback" not in inside.err, inside.err
    assert sorted(p.name for p in fit.rglob("*")) == ["fit.json", "plots", "scaling.png"], "nothing written there"
    current = tmp_path / "results" / "s" / "report"
    current.mkdir()
    (current / "report.md").write_text("the workspace run's page\n| law | axis | group | exponent |")
    over = cli("report", "--from", "HEAD", "--out", "results/s/report", cwd=tmp_path)
    assert over.code == 2 and "--out results/s/report: the pages of the workspace's run go there, beside " \
        "results/s/fit" in over.err and "Traceback" not in over.err, over.err
    assert [p.name for p in current.iterdir()] == ["report.md"] and "workspace" in (current / "report.md").read_text()
    (tmp_path / "metrics.json").write_text("{}")  # a file of that name above the project's folders is no stage's
    assert cli("report", "--from", "HEAD", "--out", "compare/second", cwd=tmp_path).code == 0
    mine = tmp_path / "mine"
    (mine / "plots").mkdir(parents=True)
    (mine / "plots" / "notes.txt").write_text("my plot notes")
    for out, said in ((".", "--out .: the pages would go into a project's top folder or git's or DVC's own"),
                      (".dvc/pages", "--out .dvc/pages: the pages would go into"),
                      ("mine", "--out mine: its plots/ holds mine/plots/notes.txt, which `chemspec report` did not "
                               "write, and the pages replace plots/ whole; move it aside")):
        refused = cli("report", "--from", "HEAD", "--out", out, cwd=tmp_path)
        assert refused.code == 2 and said in refused.err and "Traceback" not in refused.err, refused.err
    (mine / "plots" / "notes.txt").unlink()
    (mine / "report.md").write_text("# my notes\n")
    refused = cli("report", "--from", "HEAD", "--out", "mine", cwd=tmp_path)
    assert refused.code == 2 and "--out mine: its report.md was not written by `chemspec report`" in refused.err
    assert (mine / "report.md").read_text() == "# my notes\n" and not (tmp_path / "index.html").exists()
    (mine / "report.md").unlink()
    assert cli("report", "--from", "HEAD", "--out", "mine", cwd=tmp_path).code == 0
    assert cli("report", "--from", "HEAD", "--out", "mine", cwd=tmp_path).code == 0, "its own pages are replaced"


def _json(cli, root: Path) -> dict:
    result = cli("report", "--json", "--no-files", cwd=root)
    assert result.code == 0, result.err
    return json.loads(result.out)


def grid_study(**overrides) -> dict:
    """tiny_study on a 3 × 4 grid (12 cells: enough for the saturating law and a bootstrap), every law."""
    return tiny_study(**{"data.sizes": [200, 400, 800, 1600], "data.source": {"package": "moses", "max_molecules": 3000},
                         "fit.laws": ["power", "saturating", "joint"], **overrides})


def test_every_output_shows_the_wald_and_the_profile_interval_under_their_names(cli, tmp_path):
    results = fitted(cli, tmp_path, grid_study())
    fit = json.loads((results / "fit" / "fit.json").read_text())
    profiled = [f for f in fit["fits"] if f["status"] == "ok" and f["law"] != "power"]
    assert {f["law"] for f in profiled} == {"saturating", "joint"}
    table = cli("report", cwd=tmp_path)
    assert table.code == 0, table.err
    markdown = (results / "report" / "report.md").read_text()
    page = (results / "report" / "index.html").read_text()
    assert "Wald (t)" in table.out and "profile (F)" in table.out
    assert re.search(r"Loss falls with data size: xs \w+, s \w+, m \w+", markdown), "models in the spec's order"
    assert "| exponent | Wald (t) | profile (F) | R² | n |" in markdown and "<th>Wald (t)</th><th>profile (F)</th>" in page
    for f in profiled:
        wald, profile = interval_text(f["ci"]), interval_text(f["ci_profile"])
        assert profile != "-" and wald != profile
        line = next(line for line in markdown.splitlines() if line.startswith(f"| {f['law']} | {f['axis']} | {f['group']} |"))
        assert f"| {wald} | {profile} |" in line
        assert re.search(rf"{f['group']}\s+{f['law']}\s+{f['exponent']:.3f}\s+{re.escape(wald)}\s+{re.escape(profile)}",
                         table.out), table.out
        assert profile in page
    note = "\"open\": up to the largest exponent the fit allows (5) the losses fit within the threshold"
    assert note in table.out and note in markdown and "&#34;open&#34;: up to the largest exponent" in page
    assert "Intervals at 95%. Wald (t): estimate ± t·se, symmetric; exact for the power law" in markdown
    joint = fit["joint"]
    assert f"α Wald {interval_text(joint['ci_alpha'])}, profile {interval_text(joint['ci_alpha_profile'])}" in markdown
    assert joint["E"] == 0 and "E at its bound 0: the losses show no floor" in markdown, "this grid fits E = 0"
    assert "Bootstrap" not in markdown and "Seed noise" not in markdown, "fit.bootstrap and replicate_seeds are 0"
    as_json = _json(cli, tmp_path)
    assert [f.get("ci_profile") for f in as_json["fits"]] == [f.get("ci_profile") for f in fit["fits"]]
    assert as_json["confidence"] == 0.95 and as_json["intervals"].startswith("Intervals at 95%. Wald (t)")


def test_the_bootstrap_and_the_seed_noise_are_shown_in_every_output(cli, tmp_path):
    study = grid_study(**{"fit.bootstrap": 40, "fit.replicate_seeds": 2, "fit.replicate_cells": ["s-400", "m-800"]})
    results = fitted(cli, tmp_path, study)
    fit = json.loads((results / "fit" / "fit.json").read_text())
    boot, noise = fit["bootstrap"], fit["noise"]
    assert boot["status"] == "ok" and set(noise["std_log_loss"]) == {"s-400", "m-800"}
    said = ["of 40 resamples fitted", f"joint α {interval_text(boot['ci_alpha'])}, β {interval_text(boot['ci_beta'])} "
            "(95% percentile intervals)", f"Seed noise: std of log loss over seeds {noise['median_std_log_loss']:.3g}",
            f"s-400: {noise['std_log_loss']['s-400']:.3g} over 3 runs", "against a residual standard error of"]
    table = cli("report", cwd=tmp_path)
    assert table.code == 0, table.err
    for page in (table.out, *((results / "report" / name).read_text() for name in ("report.md", "index.html"))):
        assert all(text in page for text in said), [text for text in said if text not in page]
    as_json = _json(cli, tmp_path)
    assert as_json["bootstrap"] == boot and as_json["noise"] == noise


@pytest.mark.parametrize(("representation", "said", "not_said"), [
    ("selfies", "Samples are SELFIES decoded to SMILES", "as the model wrote them"),
    ("smiles", "Samples are SMILES as the model wrote them", "SELFIES"),
])
def test_samples_are_described_by_the_study_representation(cli, tmp_path, representation, said, not_said):
    results = fitted(cli, tmp_path, tiny_study(**{"data.representation": representation}))
    cells = json.loads((results / "fit" / "cells.json").read_text())
    io.write_json(results / "fit" / "cells.json", [{**c, "generation": {k: 0.5 for k in COLUMNS}} for c in cells])
    assert cli("report", cwd=tmp_path).code == 0
    page = (results / "report" / "index.html").read_text()
    assert said in page and not_said not in page
    assert "<th>non-embedding parameters</th><th>training molecules</th>" in page


def test_an_fcd_left_unscored_and_metrics_on_few_molecules_are_explained_under_the_table(cli, tmp_path):
    """Every FCD showed '-' with no reason anywhere in the printed report, and IntDiv of 3 molecules read as any."""
    results = fitted(cli, tmp_path, tiny_study())
    cells = json.loads((results / "fit" / "cells.json").read_text())
    entry = {**{k: 0.5 for k in COLUMNS}, "fcd_molecules": 45, "samples": 60}
    io.write_json(results / "fit" / "cells.json", [{**c, "generation": {**entry, "fcd": None if i < 2 else 3.0}}
                                                   for i, c in enumerate(cells)])
    out = cli("report", "--no-files", cwd=tmp_path).out
    assert ("FCD -: 2 cells not scored, as a rule for sampling fewer valid molecules than the 45 every cell's FCD "
            "is scored on (generation.fcd_molecules)") in out, out
    few = f"In {len(cells)} cells, uniqueness, novelty, internal diversity and W₁ rest on fewer valid molecules than " \
          "the 45 FCD is scored on: as few as 30"
    assert few in out
    assert cli("report", cwd=tmp_path).code == 0 and few in (results / "report" / "index.html").read_text()
    heads = ["validity", "empty or 1 atom", "uniqueness", "novelty", "internal diversity", "FCD", "W₁ logP"]
    assert "| model | data size | " + " | ".join(heads) in (results / "report" / "report.md").read_text()
    page = (results / "report" / "index.html").read_text()
    assert "".join(f"<th>{head}</th>" for head in heads) in page and "<td>0.5</td><td>0.5</td>" in page
    io.write_json(results / "fit" / "cells.json", [{**c, "generation": {**entry, "fcd": 3.0, "samples": 90}}
                                                   for c in cells])
    out = cli("report", "--no-files", cwd=tmp_path).out
    assert "FCD -" not in out and "rest on fewer valid" not in out


@pytest.mark.parametrize("energy,shown", [(7.5, "7.5"), (17950.3, "17,950")], ids=["small", "large"])
def test_a_force_field_report_names_structures_and_shows_force_and_energy_errors(cli, tmp_path, energy, shown):
    """A large error reads as a whole number with separators, not 1.795e+04 beside 1264."""
    study = yaml.safe_load((REPO / "specs" / "quickstart-nff.yaml").read_text())
    study["data"].update(sizes=[60, 120, 240], validation=30, test=30)
    study["model"].update(widths=[8, 16, 32], depths=[2])
    study["hpo"]["tpe"].update(model_size="w8d2", data_size=120)
    errors = {"force_mae_meV_per_A": 41.25, "energy_mae_meV": energy}
    results = fitted(cli, tmp_path, study, extra={"family": "painn", "capacity": 16, **errors})
    table = cli("report", cwd=tmp_path)
    assert table.code == 0, table.err
    markdown = (results / "report" / "report.md").read_text()
    page = (results / "report" / "index.html").read_text()
    header = ("| model | parameters (embeddings included) | training structures | val loss | test loss | "
              "force MAE (meV/Å) ")
    assert header + "| energy MAE (meV) | speed | status |" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| w")]
    assert len(rows) == 9 and all(f"| 41.25 | {shown} | - | ok |" in line for line in rows), rows
    assert "<th>force MAE (meV/Å)</th><th>energy MAE (meV)</th>" in page and page.count("<td>41.25</td>") == 9
    assert "test F MAE meV/Å test E MAE meV" in table.out and f"{'41.25':>16} {shown:>14}" in table.out, table.out
    objective = "Val and test loss: the training objective on that split, energy_weight·L(E) + forces_weight·L(F)"
    assert objective in table.out and objective in markdown and objective in page
    assert "<th>parameters (embeddings included)</th><th>training structures</th>" in page
    scaling = (results / "fit" / "plots" / "scaling.svg").read_text()
    assert "<!-- training structures -->" in scaling and "<!-- parameters (embeddings included) -->" in scaling
    assert "molecules" not in scaling and "non-embedding" not in scaling
    assert "<!-- training structures D -->" in (results / "fit" / "plots" / "joint.svg").read_text()


def test_a_force_fields_test_errors_get_power_laws_of_their_own_in_every_output(cli, tmp_path):
    """The loss weighs energy and forces in no one unit; the force MAE's exponent is the one a chemist quotes."""
    study = yaml.safe_load((REPO / "specs" / "quickstart-nff.yaml").read_text())
    study["data"].update(sizes=[60, 120, 240], validation=30, test=30)
    study["model"].update(widths=[8, 16, 32], depths=[2])
    study["hpo"]["tpe"].update(model_size="w8d2", data_size=120)
    results = fitted(cli, tmp_path, study, extra={"family": "painn", "capacity": 16, "energy_mae_meV": 80.0})
    for path in yaml.safe_load((tmp_path / "params.yaml").read_text())["cells"]["fit"]["metrics"].values():
        metrics = json.loads((tmp_path / path).read_text())
        metrics["force_mae_meV_per_A"] = 900 * metrics["data_size"] ** -0.4 * metrics["params"] ** -0.2
        io.write_json(tmp_path / path, metrics)
    assert cli("run", "fit", cwd=tmp_path).code == 0
    fit = json.loads((results / "fit" / "fit.json").read_text())
    forces = {(f["axis"], f["group"]): f for f in fit["errors"] if f["metric"] == "force_mae"}
    assert len(forces) == 6 and all(f["exponent"] == pytest.approx(0.4 if axis == "data" else 0.2)
                                    for (axis, _), f in forces.items())
    assert fit["exponents"]["force_mae.power.data.w8d2"] == pytest.approx(0.4)
    energies = [f for f in fit["errors"] if f["metric"] == "energy_mae"]
    assert len(energies) == 6 and all(f["reason"] == "errors are constant: no slope to fit" for f in energies)
    table = cli("report", cwd=tmp_path)
    assert table.code == 0 and re.search(r"test force MAE \(meV/Å\) +data +w8d2 +0\.400 ", table.out), table.out
    said = "- test force MAE (meV/Å), params axis, 60: 0.200 [0.200, 0.200], R² 1.000, n 3"
    assert said in (results / "report" / "report.md").read_text()
    page = (results / "report" / "index.html").read_text()
    assert "<h3>Test errors</h3>" in page and page.count('<td class="l">test force MAE (meV/Å)</td>') == 6
    (tmp_path / "chemgpt").mkdir()
    chemgpt = fitted(cli, tmp_path / "chemgpt", tiny_study())
    assert json.loads((chemgpt / "fit" / "fit.json").read_text())["errors"] is None
    assert cli("report", cwd=tmp_path / "chemgpt").code == 0
    assert "Test errors" not in (chemgpt / "report" / "index.html").read_text()


def test_cells_that_do_no_better_than_a_model_that_learned_nothing_are_named_in_every_output(cli, tmp_path):
    """An outside review: cells 3 steps into training scored worse than zero forces, and their exponents were
    reported without a word."""
    study = yaml.safe_load((REPO / "specs" / "quickstart-nff.yaml").read_text())
    study["data"].update(sizes=[60, 120, 240], validation=30, test=30)
    study["model"].update(widths=[8, 16, 32], depths=[2])
    study["hpo"]["tpe"].update(model_size="w8d2", data_size=120)
    nothing = {"energy_mae_meV": 138.04, "force_mae_meV_per_A": 884.0}
    results = fitted(cli, tmp_path, study, extra={"family": "painn", "capacity": 16, "energy_mae_meV": 80.0,
                                                  "force_mae_meV_per_A": 41.25, "baseline": nothing})
    metrics = yaml.safe_load((tmp_path / "params.yaml").read_text())["cells"]["fit"]["metrics"]
    for key, energy, forces in (("w8d2-60", 150.0, 900.0), ("w8d2-120", 140.0, 41.25)):
        row = json.loads((tmp_path / metrics[key]).read_text())
        io.write_json(tmp_path / metrics[key], {**row, "energy_mae_meV": energy, "force_mae_meV_per_A": forces,
                                                 "baseline": {**nothing, "energy_mae_meV": 139.96}})
    assert cli("run", "fit", cwd=tmp_path).code == 0
    cells = json.loads((results / "fit" / "cells.json").read_text())
    assert all(c["baseline"]["force_mae_meV_per_A"] == 884.0 for c in cells)
    said = ("A model that learned nothing (reference energies alone, fitted by element counts on the cell's training "
            "set, and zero forces) errs by 138.0–140.0 meV and 884.0 meV/Å on the test set. No better than that: on "
            "energies 2 cells (w8d2 at 60, w8d2 at 120); on forces 1 cell (w8d2 at 60). Their errors, and their "
            "points in the fits, measure where training started rather than what it learned: train them longer")
    table = cli("report", cwd=tmp_path)
    assert table.code == 0 and said in " ".join(table.out.split()), table.out
    assert said in (results / "report" / "report.md").read_text()
    flagged = {(f["metric"], f["axis"], f["group"]): f.get("untrained")
               for f in json.loads((results / "fit" / "fit.json").read_text())["errors"]}
    assert flagged == {("force_mae", "data", "w8d2"): 1, ("force_mae", "data", "w16d2"): None,
                       ("force_mae", "data", "w32d2"): None, ("force_mae", "params", "60"): 1,
                       ("force_mae", "params", "120"): None, ("force_mae", "params", "240"): None,
                       ("energy_mae", "data", "w8d2"): 2, ("energy_mae", "data", "w16d2"): None,
                       ("energy_mae", "data", "w32d2"): None, ("energy_mae", "params", "60"): 1,
                       ("energy_mae", "params", "120"): 1, ("energy_mae", "params", "240"): None}
    assert "(2 of its 3 points no better than a model that learned nothing)" in table.out, "on the fit it bends"
    assert re.search(r"energy MAE \(meV\), data axis, w8d2: .*, n 3 \(2 of its 3 points no better",
                     (results / "report" / "report.md").read_text())
    assert "(2 of its 3 points no better than a model that learned nothing)" in (
        results / "report" / "index.html").read_text()
    assert said.replace("'", "&#39;") in (results / "report" / "index.html").read_text()
    for key in metrics:  # a loss on forces alone: no energy error, no energy baseline, and energies are not judged
        row = json.loads((tmp_path / metrics[key]).read_text())
        io.write_json(tmp_path / metrics[key], {**row, "energy_mae_meV": None, "energy_mae_per_atom_meV": None,
                                                 "baseline": {"force_mae_meV_per_A": 884.0}})
    assert cli("run", "fit", cwd=tmp_path).code == 0
    forces = cli("report", "--no-files", cwd=tmp_path).out
    assert "A model that learned nothing (zero forces) errs by 884.0 meV/Å on the test set. The loss trains forces " \
           "alone (training.loss.energy: 0), which fix energies only up to a constant: no energy error is measured. " \
           "No better than that: on forces 1 cell (w8d2 at 60)." in " ".join(forces.split()), forces
    errors = json.loads((results / "fit" / "fit.json").read_text())["errors"]
    assert {row["metric"] for row in errors} == {"force_mae"}, "no power law of an energy error nothing trained"
    row = json.loads((tmp_path / metrics["w8d2-60"]).read_text())
    io.write_json(tmp_path / metrics["w8d2-60"], {**row, "baseline": {"energy_mae_meV": "138"}})
    refused = cli("run", "fit", cwd=tmp_path)
    assert refused.code != 0 and "'baseline' is {\"energy_mae_meV\": \"138\"}, not a mapping of " \
        "force_mae_meV_per_A (and energy_mae_meV) to numbers" in refused.err, refused.err


def test_each_cells_speed_and_memory_are_shown_and_a_cell_without_them_reads_a_dash(cli, tmp_path):
    study = yaml.safe_load((REPO / "specs" / "quickstart-nff.yaml").read_text())
    study["data"].update(sizes=[60, 120, 240], validation=30, test=30)
    study["model"].update(widths=[8, 16, 32], depths=[2])
    study["hpo"]["tpe"].update(model_size="w8d2", data_size=120)
    results = fitted(cli, tmp_path, study, extra={"family": "painn", "capacity": 16, "train_structures_per_s": 9149.6,
                                                  "peak_gpu_memory_mb": 1926.7})
    cells = json.loads((results / "fit" / "cells.json").read_text())
    cells[0].update(train_structures_per_s=None, peak_gpu_memory_mb=None)  # e.g. a resumed run on a CPU
    io.write_json(results / "fit" / "cells.json", cells)
    table = cli("report", cwd=tmp_path)
    assert table.code == 0, table.err
    rows = [line for line in table.out.splitlines() if re.match(r"w\d+d\d+ ", line)]
    assert len(rows) == 9 and sum("  9,150 structures/s  " in row for row in rows) == 8
    assert [row.split()[-2] for row in rows if "structures/s" not in row] == ["-"]  # the speed, then the hparams
    page = (results / "report" / "index.html").read_text()
    assert "<th>speed</th><th>peak GPU MiB</th>" in page
    assert page.count("<td>9,150 structures/s</td><td>1,927</td>") == 8
    assert page.count("<td>1.0</td><td>-</td><td>-</td>") == 1  # wall s, speed, memory
    markdown = (results / "report" / "report.md").read_text()
    assert markdown.count("| 9,150 structures/s | ok |") == 8 and markdown.count("| - | ok |") == 1
    said = "Speed -: 1 cell not timed; a cell"
    assert all(said in page for page in (table.out, markdown, (results / "report" / "index.html").read_text()))
    as_json = json.loads(cli("report", "--json", "--no-files", cwd=tmp_path).out)
    speeds = [c["train_structures_per_s"] for c in as_json["cells"]]
    assert speeds.count(None) == 1 and speeds.count(9149.6) == 8
    cells[1]["train_structures_per_s"] = "fast"
    io.write_json(results / "fit" / "cells.json", cells)
    bad = cli("report", cwd=tmp_path)
    assert bad.code != 0 and re.search(r"record 1: 'train_structures_per_s' is \"fast\", not a number or null", bad.err)


def test_an_open_end_reads_open():
    assert interval_text([0.036, None]) == "[0.036, open]" and interval_text(None) == "-"


def test_results_that_predate_the_compiled_study_are_marked_stale_in_every_output(cli, tmp_path):
    from chemspec.api.stages import load_cells
    from tests.unit.test_report_stale import _ran

    results = fitted(cli, tmp_path, tiny_study())
    _ran(tmp_path, load_cells(tmp_path / "params.yaml"))  # as `dvc repro` records the stages it ran
    assert "warning" not in cli("report", cwd=tmp_path).err
    write_spec(tmp_path / "study.yaml", tiny_study(**{"model.sizes.s.n_embd": 24}))
    assert cli("compile", "study.yaml", cwd=tmp_path).code == 0
    result = cli("report", cwd=tmp_path)
    said = ("these results predate params.yaml as compiled now: 4 stages did not run as compiled (archive, "
            "train@s-200, train@s-400, train@s-800); they are shown as they were computed. Run `dvc repro`")
    assert result.code == 0 and f"warning: {said}" in result.err, result.err
    assert _json(cli, tmp_path)["stale"].startswith(said)
    assert f"**Stale:** {said}" in (results / "report" / "report.md").read_text()
    assert "<strong>Stale:</strong> these results predate params.yaml" in (results / "report" / "index.html").read_text()
    write_spec(tmp_path / "study.yaml", tiny_study(**{"model.sizes.s.n_embd": 32}))  # edited, not compiled
    assert cli("report", cwd=tmp_path).code == 0
    markdown, page = ((results / "report" / name).read_text() for name in ("report.md", "index.html"))
    assert "by hand); these results are of the study as last compiled: run `chemspec compile study.yaml`, " \
           f"then `dvc repro`  \n{said}" in markdown, markdown
    assert '<p class="bad stale"><strong>Stale:</strong> study.yaml compiles to other files now' in page
    assert ".stale { white-space: pre-line; }" in page, "its two notes keep their line break"


def test_a_wide_wald_interval_does_not_push_the_profile_column_out_of_line(capsys):
    from chemspec.cli_report import echo_fits

    def fit(group: str, wald: list[float], profile: list[float]) -> dict:
        return {"axis": "params", "group": group, "law": "joint", "status": "ok", "exponent": 0.2, "ci": wald,
                "ci_profile": profile, "n": 12, "r2": 0.99}

    echo_fits([fit("joint", [-246.841, 246.95], [0.0, None]), fit("xs", [0.1, 0.3], [0.12, 0.28])], 0.95)
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].index("profile (F)")
    assert lines[1].index("[0.000, open]") == lines[2].index("[0.120, 0.280]") == header, lines[:3]


def test_what_tpe_decided_for_each_configuration_is_in_every_output(cli, tmp_path):
    """Only the HTML page said that a configuration diverged during TPE and which were not trained."""
    fitted(cli, tmp_path, tiny_study(**{"hpo.grid.learning_rate": [3.0e-3, 1.0e-2, 1.0e4]}))
    out = yaml.safe_load((tmp_path / "params.yaml").read_text())["cells"]["select"]["out"]
    configs = [{"name": "lr3e-3-bs32", "estimate": 2.5, "rank": 1, "reason": "rank 1 of 2 by tse", "cost_s": 1.5},
               {"name": "lr1e-2-bs32", "estimate": 2.75, "rank": 2,
                "reason": "rank 2 of 2 by tse; only the best 1 are trained (hpo.tpe.keep)", "cost_s": 1.25},
               {"name": "lr1e4-bs32", "estimate": None, "rank": None, "reason": "diverged during TPE", "cost_s": 0.5}]
    io.write_json(tmp_path / out, {"estimator": "tse", "configs": configs})
    table = cli("report", cwd=tmp_path)
    assert table.code == 0, table.err
    assert "TPE (estimate: tse):" in table.out and re.search(r"lr1e4-bs32 +- +rank - +diverged during TPE", table.out)
    assert re.search(r"lr1e-2-bs32 +2.75 +rank 2 +rank 2 of 2 by tse; only the best 1 are trained", table.out)
    markdown = (tmp_path / "results" / "tiny" / "report" / "report.md").read_text()
    assert "| lr1e4-bs32 | - | - | diverged during TPE | 0.5 |" in markdown, markdown
    assert "| lr3e-3-bs32 | 2.5 | 1 | rank 1 of 2 by tse | 1.5 |" in markdown
    assert _json(cli, tmp_path)["selected"]["configs"] == configs


def test_a_joint_floor_at_its_bound_gets_no_interval_of_impossible_negative_floors(cli, tmp_path):
    results = fitted(cli, tmp_path, grid_study())
    fit = json.loads((results / "fit" / "fit.json").read_text())
    io.write_json(results / "fit" / "fit.json", {**fit, "joint": {**fit["joint"], "E": 0.0, "ci_E": [-33.7, 33.7]}})
    assert cli("report", cwd=tmp_path).code == 0
    markdown = (results / "report" / "report.md").read_text()
    assert "E at its bound 0: the losses show no floor, and no interval is given; 12 cells)" in markdown
    assert "-33.7" not in markdown and "-33.7" not in (results / "report" / "index.html").read_text()
    io.write_json(results / "fit" / "fit.json", {**fit, "joint": {**fit["joint"], "E": 0.25, "ci_E": [-0.5, 1.0]}})
    assert cli("report", cwd=tmp_path).code == 0
    assert "E Wald [0.000, 1.000] (cut at the bound 0); 12 cells)" in (results / "report" / "report.md").read_text()


def test_every_output_says_what_the_data_stage_kept_of_what_it_read(cli, tmp_path, git_env):
    """A study that lost 44% of its molecules to max_length said so only in the data stage's log (outside review)."""
    import subprocess

    from chemspec.archive.store import Store

    results = fitted(cli, tmp_path, tiny_study())
    counts = {"read": 1000, "blank": 0, "invalid_smiles": 0, "unencodable": 0, "duplicates": 0, "too_long": 442}
    io.write_json(tmp_path / "data" / "tiny" / "data.json", {"kind": "smiles", "count": 558, "counts": counts})
    said = "Data: 558 molecules kept of the 1,000 read (left out: 442 longer than max_length)."
    table = cli("report", cwd=tmp_path)
    assert table.code == 0 and said in table.out, table.out
    assert all(said in (results / "report" / name).read_text() for name in ("report.md", "index.html"))
    assert _json(cli, tmp_path)["data"]["counts"] == counts
    whole = {**counts, "too_long": 0}  # a seeded sample of 1,000 of MOSES: "all of them" read as all of MOSES
    io.write_json(tmp_path / "data" / "tiny" / "data.json", {"kind": "smiles", "count": 1000, "counts": whole})
    assert "Data: 1,000 molecules, none of those read left out." in cli("report", "--no-files", cwd=tmp_path).out
    archived = tmp_path / "archived"
    archived.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=archived, check=True)
    archive_commit(archived, [{"cell": "xs-100", "model": "xs", "params": 1000, "data_size": 100, "val_loss": 2.0,
                               "hparams": {}, "epochs": 1, "wall_time_s": 1.0, "status": "ok"}], [])
    store = Store(archived / "archive")
    manifest = store.get_json(store.ref("s"))
    manifest["objects"]["data"] = store.put_json({"kind": "atoms", "count": 600, "atoms": 5400, "counts": {}})
    store.set_ref("s", store.put_json(manifest))
    assert cli("report", "--from", "WORKTREE", cwd=archived).code == 0
    assert "Data: 600 structures (5,400 atoms)." in (archived / "reports" / "s" / "report.md").read_text()


def test_pages_into_or_among_a_compiled_pipelines_outputs_are_refused(tmp_path, cli, git_env, monkeypatch):
    """Folders that hold no stage's marker file yet (selected/, a study's results/, data/, a cells' folder) once
    took the pages, which the next `dvc repro` then deleted or left untracked among its outputs."""
    root = launch_project(tmp_path)
    assert cli("compile", "study.yaml", cwd=root).code == 0
    monkeypatch.chdir(root)
    for out, said in (("results/tiny/selected", "among the outputs of pipeline stages, results/tiny/selected holding "
                                                "results/tiny/selected/r1.json, which a stage of dvc.yaml writes"),
                      ("results/tiny", "among the outputs of pipeline stages, results/tiny holding results/tiny/"),
                      ("data", "among the outputs of pipeline stages, data holding data/tiny/"),
                      ("results/tiny/train", "into results/tiny/train, which a stage of dvc.yaml writes"),
                      ("results/tiny/train/xs-200", "into results/tiny/train, which a stage of dvc.yaml writes")):
        with pytest.raises(UsageError, match=f"--out {out}: the pages would go {re.escape(said)}"):
            pages_folder(Path(out))
    for out in ("reports/tiny", "results/tiny/report", "results/compare", "../elsewhere"):
        assert pages_folder(Path(out)) == Path(out)


def test_a_force_field_run_fitted_before_its_test_errors_were_says_how_to_fit_them(cli, tmp_path, git_env):
    """The archived PaiNN run's report had no test-error table and no word why (outside review)."""
    import subprocess

    from chemspec.report import errors_text

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    cells = [{"cell": "w8-100", "model": "w8", "params": 1000, "data_size": 100, "val_loss": 0.5, "hparams": {},
              "epochs": 1, "wall_time_s": 1.0, "status": "ok", "force_mae_meV_per_A": 90.0, "energy_mae_meV": 40.0}]
    archive_commit(tmp_path, cells, [])  # a fit.json of before 2026-12-05: no test-error fits
    result = cli("report", "--from", "HEAD", cwd=tmp_path)
    manifest = re.search(r"\(manifest ([0-9a-f]{12})\)", result.out)[1]
    said = ("This run's fit predates the power laws of its test errors (force and energy MAE against size): "
            f"`chemspec refit {manifest} --study s` fits them from the archive, without training.")
    assert result.code == 0 and said in result.out, result.out
    assert said in (tmp_path / "reports" / "s" / "report.md").read_text()
    assert "(`dvc repro --force --single-item fit`) fits them" in errors_text(cells, {}, "s", None), \
        "a run that was never archived is fitted again by its fit stage"
    assert errors_text(cells, {"errors": []}, "s", manifest) == "", "a fit that had errors to fit says nothing"
    language = [{k: v for k, v in cells[0].items() if not k.endswith(("_meV", "_per_A"))}]
    assert errors_text(language, {}, "s", manifest) == "", "a language model has no test errors to fit"
