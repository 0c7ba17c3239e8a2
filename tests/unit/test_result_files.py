"""Hand-edited results files: `chemspec report` names the file, the row and the key at fault and how to
rewrite it, writes nothing, and never fails as an internal error; files as older versions wrote them
(archived runs read with `report --from`) still read."""

from __future__ import annotations

import json

import pytest

from chemspec.runtime import io
from chemspec.runtime.fit import bootstrap, fits, seed_noise, statistics
from tests.conftest import archive_commit, tiny_study, write_spec

SIZES = {"xs": 1_000, "s": 4_000, "m": 16_000, "l": 64_000}


def _cells() -> list[dict]:
    """A 4 × 4 grid of cells whose losses follow L = 0.5 + 40/N^0.3 + 30/D^0.4 (with a little noise)."""
    return [{"cell": f"{model}-{data}", "model": model, "params": params, "data_size": data, "hparams": {},
             "val_loss": (0.5 + 40 * params ** -0.3 + 30 * data ** -0.4) * (1 + 0.003 * ((i * 7) % 5 - 2)),
             "epochs": 2, "wall_time_s": 1.0, "status": "ok"}
            for i, ((model, params), data) in enumerate((m, d) for m in SIZES.items() for d in (200, 400, 800, 1600))]


def _fit() -> dict:
    """fit.json as the fit stage writes it for _cells(): every law, the bootstrap, the seed noise."""
    rows = _cells()
    flat, joint = fits(rows, ["power", "saturating", "joint"], 0.9)
    replicate = {"xs-200-seed1": {**rows[0], "val_loss": rows[0]["val_loss"] * 1.01}}
    return io.finite_json({"study": "tiny", "confidence": 0.9, "laws": ["power", "saturating", "joint"],
                           "fits": flat, "joint": joint, "statistics": statistics(rows),
                           "bootstrap": bootstrap(rows, 20, 0.9), "noise": seed_noise(replicate, {"xs-200": rows[0]})})


def _selected() -> dict:
    return {"estimator": "tse", "keep": 1, "margin": None, "kept": {"*": [{}]}, "tpe_cost_s": 1.0,
            "configs": [{"name": "c0", "hparams": {}, "estimate": 1.0, "cost_s": 1.0, "status": "ok", "rank": 1,
                         "kept": True, "reason": "rank 1 of 1 by tse"}]}


def _edit(value: dict, path: str, new) -> dict:
    """`value` with the entry at `path` (dotted; list indexes as numbers) set to `new`, or removed (...)."""
    *parents, last = path.split(".")
    node = value
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = int(last) if isinstance(node, list) else last
    if new is ...:
        del node[last]
    else:
        node[last] = new
    return value


@pytest.fixture
def project(cli, tmp_path):
    write_spec(tmp_path / "study.yaml", tiny_study())
    assert cli("compile", "study.yaml", cwd=tmp_path).code == 0
    results = tmp_path / "results" / "tiny"
    io.write_json(results / "fit" / "cells.json", _cells())
    io.write_json(results / "selected.json", _selected())
    return results


def test_the_untouched_files_report(cli, project):
    io.write_json(project / "fit" / "fit.json", _fit())
    assert cli("report", cwd=project.parents[1]).code == 0


@pytest.mark.parametrize(("file", "path", "new", "named"), [
    ("fit/fit.json", "fits.0.status", ..., "fit row 0: no 'status'"),
    ("fit/fit.json", "fits.1.r2", None, "fit row 1: (power law, data axis, group s, status 'ok') 'r2' is null, "
                                        "not a number"),
    ("fit/fit.json", "fits.8.ci_profile", [0.1], "fit row 8: (saturating law, data axis, group xs, status 'ok') "
                                                 "'ci_profile' is [0.1], not a [low, high] pair"),
    ("fit/fit.json", "fits.3", {"axis": "params", "group": "200", "law": "power", "n": 1, "status": "cannot fit"},
     "fit row 3: (power law, params axis, group 200, status 'cannot fit') no 'reason'"),
    ("fit/fit.json", "joint.alpha", "0.3", "joint: 'alpha' is \"0.3\", not a number"),
    ("fit/fit.json", "bootstrap.ci_beta", ..., "bootstrap: no 'ci_beta'"),
    ("fit/fit.json", "noise.median_std_log_loss", "small", "noise: 'median_std_log_loss' is \"small\", not a number"),
    ("fit/fit.json", "statistics.spearman.200.n", None, "statistics: spearman['200']: 'n' is null, not a whole"),
    ("fit/fit.json", "cost", {"tpe_s": 1.0}, "cost: no 'train_s'"),
    ("selected.json", "configs.0.reason", ..., "config 0: no 'reason'"),
], ids=["no-status", "r2-null", "profile-short", "no-reason", "joint-text", "bootstrap", "noise", "statistics",
        "cost", "selected"])
