"""Arguments that name nothing usable: exit 2 with a message that says what to give instead."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from chemspec import api
from chemspec.errors import UsageError
from chemspec.runtime import io
from tests.conftest import archive_commit, tiny_study, write_spec


@pytest.mark.parametrize(("args", "message"), [
    (("archive", "show", ""), "the manifest id is empty; give one, or its first characters"),
    (("archive", "show", "  "), "the manifest id is empty"),
    (("pull", ""), "the run to pull is empty; give a git revision or a manifest id"),
    (("pull", "HEAD", "--to", ""), "--to is empty; give the folder to create, or leave --to out"),
    (("refit", ""), "the source is empty; give a folder that `chemspec pull` made, or a git revision"),
    (("diff", "", "WORKTREE"), "the revision is empty; give a commit, branch or tag, or WORKTREE"),
    (("report", "--from", ""), "the revision is empty"),
    (("refit", "/no/such/folder"), "/no/such/folder is neither a folder, a git revision nor an archived manifest id here"),
    (("refit", "pd2/cells.json"), "pd2/cells.json is neither a folder, a git revision nor an archived manifest id here"),
], ids=["show", "show-blank", "pull", "pull-to", "refit", "diff", "report-from", "refit-missing-folder",
        "refit-json"])
def test_an_empty_or_missing_target_is_refused_with_what_to_give(cli, tmp_path, args, message):
    result = cli(*args, cwd=tmp_path)
    assert result.code == 2 and message in result.err and "internal error" not in result.err, result.err
    assert sorted(tmp_path.iterdir()) == [], "nothing is written"


def test_refit_of_a_file_or_a_law_given_twice_is_refused(cli, tmp_path):
    io.write_json(tmp_path / "pd2" / "cells.json", [])
    file = cli("refit", "pd2/cells.json", cwd=tmp_path)
    assert file.code == 2 and "pd2/cells.json is a file; give the folder that holds cells.json" in file.err
    twice = cli("refit", "pd2", "--law", "power", "--law", "power", cwd=tmp_path)
    assert twice.code == 2 and "--law repeats a value (power, power); give each law once" in twice.err
    nan = cli("refit", "pd2", "--confidence", "nan", cwd=tmp_path)
    assert nan.code == 2 and "--confidence nan is not between 0 and 1; give a level such as 0.95" in nan.err, nan.err


@pytest.mark.parametrize("args", [("diff",), ("report", "--from", "HEAD")], ids=["diff", "report-from"])
def test_reading_a_revision_outside_a_git_repository_says_so(cli, tmp_path, monkeypatch, args):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    result = cli(*args, cwd=tmp_path)
    assert result.code == 2, "as for pull and refit: where the command runs is the caller's to mend"
    assert "cannot read revision 'HEAD': " in result.err and "is not in a git repository; run this in the " \
           "study's project, or give WORKTREE" in result.err
    refit = cli("refit", "HEAD", cwd=tmp_path)
    assert refit.code == 2 and ("HEAD is neither a folder, a git revision nor an archived manifest id here (this "
                                "folder is in no git repository); give a folder that `chemspec pull` made") in refit.err, \
        refit.err


def test_a_repeated_law_in_the_spec_is_named(cli, tmp_path):
    write_spec(tmp_path / "study.yaml", tiny_study(**{"fit.laws": ["power", "power"]}))
    result = cli("validate", "study.yaml", cwd=tmp_path)
    assert result.code == 2 and result.err.count("study.yaml:") == 1, result.err
    assert "fit.laws: repeats a value (['power', 'power']); list each value once" in result.err


@pytest.mark.parametrize("value", ["", "xyz", "abc"])
def test_run_refuses_an_identity_that_is_not_hex_digits_of_one(cli, tmp_path, value):
    write_spec(tmp_path / "study.yaml", tiny_study())
    assert cli("compile", "study.yaml", cwd=tmp_path).code == 0
    result = cli("run", "data", "--identity", value, cwd=tmp_path)
    assert result.code == 2 and f"--identity {value!r} is not the start of a cell identity" in result.err
    with pytest.raises(UsageError, match="8 to 64 hex digits"):
        api.run("data", params=str(tmp_path / "params.yaml"), cell=None, expected_identity=value)


def test_report_refuses_a_study_other_than_the_compiled_one_without_from(cli, tmp_path):
    write_spec(tmp_path / "study.yaml", tiny_study())
    assert cli("compile", "study.yaml", cwd=tmp_path).code == 0
    result = cli("report", "--study", "other", cwd=tmp_path)
    assert result.code == 2 and "--study 'other': params.yaml compiles study 'tiny', whose results are reported " \
                                "without --from; for the run of 'other' archived at a revision add --from" in result.err
    assert not (tmp_path / "results").exists()
    same = cli("report", "--study", "tiny", cwd=tmp_path)
    assert same.code == 1 and "no results yet for study 'tiny'" in same.err, same.err


def test_a_refit_that_fits_no_law_anywhere_exits_1_saying_so(cli, tmp_path):
    rows = [{"model": m, "params": p, "data_size": n, "val_loss": 3.0 - p / 1000 - n / 1000, "status": "ok",
             "wall_time_s": 1.0, "hparams": {}} for m, p in (("xs", 100), ("s", 400)) for n in (100, 300)]
    io.write_json(tmp_path / "pd" / "cells.json", rows)
    io.write_json(tmp_path / "pd" / "fit.json", {"study": "tiny", "confidence": 0.95, "fits": []})
    for args in ((), ("--json",)):
        result = cli("refit", "pd", "--law", "power", "--law", "joint", *args, cwd=tmp_path)
        assert result.code == 1 and "error: no law could be fitted to these cells" in result.err, result.err
        assert "cannot fit" in result.out and "Traceback" not in result.err


def test_help_lists_every_verb_whole_and_shows_the_defaults_it_falls_back_on(cli, tmp_path):
    top = cli("--help", cwd=tmp_path)
    verbs = top.out.split("Commands:")[1].strip().splitlines()
    assert top.code == 0 and len(verbs) == 10 and not [v for v in verbs if v.rstrip().endswith("...")], top.out
    verify = cli("archive", "verify", "--help", cwd=tmp_path)
    assert "Archive folder (not the project root).  [default: archive]" in verify.out
    assert "[default: params.yaml]" in cli("report", "--help", cwd=tmp_path).out
    assert "REV_A (default HEAD) and" in cli("diff", "--help", cwd=tmp_path).out
    assert "exit 2 if there is one" in cli("validate", "--help", cwd=tmp_path).out


def test_report_without_workspace_results_points_at_the_archived_run(cli, tmp_path, git_env):
    """A fresh clone holds the archive but no results: report says how to see the archived run."""
    import subprocess

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    write_spec(tmp_path / "study.yaml", tiny_study())
    assert cli("compile", "study.yaml", cwd=tmp_path).code == 0
    cells = [{"model": "xs", "params": 100, "data_size": n, "val_loss": 2.0 - n / 1000, "status": "ok",
              "wall_time_s": 1.0, "hparams": {}} for n in (200, 400, 800)]
    archive_commit(tmp_path, cells, [], study="tiny")
    result = cli("report", cwd=tmp_path)
    assert result.code == 1 and "the archive holds a run of it: `chemspec report --from WORKTREE`" in result.err
    shown = cli("report", "--from", "WORKTREE", "--no-files", cwd=tmp_path)
    assert shown.code == 0 and "xs" in shown.out, shown.err


def test_output_to_a_closed_pipe_exits_141_without_a_word():
    """`chemspec report | head` exited 1, the code of a command that failed, with nothing said."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = subprocess.run([sys.executable, "-m", "chemspec", "schema"], stdout=writer, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(writer)
    assert (done.returncode, done.stderr) == (141, "")


