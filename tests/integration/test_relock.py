"""A grid that crosses SPLIT_ABOVE (one dvc.yaml <-> one per model size) keeps its trained cells up to date."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from tests.conftest import sh, tiny_study, write_spec

pytestmark = pytest.mark.slow


def study(sizes: tuple[str, ...]) -> dict:
    spec = tiny_study(**{"data.source.max_molecules": 700, "data.sizes": [100, 200], "data.validation": 100,
                         "data.test": 100, "hpo.tpe.data_size": 200,
                         "training.max_epochs": 1, "hpo.grid.learning_rate": [1.0e-2]})
    spec["model"]["sizes"] = {name: spec["model"]["sizes"][name] for name in sizes}
    return spec


def stale_stages(root: Path) -> set[str]:
    return {name.rsplit(":", 1)[-1] for name in json.loads(sh("dvc", "status", "--json", cwd=root))}


def compile_(cli, root: Path, sizes: tuple[str, ...]) -> str:
    write_spec(root / "study.yaml", study(sizes))
    result = cli("compile", "study.yaml", cwd=root)
    assert result.code == 0, result.err
    return result.out


def test_trained_cells_stay_up_to_date_when_the_grid_crosses_the_split(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.import_module("chemspec.compiler.render"), "SPLIT_ABOVE", 4)
    sh("git", "init", "-q", cwd=tmp_path)
    sh("dvc", "init", "-q", cwd=tmp_path)
    compile_(cli, tmp_path, ("xs", "s", "m"))  # 6 train cells: one dvc.yaml per size
    assert (tmp_path / "pipelines" / "m" / "dvc.yaml").is_file()
    sh("dvc", "repro", cwd=tmp_path)
    trained = {key: (tmp_path / "results" / "tiny" / "train" / key / "metrics.json").read_bytes()
               for key in ("xs-100", "xs-200", "s-100", "s-200")}

    out = compile_(cli, tmp_path, ("xs", "s"))  # 4 cells: back to one dvc.yaml
    assert "moved the DVC records of 4 finished stages" in out
    assert not (tmp_path / "pipelines").exists()
    assert not {f"train@{key}" for key in trained} & stale_stages(tmp_path)

    out = compile_(cli, tmp_path, ("xs", "s", "m"))  # split again: m's cells are new
    assert "moved the DVC records of 4 finished stages" in out
    assert {name for name in stale_stages(tmp_path) if name.startswith("train@")} == {"train@m-100", "train@m-200"}
    log = sh("dvc", "repro", cwd=tmp_path)
    assert "Running stage 'pipelines/xs/dvc.yaml:train@xs-100'" not in log
    for key, metrics in trained.items():
        assert (tmp_path / "results" / "tiny" / "train" / key / "metrics.json").read_bytes() == metrics
