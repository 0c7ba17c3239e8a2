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


def _ranked_before(cli, root, split: bool) -> dict:
    """A keep-2 study compiled (split into pipelines/<size>/ or not) whose lock records its rank-1 train stages
    under the names of before 2026-12-06 (<cell>-r1), with their folders; {stage now: its identity}."""
    study = tiny_study(**{"hpo.tpe.keep": 2, "hpo.grid.learning_rate": [1e-2, 3e-3]})
    del study["model"]["sizes"]["m"]
    write_spec(root / "study.yaml", study)
    assert cli("compile", "study.yaml", cwd=root).code == 0
    cells = expand(load_study(root / "study.yaml"))
    rank1 = {f"train@{key}": identity(cell)[:16] for key, cell in cells.train.items() if cell.rank == 1}
    for name, ident in rank1.items():
        key = name.removeprefix("train@")
        where = f"pipelines/{key.split('-')[0]}/dvc.lock" if split else "dvc.lock"
        entry = {"cmd": f"chemspec run train --params params.yaml --cell {key}-r1 --identity {ident}",
                 "outs": [{"path": f"results/tiny/train/{key}-r1/model", "md5": "0" * 32}]}
        (root / where).parent.mkdir(parents=True, exist_ok=True)
        old = yaml.safe_load((root / where).read_text()) if (root / where).is_file() else {"schema": "2.0", "stages": {}}
        old["stages"][f"{name}-r1"] = entry
        (root / where).write_text(yaml.safe_dump(old))
        (root / "results" / "tiny" / "train" / f"{key}-r1" / "model").mkdir(parents=True)
    return rank1


@pytest.mark.parametrize("split_before", [False, True], ids=["to-split", "to-one-dvc-yaml"])
def test_rank_one_records_of_before_move_to_their_name_and_the_lock_beside_their_stage(cli, tmp_path, monkeypatch,
                                                                                      split_before):
    render = importlib.import_module("chemspec.compiler.render")
    monkeypatch.setattr(render, "SPLIT_ABOVE", 2 if split_before else 1000)
    rank1 = _ranked_before(cli, tmp_path, split_before)
    assert (tmp_path / "pipelines").exists() == split_before
    monkeypatch.setattr(render, "SPLIT_ABOVE", 1000 if split_before else 2)
    result = cli("compile", "study.yaml", cwd=tmp_path)
    assert result.code == 0 and f"{len(rank1)} rank-1 stages named <cell>-r1 before now" in result.err, result.err
    locks = {path.relative_to(tmp_path).as_posix(): yaml.safe_load(path.read_text())["stages"]
             for path in tmp_path.rglob("dvc.lock")}
    for name, ident in rank1.items():
        key, size = name.removeprefix("train@"), name.removeprefix("train@").split("-")[0]
        entry = locks["dvc.lock" if split_before else f"pipelines/{size}/dvc.lock"][name]
        assert entry["cmd"] == f"chemspec run train --params params.yaml --cell {key} --identity {ident}"
        assert entry["outs"][0]["path"] == f"results/tiny/train/{key}/model"
        assert (tmp_path / "results" / "tiny" / "train" / key / "model").is_dir()
    assert not [name for stages in locks.values() for name in stages if name.endswith("-r1")], locks
    assert (tmp_path / "pipelines").exists() != split_before


def test_a_compile_stopped_while_moving_rank_one_folders_keeps_the_record_of_each_folder_moved(cli, tmp_path,
                                                                                                monkeypatch):
    """Each move writes its lock entry at once: a failure after it costs no record, and says what moved."""
    import pathlib

    monkeypatch.setattr(importlib.import_module("chemspec.compiler.render"), "SPLIT_ABOVE", 1000)
    rank1 = _ranked_before(cli, tmp_path, split=False)
    real, calls = pathlib.Path.rename, []

    def rename(self, target):
        calls.append(self)
        if len(calls) == 2:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, target)

    monkeypatch.setattr(pathlib.Path, "rename", rename)
    result = cli("compile", "study.yaml", cwd=tmp_path)
    assert result.code == 1 and "Permission denied" in result.err, result.err
    (first,) = [name for name in rank1 if (tmp_path / "results/tiny/train" / name.removeprefix("train@")).is_dir()]
    assert f"moved so far: the folders of {first}" in result.err
    assert lock(tmp_path)[first]["cmd"].endswith(rank1[first]) and f"{first}-r1" not in lock(tmp_path)
    monkeypatch.setattr(pathlib.Path, "rename", real)
    again = cli("compile", "study.yaml", cwd=tmp_path)
    assert again.code == 0 and f"{len(rank1) - 1} rank-1 stages named <cell>-r1" in again.err, again.err
    assert not [name for name in lock(tmp_path) if name.endswith("-r1")]
