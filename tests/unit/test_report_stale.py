"""The report says when its results predate the study as compiled now: the stages whose identity differs
from the one dvc.lock recorded for their last run."""

from __future__ import annotations

import hashlib
import os

import pytest
import yaml

from chemspec.api.results import stale_note
from chemspec.compiler import expand
from chemspec.compiler.render import stage_identities
from chemspec.specs import load_study
from tests.conftest import tiny_study, write_spec


def _cells(tmp_path, **overrides):
    return expand(load_study(write_spec(tmp_path / "s.yaml", tiny_study(**overrides))))


def _ran(root, cells, where=lambda name: "dvc.lock") -> None:
    """dvc.lock files as `dvc repro` leaves them after running every stage of `cells`."""
    locks: dict[str, dict] = {}
    for name, ident in stage_identities(cells).items():
        locks.setdefault(where(name), {})[name] = {"cmd": f"chemspec run x --params params.yaml --identity {ident}"}
    for path, stages in locks.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}))


def test_results_of_the_compiled_study_are_not_stale(tmp_path):
    cells = _cells(tmp_path)
    _ran(tmp_path, cells)
    assert stale_note(cells, tmp_path, "params.yaml") is None


def test_a_stage_that_ran_before_its_inputs_last_changed_is_named(tmp_path):
    """A repro stopped after retraining a cell and before the fit: the table showed the old run's numbers, and
    the note named the retrained cells, not the fit that still held them."""
    cells = _cells(tmp_path)
    _ran(tmp_path, cells)
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    metrics = "results/tiny/train/xs-200/metrics.json"
    lock["stages"]["train@xs-200"]["outs"] = [{"path": metrics, "hash": "md5", "md5": "b" * 32}]
    lock["stages"]["fit"]["deps"] = [{"path": metrics, "hash": "md5", "md5": "b" * 32},
                                     {"path": "data/elsewhere.json", "md5": "c" * 32}]
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    (tmp_path / metrics).parent.mkdir(parents=True)
    (tmp_path / metrics).write_text("{}")  # the cell's output is on disk
    assert stale_note(cells, tmp_path, "params.yaml") is None, "the fit read what the cell made"
    lock["stages"]["fit"]["deps"][0]["md5"] = "a" * 32
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert ("these results predate params.yaml as compiled now: 1 stage ran before its inputs last changed (fit)"
            in stale_note(cells, tmp_path, "params.yaml"))


def test_a_lock_file_cut_short_is_refused_not_read_as_outputs_gone(tmp_path):
    """A dvc killed while it rewrote dvc.lock left valid YAML ending in `- path: r`: report called the stage's
    outputs missing and sent the user to `dvc checkout`, which refuses to overwrite them (reliability review)."""
    from chemspec.errors import CompileError
    from chemspec.lockfiles import Ran

    cells = _cells(tmp_path)
    _ran(tmp_path, cells)
    whole = (tmp_path / "dvc.lock").read_text()
    lock = yaml.safe_load(whole)
    lock["stages"]["select"]["outs"] = [{"path": "results/tiny/selected.json", "hash": "md5", "md5": "b" * 32},
                                        {"path": "r"}]
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    with pytest.raises(CompileError, match=r"dvc.lock is cut short at stage select \(a dvc stopped while writing "
                                           r"it\); restore it with `git checkout -- .*dvc.lock`, or delete it and run "
                                           r"`dvc repro`, which takes the stages it has run before from its run cache"):
        Ran(tmp_path)
    (tmp_path / "dvc.lock").write_text(whole + "  train@xs-200:\n")
    with pytest.raises(CompileError, match=r"cut short at stage train@xs-200"):
        Ran(tmp_path)
    lock["stages"]["select"]["outs"][1] = {"path": "r", "md5": "0123abcd"}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    with pytest.raises(CompileError, match=r"cut short at stage select"):
        Ran(tmp_path)


def test_an_output_cut_short_since_its_stage_ran_is_named(tmp_path):
    """A train cell's metrics.json truncated after the fit: `dvc status` saw it, the report said nothing
    (reliability review)."""
    cells = _cells(tmp_path)
    _ran(tmp_path, cells)
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    metrics = tmp_path / "results/tiny/train/xs-200/metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text('{"val_loss": 1.0}')
    lock["stages"]["train@xs-200"]["outs"] = [
        {"path": "results/tiny/train/xs-200/metrics.json", "hash": "md5", "md5": "b" * 32, "size": 17},
        {"path": "results/tiny/train/xs-200", "hash": "md5", "md5": "c" * 32 + ".dir", "size": 5, "nfiles": 1}]
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert stale_note(cells, tmp_path, "params.yaml") is None, "the recorded size; a folder's is not compared"
    metrics.write_text('{"val_loss"')
    assert stale_note(cells, tmp_path, "params.yaml") == (
        "outputs of 1 stage are on disk at another size than dvc.lock records (train@xs-200): cut short or edited "
        "since; `dvc status` lists them, and `dvc repro` puts back a run it has cached or runs the stage again")


