"""A grid that crosses SPLIT_ABOVE (one dvc.yaml <-> one per model size) keeps its trained cells up to date."""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from chemspec.compiler import expand, identity
from chemspec.specs import load_study
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


def test_stages_recorded_before_choice_files_keep_their_results_after_compile(cli, tmp_path):
    """Until 2026-12-06 train stages depended on the whole selected.json, and TPE and train cells held the
    study's estimator in their identity. compile carries their records, so the next `dvc repro` reruns select
    and trains nothing."""
    sh("git", "init", "-q", cwd=tmp_path)
    sh("dvc", "init", "-q", cwd=tmp_path)
    write_spec(tmp_path / "study.yaml", {**study(("xs", "s")), "hpo": {
        "grid": {"learning_rate": [1.0e-2, 3.0e-3], "batch_size": [32]},
        "tpe": {"budget_fraction": 0.5, "model_size": "xs", "data_size": 200, "estimator": "val"}}})
    assert cli("compile", "study.yaml", cwd=tmp_path).code == 0
    sh("dvc", "repro", cwd=tmp_path)
    results = tmp_path / "results" / "tiny"
    trained = {path: path.read_bytes() for path in sorted(results.glob("*/*/*.json"))}
    selected = (results / "selected.json").read_bytes()
    cells = expand(load_study(tmp_path / "study.yaml"))
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    old = {"path": "results/tiny/selected.json", "hash": "md5", "md5": hashlib.md5(selected).hexdigest(),
           "size": len(selected)}
    for name, stage in lock["stages"].items():  # as the code before 2026-12-06 recorded them
        group, _, key = name.partition("@")
        if group in ("tpe", "train"):
            cell = getattr(cells, group)[key]
            stage["cmd"] = stage["cmd"].replace(identity(cell)[:16], identity(cell, cells.select.estimator)[:16])
            stage["deps"] = [old if dep["path"].startswith("results/tiny/selected/") else dep for dep in stage["deps"]]
    lock["stages"]["select"]["cmd"] = lock["stages"]["select"]["cmd"].rsplit(" ", 1)[0] + " 0123456789abcdef"
    lock["stages"]["select"]["outs"] = [out for out in lock["stages"]["select"]["outs"]
                                        if out["path"] == "results/tiny/selected.json"]
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    shutil.rmtree(results / "selected")
    assert {"tpe@lr1e-2-bs32", "train@xs-100", "train@s-200"} <= stale_stages(tmp_path), "as compiled before"

    result = cli("compile", "study.yaml", cwd=tmp_path)
    assert result.code == 0, result.err
    assert "carried the DVC records of 6 finished stages" in result.err
    log = sh("dvc", "repro", "--no-run-cache", cwd=tmp_path)  # select's new command never ran in a project before
    assert re.findall(r"Running stage '([^']+)'", log) == ["select"]
    assert not stale_stages(tmp_path)
    assert {path: path.read_bytes() for path in trained} == trained


def test_rank_one_cells_keep_their_name_and_records_whatever_keep_is(cli, tmp_path):
    """A cell's rank 1 is `<size>-<data size>` whatever hpo.tpe.keep is, so changing keep retrains nothing kept.
    A project of before 2026-12-06 named it `<cell>-r1` with keep above 1: compile moves its record and folder."""
    sh("git", "init", "-q", cwd=tmp_path)
    sh("dvc", "init", "-q", cwd=tmp_path)
    spec = {**study(("xs",)), "hpo": {"grid": {"learning_rate": [1.0e-2, 3.0e-3], "batch_size": [32]},
                                      "tpe": {"budget_fraction": 0.5, "model_size": "xs", "data_size": 200, "keep": 2}}}
    write_spec(tmp_path / "study.yaml", spec)
    assert cli("compile", "study.yaml", cwd=tmp_path).code == 0
    sh("dvc", "repro", cwd=tmp_path)
    train = tmp_path / "results" / "tiny" / "train"
    assert sorted(p.name for p in train.iterdir()) == ["xs-100", "xs-100-r2", "xs-200", "xs-200-r2"]
    trained = {path: path.read_bytes() for path in sorted(train.glob("xs-*/*")) if path.is_file()}

    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())  # as the code before 2026-12-06 named rank 1
    for key in ("xs-100", "xs-200"):
        stage = lock["stages"].pop(f"train@{key}")
        stage["cmd"] = stage["cmd"].replace(f"--cell {key} ", f"--cell {key}-r1 ")
        for entry in stage["outs"]:
            entry["path"] = entry["path"].replace(f"/{key}/", f"/{key}-r1/")
        lock["stages"][f"train@{key}-r1"] = stage
        (train / key).rename(train / f"{key}-r1")
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))

    result = cli("compile", "study.yaml", cwd=tmp_path)
    assert result.code == 0 and "2 rank-1 stages named <cell>-r1 before now (train@xs-100, train@xs-200)" in result.err
    assert sorted(p.name for p in train.iterdir()) == ["xs-100", "xs-100-r2", "xs-200", "xs-200-r2"]
    assert not {name for name in stale_stages(tmp_path) if name.startswith("train@")}
    write_spec(tmp_path / "study.yaml", {**spec, "hpo": {**spec["hpo"], "tpe": {**spec["hpo"]["tpe"], "keep": 1}}})
    assert cli("compile", "study.yaml", cwd=tmp_path).code == 0
    log = sh("dvc", "repro", cwd=tmp_path)
    assert not [name for name in re.findall(r"Running stage '([^']+)'", log) if name.startswith("train@")], log
    assert not stale_stages(tmp_path)
    assert {path: path.read_bytes() for path in trained if "-r2" not in str(path)} == {
        path: data for path, data in trained.items() if "-r2" not in str(path)}
