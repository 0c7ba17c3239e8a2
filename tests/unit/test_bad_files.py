"""Files that cannot be read or written: a message naming the file, and the old results kept whole."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from chemspec.cli import _os_error
from chemspec.errors import RunError
from chemspec.runtime import io
from chemspec.runtime.molecules import read_smiles
from tests.conftest import tiny_study, write_spec


def _fail_renaming_scratch_into_place(monkeypatch):
    real = os.replace

    def replace(src, dst):
        if str(src).endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device", str(src))
        real(src, dst)

    monkeypatch.setattr(io.os, "replace", replace)


def test_a_folder_whose_replacement_fails_is_kept(tmp_path, monkeypatch):
    out = tmp_path / "report"
    out.mkdir()
    (out / "index.html").write_text("old")
    _fail_renaming_scratch_into_place(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        with io.atomic_dir(out) as tmp:
            (tmp / "index.html").write_text("new")
    assert (out / "index.html").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"], "nothing left beside it"


def test_staged_files_replace_theirs_together_or_not_at_all(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("tokens.npy", "data.json", "kept.txt"):
        (folder / name).write_text("old")
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "vocab.json").write_text("old")
    with pytest.raises(RuntimeError, match="midway"):
        with io.staged(folder) as tmp:
            io.write_bytes(tmp / "tokens.npy", b"new")
            raise RuntimeError("midway")
    assert (folder / "tokens.npy").read_text() == "old"
    with io.staged(folder) as tmp:
        for name in ("tokens.npy", "data.json", "tokenizer/vocab.json"):
            io.write_bytes(tmp / name, b"new")
    assert [(folder / n).read_text() for n in ("tokens.npy", "data.json", "tokenizer/vocab.json", "kept.txt")] \
        == ["new", "new", "new", "old"]
    assert sorted(p.name for p in folder.iterdir()) == ["data.json", "kept.txt", "tokenizer", "tokens.npy"]


def test_what_a_killed_write_leaves_stays_out_of_git_and_the_next_write_of_it_removes_it(tmp_path):
    """SIGKILL (the OOM killer, SLURM after its grace period) skips every clean-up: a half-written model stayed
    beside the results for good, and `git add -A` took it."""
    folder = tmp_path / "results" / "l-300"
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    killed = ("import os, signal, sys\nfrom chemspec.runtime import io\n"
              f"with io.staged({str(folder)!r}) as tmp:\n"
              "    io.write_bytes(tmp / 'model.safetensors', b'half')\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    assert subprocess.run([sys.executable, "-c", killed]).returncode == -signal.SIGKILL
    left = [p.name for p in folder.iterdir()]
    assert len(left) == 1 and left[0].startswith(".staged.")
    untracked = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=tmp_path,
                               capture_output=True, text=True, check=True).stdout
    assert untracked == "", untracked
    for name in (".model.ab12cd34.old", ".other.ab12cd34.tmp", ".model.cd34ab12.old"):
        (folder / name).mkdir()
    long_ago = time.time() - io.LEFT_AFTER_S - 1
    for entry in [*folder.glob(".staged.*"), folder / ".model.ab12cd34.old", folder / ".other.ab12cd34.tmp"]:
        os.utime(entry, (long_ago, long_ago))
    with io.staged(folder) as tmp:
        io.write_bytes(tmp / "model", b"whole")
    assert sorted(p.name for p in folder.iterdir()) == [".model.cd34ab12.old", ".other.ab12cd34.tmp", "model"], \
        "another name's is kept, and one too young to be a dead write's"


def test_os_errors_name_the_file_not_its_temporary_sibling():
    exc = OSError(errno.EACCES, "Permission denied", "results/tiny/train/.metrics.json.k3j_a9z1.tmp")
    assert _os_error(exc).startswith("results/tiny/train/metrics.json: Permission denied; check that you may")
    staged = OSError(errno.EROFS, "Read-only file system", "data/tiny/.staged.ab12cd34.tmp")
    assert _os_error(staged).startswith("data/tiny: Read-only file system")
    full = OSError(errno.ENOSPC, "No space left on device", "data/tiny/.staged.ab12cd34.tmp/tokens.npy")
    assert _os_error(full).startswith("data/tiny/tokens.npy: No space left on device; check")
    missing = OSError(errno.ENOENT, "No such file or directory", "git")
    assert _os_error(missing) == "git: No such file or directory; check the path, or install the program if it is one"
    folder = OSError(errno.ENOENT, "No such file or directory", "/proc/pulled")
    assert _os_error(folder) == "/proc/pulled: No such file or directory; check the path"
    bare = OSError(errno.ENOENT, "No such file or directory", "params.yaml")
    assert _os_error(bare) == "params.yaml: No such file or directory; check the path"


def test_a_staged_set_whose_second_rename_fails_is_put_back_whole(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    (folder / "tokenizer").mkdir(parents=True)
    for name in ("tokens.npy", "data.json", "tokenizer/vocab.json"):
        (folder / name).write_text("old")
    real, moved = os.replace, []

    def replace(src, dst):
        if ".staged." in str(src) and ".staged." not in str(dst):  # out of the scratch folder, not into it
            moved.append(src)
            if len(moved) == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(src))
        real(src, dst)

    monkeypatch.setattr(io.os, "replace", replace)
    with pytest.raises(OSError, match="No space left"):
        with io.staged(folder) as tmp:
            for name in ("tokens.npy", "data.json", "tokenizer/vocab.json"):
                io.write_bytes(tmp / name, b"new")
    assert [(folder / n).read_text() for n in ("tokens.npy", "data.json", "tokenizer/vocab.json")] == ["old"] * 3
    assert sorted(p.name for p in folder.iterdir()) == ["data.json", "tokenizer", "tokens.npy"]


def test_a_file_where_the_data_folder_goes_is_named(cli, tmp_path):
    write_spec(tmp_path / "study.yaml", tiny_study())
    assert cli("compile", "study.yaml", cwd=tmp_path).code == 0
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tiny").write_text("in the way")
    result = cli("run", "data", cwd=tmp_path)
    assert result.code == 1, result.err
    assert result.err.startswith("error: data/tiny: File exists; a file stands where a folder goes"), result.err
    assert "internal error" not in result.err and "Traceback" not in result.err


def test_params_that_are_not_utf8_are_named(cli, tmp_path):
    (tmp_path / "p.yaml").write_bytes(b"cells: \xff\n")
    result = cli("run", "data", "--params", "p.yaml", cwd=tmp_path)
    assert result.code == 1 and "p.yaml is not a params file written by `chemspec compile`" in result.err


def test_a_study_file_given_as_params_is_named_as_one(cli, tmp_path):
    write_spec(tmp_path / "study.yaml", tiny_study())
    result = cli("report", "--params", "study.yaml", cwd=tmp_path)
    assert result.code == 1 and ("study.yaml is a study file, not the params.yaml that `chemspec compile study.yaml` "
                                 "writes; compile it") in result.err, result.err


def test_a_stage_whose_params_moved_under_a_running_repro_says_to_repro_again(cli, tmp_path):
    """A compile while `dvc repro` runs rewrites params.yaml under it: the stage said to compile, just done."""
    write_spec(tmp_path / "study.yaml", tiny_study())
    assert cli("compile", "study.yaml", cwd=tmp_path).code == 0
    result = cli("run", "split", "--params", "params.yaml", "--identity", "0123456789abcdef", cwd=tmp_path)
    assert result.code == 1 and "split: params.yaml does not match dvc.yaml" in result.err
    assert ("run `chemspec compile <study.yaml>` to rewrite both, and where a compile ran while this `dvc repro` did "
            "(which had read dvc.yaml before it), run `dvc repro` again") in result.err, result.err


@pytest.mark.parametrize("older, stage", [(("calibration", "keep"), "calibration"), (("reference",), "data")],
                         ids=["no-calibration-keep", "no-reference"])
def test_params_from_another_chemspec_version_say_to_recompile(cli, tmp_path, older, stage):
    """Older compiles wrote no `keep` for the calibration cell and no reference cell (nor a seeded
    `max_molecules` sample, nor ANI-1x forces at the energy's level): the file is chemspec's, but not this one's."""
    import yaml

    write_spec(tmp_path / "study.yaml", tiny_study(**{"hpo.tpe.calibrate": True}))
    assert cli("compile", "study.yaml", cwd=tmp_path).code == 0
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    *parents, key = older
    container = params["cells"]
    for parent in parents:
        container = container[parent]
    del container[key]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = cli("run", stage, cwd=tmp_path)
    assert result.code == 1, result.err
    assert ("params.yaml does not hold the cells this chemspec reads: another version of `chemspec compile` wrote "
            "it, or it was edited; recompile the study") in result.err


def test_errors_about_cells_name_the_params_file_given(cli, tmp_path):
    write_spec(tmp_path / "study.yaml", tiny_study())
    assert cli("compile", "study.yaml", cwd=tmp_path).code == 0
    (tmp_path / "params.yaml").rename(tmp_path / "p.yaml")
    result = cli("run", "train", "--params", "p.yaml", "--cell", "nope", cwd=tmp_path)
    assert result.code == 2 and "train: no cell 'nope' in p.yaml; cells are" in result.err, result.err


@pytest.mark.parametrize("command", [("validate",), ("compile",)])
def test_a_study_path_that_is_no_regular_file_is_named_as_such(cli, tmp_path, command):
    os.mkfifo(tmp_path / "pipe.yaml")
    result = cli(*command, "pipe.yaml", cwd=tmp_path)
    assert result.code == 2 and "pipe.yaml: not a regular file" in result.err, result.err
    assert "file not found" not in result.err and "Traceback" not in result.err


def test_params_that_are_no_regular_file_are_named_as_such(cli, tmp_path):
    os.mkfifo(tmp_path / "params.yaml")
    result = cli("run", "data", cwd=tmp_path)
    assert result.code == 1 and "params.yaml is not a regular file" in result.err, result.err


def test_compile_over_an_unreadable_dvc_yaml_names_it_and_writes_nothing(cli, tmp_path):
    write_spec(tmp_path / "study.yaml", tiny_study())
    (tmp_path / "dvc.yaml").write_bytes(b"\xff\xfe")
    result = cli("compile", "study.yaml", cwd=tmp_path)
    assert result.code == 1 and "dvc.yaml cannot be read (not UTF-8 text); delete it" in result.err
    assert (tmp_path / "dvc.yaml").read_bytes() == b"\xff\xfe" and not (tmp_path / "params.yaml").exists()


def test_a_smiles_file_that_is_not_utf8_fails_validation_not_the_data_stage(cli, tmp_path):
    (tmp_path / "mols.csv").write_bytes(b"smiles\nCCO\nCC\xe9N\n" + b"CCC\n" * 2000)
    study = tiny_study(**{"data.source": {"file": "mols.csv", "column": "smiles"}})
    write_spec(tmp_path / "study.yaml", study)
    result = cli("validate", "study.yaml", cwd=tmp_path)
    assert result.code == 2 and "data.source.file: 'mols.csv' is not UTF-8 text; save it as UTF-8" in result.err
    with pytest.raises(RunError, match=r"mols.csv is not UTF-8 text; save it as UTF-8"):
        list(read_smiles({"file": str(tmp_path / "mols.csv"), "column": "smiles"}, None, 0))  # edited after compile


def test_archive_ls_without_an_archive_says_so(cli, tmp_path):
    result = cli("archive", "ls", "--root", "nope", cwd=tmp_path)
    assert result.code == 1 and "no archived runs under nope; run `dvc repro` first" in result.err


@pytest.mark.parametrize(("cells", "fit", "named"), [
    ({"study": "s"}, {"study": "s", "confidence": 0.9, "fits": []}, "cells.json is not a list of cell records"),
    ([], {"study": "s", "confidence": 0.9, "fits": 3}, "fit.json: 'fits' is 3, not a list; restore it"),
], ids=["cells-a-mapping", "fits-a-number"])
def test_hand_edited_results_of_the_wrong_shape_are_named(cli, tmp_path, cells, fit, named):
    pulled = tmp_path / "pulled"
    io.write_json(pulled / "cells.json", cells)
    io.write_json(pulled / "fit.json", fit)
    result = cli("refit", str(pulled), cwd=tmp_path)
    assert result.code == 1 and named in result.err and "internal error" not in result.err, result.err


_ROW = {"cell": "xs-200", "model": "xs", "params": 1000, "data_size": 200, "val_loss": 2.0, "hparams": {},
        "epochs": 2, "wall_time_s": 1.0, "status": "ok"}


@pytest.mark.parametrize(("edit", "named"), [
    ({"params": None}, "record 0: 'params' is null, not a whole number above 0"),
    ({"val_loss": "abc"}, "record 0: 'val_loss' is \"abc\", not a number or null"),
    ({"val_loss": None}, "record 0: status 'ok' with 'val_loss' null, not a positive finite number"),
    ({"status": None}, "record 0: 'status' is null, not text"),
    ({"val_loss": float("inf")}, "record 0: status 'ok' with 'val_loss' Infinity, not a positive finite number"),
    ({"status": "weird"}, "record 0: 'status' is \"weird\", none of ok, diverged, failed, gated"),
], ids=["params-null", "loss-text", "ok-without-loss", "status-null", "ok-infinite-loss", "status-unknown"])
@pytest.mark.parametrize("flags", [(), ("--json",), ("--no-files",)], ids=["files", "json", "no-files"])
def test_a_hand_edited_cell_record_is_named_by_report_and_nothing_is_written(cli, tmp_path, edit, named, flags):
    write_spec(tmp_path / "study.yaml", tiny_study())
    assert cli("compile", "study.yaml", cwd=tmp_path).code == 0
    fit = tmp_path / "results" / "tiny" / "fit"
    fit.mkdir(parents=True)
    (fit / "cells.json").write_text(json.dumps([{**_ROW, **edit}]))  # as an editor may: Infinity is not JSON's
    io.write_json(fit / "fit.json", {"study": "tiny", "confidence": 0.9, "fits": []})
    result = cli("report", *flags, cwd=tmp_path)
    assert result.code == 1 and result.out == "", result.out
    assert f"results/tiny/fit/cells.json is not a list of cell records ({named}); restore it" in result.err
    assert not (tmp_path / "results" / "tiny" / "report").exists()
    refit = cli("refit", str(fit), cwd=tmp_path)
    assert refit.code == 1 and named in refit.err and "internal error" not in refit.err


def test_reading_an_archive_where_there_is_none_says_how_to_make_one(cli, tmp_path):
    result = cli("refit", "WORKTREE", cwd=tmp_path)
    assert result.code == 1, result.err
    assert "no study is archived in the working tree (archive/refs is empty or missing); run the study" in result.err


def _selected(configs: int, keep: int, kept: int, cost_s: float) -> dict:
    """select's record where hpo.tpe.keep is `keep` and `kept` configurations passed (a margin can drop more)."""
    rows = [{"name": f"c{i}", "hparams": {}, "estimate": 1.0 + i, "cost_s": cost_s, "status": "ok", "rank": i + 1,
             "kept": i < kept, "reason": "kept" if i < kept else "dropped"} for i in range(configs)]
    return {"estimator": "tse", "keep": keep, "margin": 0.05, "kept": {"*": [{}] * kept}, "configs": rows,
            "tpe_cost_s": cost_s * configs}


@pytest.mark.parametrize(("configs", "keep", "kept", "cost_s", "said"), [
    (1, 1, 1, 0.5, "TPE 0.5 s + training 1.0 s: TPE kept all 1 configuration(s) of hpo.grid, so it saved nothing"),
    (1, 1, 1, 0.0, "Training 1.0 s, with no TPE run: hpo.grid holds one configuration, which TPE has nothing to "
                   "rank against."),
    (2, 2, 2, 0.5, "TPE 1.0 s + training 1.0 s: TPE kept all 2 configuration(s) of hpo.grid, so it saved nothing"),
    (4, 1, 1, 0.5, "TPE 2.0 s + training 1.0 s = 3.0 s, against about 4.0 s to train all 4 configurations in every "
                   "cell (each priced as the one kept, which overstates the saving "
                   "where the others train faster): 25% saved. These are training times; every stage also spends "
                   "seconds starting and stopping, which TPE does not save"),
    (4, 2, 1, 0.5, "TPE 2.0 s + training 1.0 s = 3.0 s, against about 4.0 s to train all 4 configurations in every "
                   "cell (each priced as the one kept, which overstates the saving "
                   "where the others train faster): 25% saved."),
    (2, 1, 1, 2.0, "TPE 4.0 s + training 1.0 s = 5.0 s, against about 2.0 s to train all 2 configurations in every "
                   "cell (each priced as the one kept, which overstates the saving "
                   "where the others train faster): TPE cost 150% more than training every configuration would "
                   "have."),
], ids=["one-config", "one-config-since-2026-12-06", "all-kept", "pruned", "margin-dropped-more-than-keep",
        "tpe-dearer"])
def test_the_report_claims_a_tpe_saving_only_where_tpe_dropped_configurations(cli, tmp_path, configs, keep, kept,
                                                                              cost_s, said):
    write_spec(tmp_path / "study.yaml", tiny_study())
    assert cli("compile", "study.yaml", cwd=tmp_path).code == 0
    results = tmp_path / "results" / "tiny"
    from chemspec.runtime.tpe import cost

    selected = _selected(configs, keep, kept, cost_s)
    io.write_json(results / "fit" / "cells.json", [_ROW])
    io.write_json(results / "fit" / "fit.json", {"study": "tiny", "confidence": 0.9, "fits": [],
                                                 "cost": cost(selected, [_ROW["wall_time_s"]])})
    io.write_json(results / "selected.json", selected)
    result = cli("report", "--no-files", cwd=tmp_path)
    assert result.code == 0 and said in result.out and ("saved." in said or "% saved" not in result.out), result.out
    page = cli("report", cwd=tmp_path)
    assert page.code == 0 and said in (results / "report" / "index.html").read_text()
    as_json = json.loads(cli("report", "--json", "--no-files", cwd=tmp_path).out)
    assert (as_json["cost"]["saving"] is None) == (kept >= configs)