def test_a_project_whose_stages_ran_by_hand_cannot_tell(tmp_path):
    assert stale_note(_cells(tmp_path), tmp_path, "params.yaml") is None


def test_a_changed_model_size_names_its_train_cells(tmp_path):
    _ran(tmp_path, _cells(tmp_path))
    note = stale_note(_cells(tmp_path, **{"model.sizes.s.n_embd": 24}), tmp_path, "params.yaml")
    assert note == ("these results predate params.yaml as compiled now: 4 stages did not run as compiled (archive, "
                    "train@s-200, train@s-400, train@s-800); they are shown as they were computed. Run `dvc repro` "
                    "to bring them up to date")


@pytest.mark.parametrize("override,named", [
    ({"data.source.max_molecules": 1400}, "(data, archive)"), ({"data.validation": 150}, "(split, archive)"),
    ({"hpo.tpe.budget_fraction": 0.25}, "(archive, tpe@lr3e-3-bs32, tpe@lr1e-2-bs32)"),
    ({"fit.laws": ["power"]}, "(fit, archive)"),
])
def test_a_change_above_or_below_the_train_cells_is_named_by_its_stage(tmp_path, override, named):
    _ran(tmp_path, _cells(tmp_path))
    note = stale_note(_cells(tmp_path, **override), tmp_path, "params.yaml")
    assert note is not None and f"did not run as compiled {named};" in note, note


def test_the_lock_files_of_split_pipelines_are_read(tmp_path):
    cells = _cells(tmp_path)
    _ran(tmp_path, cells, lambda name: f"pipelines/{name.split('@')[1].split('-')[0]}/dvc.lock"
         if name.startswith("train@") else "dvc.lock")
    assert stale_note(cells, tmp_path, "params.yaml") is None
    (tmp_path / "pipelines" / "m" / "dvc.lock").unlink()
    assert "3 stages did not run as compiled (train@m-200, train@m-400, train@m-800)" in \
        stale_note(cells, tmp_path, "params.yaml")


def test_train_cells_trained_with_a_configuration_the_selection_no_longer_keeps_are_named(tmp_path):
    """A grid edit reran select, which now keeps another configuration, and the train cells have not run
    since: their identity does not hold the selection (it is their input), so only their hparams tell."""
    cells = _cells(tmp_path)
    _ran(tmp_path, cells)
    old, new = {"learning_rate": 0.03, "batch_size": 32}, {"learning_rate": 0.01, "batch_size": 32}
    rows = [{"cell": "train@xs-200", "status": "ok", "hparams": old},
            {"cell": "train@s-200", "status": "diverged", "hparams": old}]
    assert stale_note(cells, tmp_path, "params.yaml", rows, {"kept": {"*": [old]}}) is None
    note = stale_note(cells, tmp_path, "params.yaml", rows, {"kept": {"*": [new]}})
    assert note == ("these results predate params.yaml as compiled now: 1 train cell trained with hyperparameters "
                    "that results/tiny/selected.json no longer keeps for it (xs-200); they are shown as they were "
                    "computed. Run `dvc repro` to bring them up to date")


def test_a_stale_selection_says_that_the_train_cells_follow_it(tmp_path):
    _ran(tmp_path, _cells(tmp_path))
    note = stale_note(_cells(tmp_path, **{"hpo.grid.learning_rate": [3.0e-3]}), tmp_path, "params.yaml")
    assert "did not run as compiled (select, archive); the train cells run again where the selection changes;" \
        in note, note


def test_a_rank_the_selection_no_longer_keeps_is_named_and_a_study_without_a_selection_is_not_judged(tmp_path):
    cells = _cells(tmp_path, **{"hpo.tpe.keep": 2})
    _ran(tmp_path, cells)
    first, second = {"learning_rate": 0.003, "batch_size": 32}, {"learning_rate": 0.01, "batch_size": 32}
    rows = [{"cell": "train@xs-200-r2", "status": "ok", "hparams": second}]
    assert stale_note(cells, tmp_path, "params.yaml", rows, {"kept": {"*": [first, second]}}) is None
    assert "(xs-200-r2)" in stale_note(cells, tmp_path, "params.yaml", rows, {"kept": {"*": [first]}})
    assert stale_note(cells, tmp_path, "params.yaml", rows, None) is None