@pytest.mark.parametrize("flags", [(), ("--json", "--no-files")], ids=["files", "json"])
def test_a_hand_edited_results_file_is_named_with_its_row_and_key(cli, project, file, path, new, named, flags):
    fit = _fit()
    value = _edit(fit if file.startswith("fit/") else _selected(), path, new)
    io.write_json(project / "fit" / "fit.json", fit)
    io.write_json(project / file, value)
    result = cli("report", *flags, cwd=project.parents[1])
    assert result.code == 1 and result.out == "" and "internal error" not in result.err, result.err
    assert f"results/tiny/{file}: {named}" in result.err, result.err
    stage = "fit" if file.startswith("fit/") else "select"
    assert f"or rerun the {stage} stage to rewrite it (`dvc repro`)" in result.err
    assert not (project / "report").exists()


@pytest.mark.parametrize(("edit", "named"), [
    (lambda cells: cells[1].update(data_size=-5), "record 1: 'data_size' is -5, not a whole number above 0"),
    (lambda cells: cells[2].update(params=0), "record 2: 'params' is 0, not a whole number above 0"),
    (lambda cells: cells.append(dict(cells[0])), "records 0 and 16 are both cell xs-200"),
], ids=["negative-size", "no-parameters", "a-cell-twice"])
def test_cells_no_fit_can_take_are_named_not_fitted(cli, project, edit, named):
    """Logs of sizes at or below 0 are no points, and a cell given twice would count as two and narrow the
    intervals."""
    io.write_json(project / "fit" / "fit.json", _fit())
    cells = _cells()
    edit(cells)
    io.write_json(project / "fit" / "cells.json", cells)
    result = cli("report", cwd=project.parents[1])
    assert result.code == 1 and f"results/tiny/fit/cells.json is not a list of cell records ({named})" in result.err
    assert "internal error" not in result.err


def test_calibration_json_is_checked_too(cli, tmp_path):
    write_spec(tmp_path / "study.yaml", tiny_study(**{"hpo.tpe.calibrate": True}))
    assert cli("compile", "study.yaml", cwd=tmp_path).code == 0
    results = tmp_path / "results" / "tiny"
    io.write_json(results / "fit" / "cells.json", _cells())
    io.write_json(results / "fit" / "fit.json", _fit())
    io.write_json(results / "calibration" / "calibration.json",
                  {"budget_fraction": 0.5, "estimator": "tse", "cost": {}, "scores": {"tse": {"r2": 0.9}}})
    result = cli("report", "--no-files", cwd=tmp_path)
    assert result.code == 1 and "internal error" not in result.err, result.err
    assert ("results/tiny/calibration/calibration.json: scores['tse']: no 'n'; restore it" in result.err
            and "rerun the calibration stage to rewrite it (`dvc repro`)" in result.err), result.err


FIRST_VERSION_ROW = {"axis": "data", "group": "xs", "law": "power", "n": 3, "status": "ok", "exponent": 0.2,
                     "ci": [0.1, 0.3], "prefactor": 5.0, "r2": 0.99, "x": [100, 200, 400], "y": [2.0, 1.8, 1.6],
                     "residuals": [0.0, 0.0, 0.0]}
"""A fit row as the first fit stage (2026-11-28) wrote it: no profile interval, no degrees of freedom."""


def test_a_run_archived_by_the_first_fit_stage_still_reports(cli, tmp_path, git_env):
    import subprocess

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    unfit = {"axis": "params", "group": "100", "law": "power", "n": 1, "status": "cannot fit",
             "reason": "1 point; a power law with an interval needs at least 3", "x": [1000], "y": [2.0]}
    archive_commit(tmp_path, _cells()[:3], [FIRST_VERSION_ROW, unfit])
    result = cli("report", "--from", "HEAD", "--json", cwd=tmp_path)
    assert result.code == 0, result.err
    assert [f["exponent"] for f in json.loads(result.out)["fits"]] == [0.2, None]


def test_a_broken_archived_fit_is_named_not_an_internal_error(cli, tmp_path, git_env):
    import subprocess

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    archive_commit(tmp_path, _cells()[:3], [{**FIRST_VERSION_ROW, "ci": None}])
    result = cli("report", "--from", "HEAD", cwd=tmp_path)
    assert result.code == 1 and "internal error" not in result.err, result.err
    assert ("the fit.json archived at HEAD cannot be read: fit row 0: (power law, data axis, group xs, status 'ok') "
            "'ci' is null, not a [low, high] pair") in result.err


def test_untrained_is_a_finished_cell_no_better_than_its_baseline():
    from chemspec.runtime.result_files import untrained

    cell = {"status": "ok", "force_mae_meV_per_A": 50.0, "energy_mae_meV": 9.0,
            "baseline": {"force_mae_meV_per_A": 50.0, "energy_mae_meV": 10.0}}
    assert untrained(cell, "force_mae_meV_per_A")  # equal to a model that learned nothing
    assert not untrained(cell, "energy_mae_meV")
    assert not untrained({**cell, "status": "failed"}, "force_mae_meV_per_A")
    assert not untrained({**cell, "baseline": {"force_mae_meV_per_A": 60.0}}, "energy_mae_meV")
    assert not untrained({k: v for k, v in cell.items() if k != "baseline"}, "force_mae_meV_per_A")
    assert untrained({k: v for k, v in cell.items() if k != "status"}, "force_mae_meV_per_A")  # archived rows