def test_ctrl_c_in_any_verb_exits_130_saying_to_run_it_again(cli, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "validate", interrupted)
    result = cli("validate", "study.yaml", cwd=tmp_path)
    assert result.code == 130 and "interrupted; what the command writes is written whole or not at all" in result.err
    assert "re-run `dvc repro`" in result.err and "Traceback" not in result.err


def test_a_params_file_named_and_missing_is_bad_input_and_the_default_missing_is_not(cli, tmp_path):
    """`launch --params nope.yaml` exited 1 where `diff --params nope.yaml` exited 2."""
    for verb in (("launch", "--dry-run"), ("report", "--no-files"), ("run", "fit")):
        named = cli(*verb, "--params", "nope.yaml", cwd=tmp_path)
        assert named.code == 2 and "nope.yaml not found; run `chemspec compile <study.yaml>` first" in named.err, named
        default = cli(*verb, cwd=tmp_path)
        assert default.code == 1 and "params.yaml not found; run `chemspec compile" in default.err, default.err


def test_a_ctrl_c_in_a_stage_under_dvc_says_how_to_get_its_removed_outputs_back(cli, tmp_path, monkeypatch):
    """An interrupted fit stage left git's fit.json deleted, and only a stage that failed said so."""
    from chemspec.api import stages
    from chemspec.runtime import dvc_parent

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stages, "_run", interrupted)
    monkeypatch.setattr(dvc_parent, "dvc_ancestor", lambda: 1)
    monkeypatch.setattr(stages, "_ran_before", lambda *args: True)
    result = cli("run", "fit", cwd=tmp_path)
    assert result.code == 130 and "interrupted; what the command writes is written whole" in result.err, result.err
    assert "note: dvc removed the outputs of this stage's last run before running it again; `dvc checkout` puts " \
           "them back from DVC's cache (`dvc pull` fills it in a fresh clone;" in result.err, result.err
