"""REPLICATION.md's chemspec numbers are what the committed archive gives, and its report pages regenerate."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, tool_env

STUDY, PAINN = "chemgpt-moses-scaling", "painn-md-scaling"
TEXT = (REPO / "REPLICATION.md").read_text()


def _interval(fit: dict) -> str:
    return f"{fit['exponent']:.3f} [{fit['ci'][0]:.3f}, {fit['ci'][1]:.3f}]"


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A fresh clone of this repository's HEAD: git alone, no workspace results, no GPU."""
    root = tmp_path_factory.mktemp("replication") / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(root)], check=True, env=tool_env())
    return root


def _report(clone: Path, study: str) -> dict:
    done = subprocess.run(["chemspec", "report", "--from", "HEAD", "--study", study, "--json"], cwd=clone,
                          capture_output=True, text=True, env=tool_env())
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def archived(clone) -> dict:
    return _report(clone, STUDY)


@pytest.fixture(scope="module")
def painn(clone) -> dict:
    return _report(clone, PAINN)


def test_every_chemgpt_number_in_replication_md_comes_from_the_archive(archived):
    fits = {(f["law"], f["axis"], f["group"]): f for f in archived["fits"]}
    expected = [_interval(fits[("power", "params", "1560000")])]
    expected += [f"{size} {_interval(fits[('power', 'data', size)])}" for size in ("xxs", "xs", "s", "l")]
    tse, cost = archived["calibration"]["scores"]["tse"], archived["calibration"]["cost"]
    expected += [f"**{tse['r2']:.3f}**", f"**{tse['spearman']:.3f}**", f"{tse['misranked_pairs']} of 15 pairs",
                 f"**{cost['saving']:.0%}** for the calibration cell", f"{cost['tpe_then_best_s']:.1f} s",
                 f"{cost['exhaustive_s']:.1f} s", f"**{archived['cost']['saving']:.0%}** for the study",
                 f"TPE {archived['cost']['tpe_s']:.1f} s", f"training {archived['cost']['train_s']:.1f} s",
                 f"about {archived['cost']['exhaustive_s']:.1f} s",
                 f"{archived['provenance']['compute_hours']:.3f} h", archived["manifest"][:12],
                 archived["provenance"]["device"].replace("1x", "1×")]
    versions = archived["provenance"]["versions"]
    expected.append(f"`torch {versions['torch']}`")
    missing = [text for text in expected if text not in TEXT]
    assert not missing, f"REPLICATION.md lacks {missing}"
    monotone = archived["statistics"]["loss_falls_with_data"]
    assert monotone == {"xxs": True, "xs": True, "s": True, "l": False}
    assert "yes for xxs, xs and s; no for l (101M)" in TEXT
    assert archived["joint"]["status"] == "cannot fit" and "**cannot fit**" in TEXT
    rho = archived["statistics"]["spearman"]
    assert rho["15000"]["rho_params"] == pytest.approx(-1) and "15,000: -1;" in TEXT
    assert all(rho[n]["rho_params"] == pytest.approx(0.2) for n in ("150000", "500000", "1560000"))
    walls = [c["wall_time_s"] for c in archived["cells"]]
    assert f"from {min(walls):.1f} s" in TEXT and f"to {max(walls):.1f} s" in TEXT


def test_every_painn_number_in_replication_md_comes_from_the_archive(painn):
    fits = {(f["law"], f["axis"], f["group"]): f for f in painn["fits"]}
    expected = [f"**{_interval(fits[('power', 'params', '100000')])}**"]
    expected.append("**" + "; ".join(f"{w} {_interval(fits[('power', 'data', w)])}"
                                     for w in ("w32d3", "w64d3", "w128d3")) + "**")
    tse, cost = painn["calibration"]["scores"]["tse"], painn["calibration"]["cost"]
    joint = painn["joint"]
    expected += [f"**{tse['r2']:.3f} and {tse['spearman']:.3f}**",
                 f"**{cost['saving']:.0%}** for the calibration cell ({cost['tpe_then_best_s']:.1f} s against "
                 f"{cost['exhaustive_s']:.1f} s)", f"**{painn['cost']['saving']:.0%}** for the study",
                 f"TPE {painn['cost']['tpe_s']:.1f} s plus training {painn['cost']['train_s']:.1f} s",
                 f"about {painn['cost']['exhaustive_s']:.1f} s",
                 f"α {joint['alpha']:.3f} [{joint['ci_alpha'][0]:.3f}, {joint['ci_alpha'][1]:.3f}], "
                 f"β {joint['beta']:.3f} [{joint['ci_beta'][0]:.3f}, {joint['ci_beta'][1]:.3f}], "
                 f"E {joint['E']:.3f} [{joint['ci_E'][0]:.3f}, {joint['ci_E'][1]:.3f}]** ({joint['n']} cells, "
                 f"R² {joint['r2']:.3f})",
                 f"the profile intervals, the ones to quote, are α [{joint['ci_alpha_profile'][0]:.3f}, "
                 f"{'open' if joint['ci_alpha_profile'][1] is None else format(joint['ci_alpha_profile'][1], '.3f')}] "
                 f"and β [{joint['ci_beta_profile'][0]:.3f}, {joint['ci_beta_profile'][1]:.3f}]",
                 f"| {painn['provenance']['compute_hours']:.3f} h (the sum", painn["manifest"][:12],
                 painn["provenance"]["data_sha256"]["content"][:8]]
    small = [fits[("power", "params", n)]["exponent"] for n in ("1000", "5000", "20000")]
    expected.append(f"{min(small):.3f} – {max(small):.3f}")
    rho = painn["statistics"]["spearman"]
    expected.append("; ".join(f"{int(n):,}: {rho[n]['rho_time']:g}" for n in ("1000", "5000", "20000", "100000")))
    missing = [text for text in expected if text not in TEXT]
    assert not missing, f"REPLICATION.md lacks {missing}"
    assert all(rho[n]["rho_params"] == pytest.approx(-1) for n in rho) and "**-1 at all four data sizes**" in TEXT
    assert all(painn["statistics"]["loss_falls_with_data"].values()) and "yes for w32d3, w64d3 and w128d3" in TEXT
    walls = {(c["model"], c["data_size"]): c["wall_time_s"] for c in painn["cells"]}
    low, high = min(walls, key=walls.get), max(walls, key=walls.get)
    assert (f"from {walls[low]:.1f} s ({low[0]}, {low[1]:,}) to {walls[high]:.1f} s ({high[0]}, {high[1]:,})"
            in TEXT)
    assert f"w128d3 at 1,000 took {walls[('w128d3', 1000)]:.1f} s, w64d3 {walls[('w64d3', 1000)]:.1f} s" in TEXT