def test_a_data_file_changed_since_the_data_stage_read_it_is_named(tmp_path):
    """An edited SMILES file left report and diff silent: nothing compiled had changed."""
    data = tmp_path / "mols.txt"
    data.write_text("CCO\nCCN\n")
    cells = _cells(tmp_path)
    _ran(tmp_path, cells)
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    lock["stages"]["data"]["deps"] = [{"path": "mols.txt", "hash": "md5", "md5": hashlib.md5(data.read_bytes()).hexdigest(),
                                       "size": data.stat().st_size}]
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert stale_note(cells, tmp_path, "params.yaml") is None
    data.write_text("CCO\nCCS\n")  # the same size
    assert stale_note(cells, tmp_path, "params.yaml").startswith(
        "these results predate their data files: mols.txt changed since the data stage last read it; they are shown")
    data.unlink()
    assert stale_note(cells, tmp_path, "params.yaml") is None, "a clone before `dvc pull` cannot tell"


def test_a_data_file_of_its_recorded_size_untouched_since_the_lock_was_written_is_not_read_again(tmp_path):
    """A data file can be gigabytes (ANI-1x): its md5 is computed only where it was modified after dvc.lock."""
    data = tmp_path / "big.h5"
    data.write_bytes(b"x" * 64)
    cells = _cells(tmp_path)
    _ran(tmp_path, cells)
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    lock["stages"]["data"]["deps"] = [{"path": "big.h5", "hash": "md5", "md5": "0" * 32, "size": 64}]
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    written = (tmp_path / "dvc.lock").stat().st_mtime
    os.utime(data, (written - 60, written - 60))
    assert stale_note(cells, tmp_path, "params.yaml") is None, "an md5 that cannot match was not computed"
    os.utime(data, (written + 60, written + 60))
    assert "big.h5 changed since the data stage last read it" in stale_note(cells, tmp_path, "params.yaml")


def test_a_split_pipelines_outputs_and_checkpoints_are_found_from_the_project_root(tmp_path, cli, git_env,
                                                                                   monkeypatch):
    """Per-size pipelines run in the project root (wdir: ../..), where their dvc.lock paths start: read from their
    own folders, every cell of a large study was missing and its train/ folder took report pages."""
    import importlib

    from chemspec.api.changes import finished_checkpoints
    from chemspec.api.folders import stage_outputs
    from chemspec.api.stages import load_cells
    from chemspec.lockfiles import Ran
    from tests.conftest import launch_project

    monkeypatch.setattr(importlib.import_module("chemspec.compiler.render"), "SPLIT_ABOVE", 2)
    root = launch_project(tmp_path)
    assert cli("compile", "study.yaml", cwd=root).code == 0
    assert (root / "pipelines" / "xs" / "dvc.yaml").is_file()
    owned = stage_outputs(root)
    assert (root / "results" / "tiny" / "train").resolve() in owned
    assert not [path for path in owned if "pipelines" in path.parts]
    cells = load_cells(root / "params.yaml")
    _ran(root, cells, where=lambda name: f"pipelines/{name[6:].split('-')[0]}/dvc.lock" if name.startswith("train@")
         else "dvc.lock")
    path = root / "pipelines" / "xs" / "dvc.lock"
    lock = yaml.safe_load(path.read_text())
    lock["stages"]["train@xs-200"]["outs"] = [{"path": "results/tiny/train/xs-200/model", "md5": "a" * 32}]
    path.write_text(yaml.safe_dump(lock))
    (root / "results" / "tiny" / "train" / "xs-200" / "model").mkdir(parents=True)
    assert Ran(root).missing() == [] and Ran(root).addresses["train@xs-200"] == "pipelines/xs/dvc.yaml:train@xs-200"
    resume = root / cells.train["xs-200"].resume_dir
    resume.mkdir(parents=True)
    (resume / "last.ckpt").write_bytes(b"\0" * 2_000_000)
    note = finished_checkpoints(cells, root)
    assert note is not None and "a forced run (`dvc repro -f --no-run-cache -s pipelines/xs/dvc.yaml:train@xs-200`)" \
        in note and note.endswith("to free 2.0 MB"), note
    (root / "results" / "tiny" / "train" / "xs-200" / "model").rmdir()
    assert Ran(root).missing() == ["train@xs-200"] and finished_checkpoints(cells, root) is None
