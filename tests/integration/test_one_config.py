"""A grid of one configuration trains it with no TPE run, and a project whose grid shrinks to the configuration
TPE chose keeps its trained cells."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import sh, tiny_study, write_spec

pytestmark = pytest.mark.slow


def study(rates: list[float]) -> dict:
    spec = tiny_study(**{"data.source.max_molecules": 600, "data.sizes": [100, 200], "data.validation": 100,
                         "data.test": 100, "hpo.tpe.data_size": 200, "training.max_epochs": 1,
                         "hpo.grid.learning_rate": rates})
    spec["model"]["sizes"] = {"xs": spec["model"]["sizes"]["xs"]}
    return spec


def stale(root: Path) -> set[str]:
    return {name.rsplit(":", 1)[-1] for name in json.loads(sh("dvc", "status", "--json", cwd=root))}


def compile_(cli, root: Path, rates: list[float]) -> str:
    write_spec(root / "study.yaml", study(rates))
    done = cli("compile", "study.yaml", cwd=root)
    assert done.code == 0, done.err
    return done.err


def test_a_grid_shrunk_to_tpes_choice_trains_nothing_again_and_runs_no_tpe(cli, tmp_path):
    sh("git", "init", "-q", cwd=tmp_path)
    sh("dvc", "init", "-q", cwd=tmp_path)
    compile_(cli, tmp_path, [3.0e-3, 1.0e-2])
    sh("dvc", "repro", cwd=tmp_path)
    results = tmp_path / "results" / "tiny"
    chosen = json.loads((results / "selected" / "r1.json").read_text())["hparams"]
    trained = {key: (results / "train" / key / "metrics.json").read_bytes() for key in ("xs-100", "xs-200")}

    notes = compile_(cli, tmp_path, [chosen["learning_rate"]])
    assert "note: 2 folders of stages this grid no longer has stay on disk (results/tiny/tpe/lr1e-2-bs32, " \
           "results/tiny/tpe/lr3e-3-bs32), tracked by no stage now" in notes, notes
    stages = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]
    assert "tpe" not in stages
    assert stages["select"]["deps"] == ["data/tiny/splits/split.json"]
    assert stale(tmp_path) == {"select", "archive"}, "a new selection and spec to archive; the cells stand"
    log = sh("dvc", "repro", cwd=tmp_path)
    assert "Running stage 'select'" in log and "Running stage 'fit'" in log and "Running stage 'train@" not in log
    assert {key: (results / "train" / key / "metrics.json").read_bytes() for key in trained} == trained
    assert stale(tmp_path) == set()

    selected = json.loads((results / "selected.json").read_text())
    (row,) = selected["configs"]
    assert row["hparams"] == chosen and row["kept"] and row["unranked"] and row["estimate"] is None
    assert row["cost_s"] == 0
    assert row["reason"] == "the only configuration of hpo.grid: trained without a TPE run"
    assert selected["tpe_cost_s"] == 0
    report = cli("report", cwd=tmp_path)
    assert report.code == 0, report.err
    assert "with no TPE run: hpo.grid holds one configuration" in report.out
    page = (results / "report" / "index.html").read_text()
    assert "<h2>Hyperparameters</h2>" in page and "Training Performance Estimation" not in page
    refused = cli("run", "tpe", "--cell", "lr1e-2-bs32", cwd=tmp_path)
    assert refused.code == 2 and "tpe: this study has no tpe cells; hpo.grid holds one configuration, which trains " \
        "without a TPE run (there is nothing to rank); give hpo.grid more values, then recompile" in refused.err
