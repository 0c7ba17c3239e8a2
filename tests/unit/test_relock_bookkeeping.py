"""compile's bookkeeping of dvc.lock entries when stages change files, and targets it cannot write.

The lock entries here are stand-ins (DVC's own use of moved entries is tested in
tests/integration/test_relock.py); what is tested is where each entry ends up and what is written.
"""

from __future__ import annotations

import hashlib
import importlib

import pytest
import yaml

from chemspec.compiler import expand, identity
from chemspec.compiler.render import GENERATED
from chemspec.runtime.io import to_json
from chemspec.specs import load_study

from tests.conftest import tiny_study, write_spec

TRAIN = [f"train@{m}-{n}" for m in ("xs", "s") for n in (200, 400, 800)]


@pytest.fixture
def project(cli, tmp_path, monkeypatch):
    """A compiled one-dvc.yaml study whose dvc.lock records its six train stages."""
    study = tiny_study()
    del study["model"]["sizes"]["m"]
    write_spec(tmp_path / "study.yaml", study)
    assert cli("compile", "study.yaml", cwd=tmp_path).code == 0
    lock = {"schema": "2.0", "stages": {"data": {"cmd": "data"}, **{name: {"cmd": name} for name in TRAIN}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    monkeypatch.setattr(importlib.import_module("chemspec.compiler.render"), "SPLIT_ABOVE", 2)
    return tmp_path


def lock(root, path="dvc.lock") -> dict:
    return yaml.safe_load((root / path).read_text())["stages"]


def test_entries_follow_their_stages_and_a_stale_copy_gives_way(cli, project):
    (project / "pipelines" / "s").mkdir(parents=True)
    (project / "pipelines" / "s" / "dvc.lock").write_text(
        yaml.safe_dump({"schema": "2.0", "stages": {"train@s-200": {"cmd": "stale"}}}))
    result = cli("compile", "study.yaml", cwd=project)
    assert result.code == 0 and "moved the DVC records of 6 finished stages" in result.out
    assert "pipelines/s/dvc.lock" in result.out and "pipelines/xs/dvc.lock" in result.out
    assert list(lock(project)) == ["data"]
    assert lock(project, "pipelines/s/dvc.lock")["train@s-200"] == {"cmd": "train@s-200"}
    assert sorted(lock(project, "pipelines/xs/dvc.lock")) == ["train@xs-200", "train@xs-400", "train@xs-800"]


@pytest.mark.parametrize("blocker", ["params.yaml", "pipelines/s"])
def test_a_blocked_target_writes_nothing(cli, project, blocker):
    before = {p: (project / p).read_bytes() for p in ("dvc.yaml", "dvc.lock")}
    (project / "params.yaml").unlink()
    if blocker == "params.yaml":
        (project / blocker).mkdir()
    else:
        (project / "pipelines").mkdir()
        (project / blocker).write_text("a file where a folder goes")
    result = cli("compile", "study.yaml", cwd=project)
    assert result.code == 1 and "nothing was written" in result.err
    assert f"{blocker}" in result.err and "a folder stands where a file goes, or a file where a folder" in result.err
    assert {p: (project / p).read_bytes() for p in before} == before


def test_records_of_cells_compiled_before_take_their_choice_file_and_identity(cli, project):
    """A train entry gets its choice file, hashed as select writes it from the selection the entry recorded
    (the one on disk, or DVC's cached copy), and the identity that no longer holds the study's estimator;
    an entry whose selection is nowhere keeps its dependency (it is stale either way)."""
    write_spec(project / "study.yaml", tiny_study(**{"hpo.tpe.estimator": "val"}))
    cells = expand(load_study(project / "study.yaml"))
    kept = {"*": [{"batch_size": 32, "learning_rate": 0.003}]}
    on_disk, cached = to_json({"estimator": "val", "kept": kept}), to_json({"estimator": "tse", "kept": kept})
    (project / "results" / "tiny").mkdir(parents=True)
    (project / "results" / "tiny" / "selected.json").write_bytes(on_disk)
    digest = hashlib.md5(cached).hexdigest()
    (project / ".dvc" / "cache" / "files" / "md5" / digest[:2]).mkdir(parents=True)
    (project / ".dvc" / "cache" / "files" / "md5" / digest[:2] / digest[2:]).write_bytes(cached)
    recorded = {"path": "results/tiny/selected.json", "hash": "md5", "size": len(on_disk)}
    entries = lock(project)
    for name, md5 in (("train@xs-200", hashlib.md5(on_disk).hexdigest()), ("train@xs-400", digest),
                      ("train@s-200", "0" * 32)):
        old = identity(cells.train[name.removeprefix("train@")], cells.select.estimator)[:16]
        entries[name] = {"cmd": f"chemspec run train --params params.yaml --cell {name[6:]} --identity {old}",
                         "deps": [{**recorded, "md5": md5}]}
    (project / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": entries}, sort_keys=False))
    result = cli("compile", "study.yaml", cwd=project)
    assert result.code == 0 and "carried the DVC records of 3 finished stages to this version's layout" in result.err
    choice = to_json({"group": "*", "hparams": kept["*"][0], "rank": 1})
    carried = {**lock(project, "pipelines/xs/dvc.lock"), **lock(project, "pipelines/s/dvc.lock")}
    for name in ("train@xs-200", "train@xs-400"):
        assert carried[name]["deps"] == [{"path": "results/tiny/selected/r1.json", "hash": "md5",
                                          "md5": hashlib.md5(choice).hexdigest(), "size": len(choice)}]
    assert carried["train@s-200"]["deps"] == [{**recorded, "md5": "0" * 32}]
    for name in ("train@xs-200", "train@xs-400", "train@s-200"):
        assert carried[name]["cmd"].endswith(f"--identity {identity(cells.train[name.removeprefix('train@')])[:16]}")


def test_a_study_changing_its_estimator_as_it_moves_carries_its_sample_stages_and_quotes_md5s(cli, project):
    """The cells ran with the estimator of the params.yaml on disk, not the one the study now names; a sample
    stage's identity held its training cell's. An md5 that YAML 1.2 would read as a number stays a string."""
    study = tiny_study(**{"hpo.tpe.estimator": "val", "generation": {}})
    write_spec(project / "study.yaml", study)
    before = {"estimator": "tse_e", "last_epochs": 2, "ema_decay": 0.9}
    (project / "params.yaml").write_text(GENERATED + " study.yaml`\n" + yaml.safe_dump(
        {"cells": {"select": {"estimator": "tse_e"}, "tpe": {"lr3e-3-bs32": {"estimator": before}}}}))
    cells = expand(load_study(project / "study.yaml"))
    train, sample = cells.train["xs-200"], cells.sample["xs-200"]
    ran = {"train@xs-200": identity(train, before), "sample@xs-200": identity(
        sample.model_copy(update={"train_identity": identity(train, before)}))}
    entries = lock(project)
    for name, old in ran.items():
        entries[name] = {"cmd": f"chemspec run {name.split('@')[0]} --params params.yaml --cell xs-200 --identity "
                                f"{old[:16]}", "outs": [{"path": "x", "hash": "md5",
                                                         "md5": "12345678901234567890e12345678901"}]}
    (project / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": entries}, sort_keys=False))
    result = cli("compile", "study.yaml", cwd=project)
    assert result.code == 0 and "carried the DVC records of 2 finished stages" in result.err
    carried = {**lock(project), **lock(project, "pipelines/xs/dvc.lock")}  # the sample stage is new in dvc.yaml
    assert carried["train@xs-200"]["cmd"].endswith(f"--identity {identity(train)[:16]}")
    assert carried["sample@xs-200"]["cmd"].endswith(f"--identity {identity(sample)[:16]}")
    for path in ("dvc.lock", "pipelines/xs/dvc.lock"):
        assert "md5: '12345678901234567890e12345678901'" in (project / path).read_text()