def test_the_painn_force_error_exponents_in_replication_md_come_from_a_refit_of_the_archive(clone):
    done = subprocess.run(["chemspec", "refit", "HEAD", "--study", PAINN, "--json"], cwd=clone, capture_output=True,
                          text=True, env=tool_env())
    assert done.returncode == 0, done.stderr
    errors = {(f["metric"], f["axis"], f["group"]): f for f in json.loads(done.stdout)["errors"]}
    expected = [f"**{_interval(errors[('force_mae', 'params', '100000')])}** at 100,000 structures",
                "**" + "; ".join(f"{w} {_interval(errors[('force_mae', 'data', w)])}"
                                 for w in ("w32d3", "w64d3", "w128d3")) + "**"]
    missing = [text for text in expected if text not in TEXT]
    assert not missing, f"REPLICATION.md lacks {missing}"


def test_the_painn_spec_generates_the_molecules_and_trajectories_its_archived_run_did():
    """The spec rebuilds the archived data (the same SMILES, which data.json records, and MD settings), and
    REPLICATION.md describes them as they were run."""
    from chemspec.archive.store import Store
    from chemspec.specs import load_study

    store = Store(REPO / "archive")
    objects = store.get_json(store.ref(PAINN))["objects"]
    archived = store.get_json(objects["spec"])
    recorded = [molecule["smiles"] for molecule in store.get_json(objects["data"])["counts"]["molecules"]]
    study = load_study(REPO / "specs" / f"{PAINN}.yaml")
    assert study.data.source.smiles() == recorded
    settings = ("frames", "stride", "timestep_fs", "temperature_K", "equilibration_steps", "method")
    assert {key: getattr(study.data.source, key) for key in settings} == \
        {key: archived["data"]["source"][key] for key in settings}
    assert study.seed == archived["seed"]
    assert f"recorded every {archived['data']['source']['stride']} steps of" in TEXT
    assert "`O=CCC=O`, propanedial, as the archived `data.json` records" in TEXT


@pytest.mark.parametrize("study", [STUDY, PAINN])
def test_the_committed_report_pages_regenerate_byte_for_byte(clone, archived, painn, study):
    for name in ("report.md", "index.html", "plots/scaling.png"):
        fresh = (clone / "reports" / study / name).read_bytes()
        assert fresh == (REPO / "reports" / study / name).read_bytes(), name


def test_the_archive_verifies(clone):
    done = subprocess.run(["chemspec", "archive", "verify"], cwd=clone, capture_output=True, text=True,
                          env=tool_env())
    assert done.returncode == 0 and "objects verified" in done.stdout, done.stderr


def test_a_workspace_report_carries_the_calibration_and_provenance_of_its_archived_run(archived, tmp_path):
    """`report --json` on workspace results gives what `report --from` gives for the run archived from them."""
    root = tmp_path / "workspace"
    subprocess.run(["git", "clone", "-q", str(REPO), str(root)], check=True, env=tool_env())
    subprocess.run(["chemspec", "compile", f"specs/{STUDY}.yaml"], cwd=root, check=True, env=tool_env())
    from chemspec.api import load_cells
    from chemspec.archive import Snapshot

    cells, snapshot = load_cells(root / "params.yaml"), Snapshot("HEAD", cwd=root)
    objects = snapshot.manifest(STUDY)[1]["objects"]
    fit = root / cells.fit.out_dir
    for role, path in [("cells", fit / "cells.json"), ("fit", fit / "fit.json"), ("selected", root / cells.select.out),
                       ("calibration", root / cells.calibration.out_dir / "calibration.json")]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(snapshot.object(objects[role]))
    def report() -> dict:
        done = subprocess.run(["chemspec", "report", "--json", "--no-files"], cwd=root, capture_output=True,
                              text=True, env=tool_env())
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    workspace = report()
    assert workspace["calibration"] == archived["calibration"] is not None
    assert workspace["manifest"] == archived["manifest"] and workspace["provenance"] == archived["provenance"]
    rows = json.loads((fit / "cells.json").read_text())
    (fit / "cells.json").write_text(json.dumps(rows[1:]))
    rerun = report()
    assert rerun["manifest"] is None and rerun["provenance"] is None, "the archived run is not these results"
    (root / "archive" / "refs" / f"{STUDY}.json").write_text("<<<<<<< HEAD\n")
    assert report()["manifest"] is None, "an unreadable archive leaves the workspace report whole"
