"""`chemspec diff` on archives made by hand in a git repository: cells that diverged, and honest tests."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from scipy import stats

from chemspec.archive.history import data_changes, exponent_changes, spec_changes
from chemspec.compiler import expand
from chemspec.compiler.render import stage_identities
from chemspec.specs import load_study
from tests.conftest import archive_commit, tiny_study, write_spec


def _cell(model: str, size: int, loss: float | None, status: str = "ok") -> dict:
    return {"model": model, "params": 100, "data_size": size, "val_loss": loss, "status": status,
            "wall_time_s": 1.0, "hparams": {}}


def _fit(exponent: float, se: float, n: int = 3, law: str = "power", **extra) -> dict:
    """A fit row whose Wald interval at 95% comes from `se` with n − p degrees of freedom."""
    half = stats.t.ppf(0.975, extra.get("dof", n - {"power": 2, "joint": 5}[law])) * se
    return {"axis": "data", "group": "xs", "law": law, "n": n, "status": "ok", "exponent": exponent,
            "ci": [exponent - half, exponent + half], "confidence": 0.95, **extra}


@pytest.fixture
def repo(tmp_path, git_env):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    return tmp_path


def test_diff_reports_a_cell_that_diverged_and_one_that_recovered(cli, repo):
    fits = [_fit(0.2, 0.01)]
    archive_commit(repo, [_cell("xs", 100, 2.0), _cell("xs", 200, None, "diverged"), _cell("xs", 400, 1.5)], fits)
    archive_commit(repo, [_cell("xs", 100, None, "diverged"), _cell("xs", 200, 1.8), _cell("xs", 400, 1.4)], fits)
    result = cli("diff", "HEAD~1", "HEAD", "--json", cwd=repo)
    assert result.code == 0, result.err
    changed = {row["cell"]: row for row in json.loads(result.out)["cells"]["changed"]}
    assert changed["xs-100"] == {"cell": "xs-100", "status_before": "ok", "status_after": "diverged",
                                 "val_loss_before": 2.0, "val_loss_after": None, "delta": None}
    assert changed["xs-200"]["status_after"] == "ok" and changed["xs-200"]["delta"] is None
    assert changed["xs-400"]["delta"] == pytest.approx(-0.1)
    text = cli("diff", "HEAD~1", "HEAD", cwd=repo)
    assert text.code == 0, text.err
    assert "~ cell xs-100: ok -> diverged, val loss 2 -> none" in text.out
    assert "~ cell xs-200: diverged -> ok, val loss none -> 1.8" in text.out
    assert "~ cell xs-400: val loss 1.5 -> 1.4" in text.out


def test_added_and_removed_cells_show_their_loss_or_status(cli, repo):
    archive_commit(repo, [_cell("xs", 100, 2.0), _cell("xs", 200, 1.75)], [])
    archive_commit(repo, [_cell("xs", 100, 2.0), _cell("s", 100, None, "diverged"), _cell("s", 200, 1.25)], [])
    result = json.loads(cli("diff", "HEAD~1", "HEAD", "--json", cwd=repo).out)["cells"]
    assert (result["added"], result["removed"]) == (["s-100", "s-200"], ["xs-200"])
    assert result["losses"] == {"s-100": {"status": "diverged", "val_loss": None},
                                "s-200": {"status": "ok", "val_loss": 1.25},
                                "xs-200": {"status": "ok", "val_loss": 1.75}}
    text = cli("diff", "HEAD~1", "HEAD", cwd=repo).out
    assert "  + cell s-100: diverged\n  + cell s-200: val loss 1.25\n  - cell xs-200: val loss 1.75\n" in text, text


def test_a_cell_that_diverged_in_both_runs_is_unchanged(cli, repo):
    cells = [_cell("xs", 100, 2.0), _cell("xs", 200, None, "diverged")]
    archive_commit(repo, cells, [_fit(0.2, 0.01)])
    archive_commit(repo, cells, [_fit(0.3, 0.01)])
    assert json.loads(cli("diff", "HEAD~1", "HEAD", "--json", cwd=repo).out)["cells"]["changed"] == []


def test_spec_changes_leave_out_the_executor_that_runs_archived_before_stored():
    before = {"seed": 0, "executor": {"jobs": 1, "slurm": {"partition": "a"}}, "training": {"max_epochs": 2}}
    assert spec_changes(before, {"seed": 0, "training": {"max_epochs": 3}}) == [
        {"field": "training.max_epochs", "before": 2, "after": 3}]


def test_three_point_power_fits_are_tested_on_welch_degrees_of_freedom_not_a_normal_cutoff():
    """Each 3-point fit has one residual degree of freedom; t = 0.2 / 0.0707 = 2.8 clears 1.96 but not
    t(0.975, 2) = 4.3, so the change is not significant."""
    (row,) = exponent_changes([_fit(0.2, 0.05)], [_fit(0.4, 0.05)], 0.95)
    assert row["df"] == pytest.approx(2) and row["t"] == pytest.approx(0.2 / 0.05 / 2 ** 0.5)
    assert row["significant"] is False
    (row,) = exponent_changes([_fit(0.2, 0.05, n=30)], [_fit(0.4, 0.05, n=30)], 0.95)
    assert row["df"] == pytest.approx(56) and row["significant"] is True


def test_recorded_degrees_of_freedom_are_used_and_older_rows_fall_back_on_the_laws_parameter_count():
    old = exponent_changes([_fit(0.2, 0.05, n=9, law="joint")], [_fit(0.4, 0.05, n=9, law="joint")], 0.95)[0]
    assert old["df"] == pytest.approx(8) and old["t"] == pytest.approx(0.2 / 0.05 / 2 ** 0.5)
    recorded = exponent_changes([_fit(0.2, 0.05, dof=10)], [_fit(0.4, 0.02, dof=20)], 0.95)[0]
    assert recorded["df"] == pytest.approx((0.05 ** 2 + 0.02 ** 2) ** 2 / (0.05 ** 4 / 10 + 0.02 ** 4 / 20))
    assert exponent_changes([_fit(0.2, 0.05, n=2)], [_fit(0.4, 0.05)], 0.95)[0]["significant"] is None


def test_the_diff_says_its_test_is_approximate_and_assumes_independent_runs(cli, repo):
    archive_commit(repo, [_cell("xs", 100, 2.0)], [_fit(0.2, 0.01, n=30)])
    archive_commit(repo, [_cell("xs", 100, 2.0)], [_fit(0.3, 0.01, n=30)])
    text = cli("diff", "HEAD~1", "HEAD", cwd=repo).out
    assert "exponent data/xs (power): 0.2 [0.1795, 0.2205] -> 0.3 [0.2795, 0.3205] (significant at 95%)" in text
    assert "approximate Welch t test" in text and "independent" in text


DATA = {"count": 400, "counts": {"read": 400, "duplicates": 0}, "kind": "smiles",
        "sha256": {"molecules.csv": "a" * 64}, "vocab_size": 21}


def test_a_diff_names_data_that_changed_under_the_same_spec(cli, repo):
    """A data file edited in place changes no spec field: the diff showed every loss moving, unexplained."""
    archive_commit(repo, [_cell("xs", 100, 2.0)], [_fit(0.2, 0.01)], data=DATA)
    more = {**DATA, "count": 500, "counts": {"read": 500, "duplicates": 0}, "sha256": {"molecules.csv": "b" * 64}}
    archive_commit(repo, [_cell("xs", 100, 2.1)], [_fit(0.2, 0.01)], data=more)
    result = cli("diff", "HEAD~1", "HEAD", cwd=repo)
    assert result.code == 0, result.err
    assert "  data count: 400 -> 500\n  data counts.read: 400 -> 500\n" in result.out
    assert json.loads(cli("diff", "HEAD~1", "HEAD", "--json", cwd=repo).out)["data"][0] == {
        "field": "data.count", "before": 400, "after": 500}


def test_data_changes_name_new_contents_where_the_counts_agree():
    changed = {**DATA, "sha256": {"molecules.csv": "b" * 64}}
    [change] = data_changes(DATA, changed)
    assert change["field"] == "data.sha256" and change["before"] != change["after"] and len(change["after"]) == 12
    assert data_changes(DATA, dict(DATA)) == [] and data_changes(None, DATA) == []
    older = {**DATA, "counts": {"read": 400}}  # archived before data.json counted duplicates
    assert data_changes(older, DATA) == [], "a key one run did not record yet is no change"


def test_a_diff_of_a_run_with_itself_says_there_are_no_changes(cli, repo):
    archive_commit(repo, [_cell("xs", 100, 2.0), _cell("xs", 200, 1.8)], [_fit(0.2, 0.01)])
    (repo / "notes.txt").write_text("a commit that archives nothing new\n")
    subprocess.run(["git", "add", "notes.txt"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "notes"], cwd=repo, check=True)
    result = cli("diff", "HEAD~1", "HEAD", cwd=repo)
    assert result.code == 0 and result.out.splitlines()[-1] == ("  no changes: the same run (spec, data, cells and "
                                                                "exponents)")
    assert "~ cell" not in result.out


def test_a_cell_whose_size_or_chosen_hyperparameters_changed_says_so(cli, repo):
    def cell(params: int, rate: float, loss: float) -> dict:
        return {**_cell("s", 200, loss), "params": params, "hparams": {"learning_rate": rate}}

    archive_commit(repo, [cell(12672, 0.01, 2.0)], [_fit(0.2, 0.01)])
    archive_commit(repo, [cell(7200, 0.02, 2.1)], [_fit(0.2, 0.01)])
    (row,) = json.loads(cli("diff", "HEAD~1", "HEAD", "--json", cwd=repo).out)["cells"]["changed"]
    assert (row["params_before"], row["params_after"]) == (12672, 7200)
    assert (row["hparams_before"], row["hparams_after"]) == ({"learning_rate": 0.01}, {"learning_rate": 0.02})
    assert ("~ cell s-200: params 12,672 -> 7,200, hparams learning_rate=0.01 -> learning_rate=0.02, val loss 2 -> 2.1"
            in cli("diff", "HEAD~1", "HEAD", cwd=repo).out)


def test_a_kept_configuration_that_diverged_is_named_where_another_stands_in_for_it(cli, repo):
    """With hpo.tpe.keep 2 a cell shows its better rank; when that rank diverged the other stood in, and the diff
    read as a change of selection."""
    shown = {**_cell("m", 400, 1.575), "hparams": {"learning_rate": 0.003}}
    archive_commit(repo, [shown], [_fit(0.2, 0.01)])
    archive_commit(repo, [{**shown, "val_loss": 2.033, "hparams": {"learning_rate": 0.01},
                           "ranks_left_out": {"train@m-400-r2": "diverged"}}], [_fit(0.2, 0.01)])
    (row,) = json.loads(cli("diff", "HEAD~1", "HEAD", "--json", cwd=repo).out)["cells"]["changed"]
    assert (row["ranks_left_out_before"], row["ranks_left_out_after"]) == ({}, {"train@m-400-r2": "diverged"})
    assert ("~ cell m-400: hparams learning_rate=0.003 -> learning_rate=0.01, val loss 1.575 -> 2.033; other kept "
            "configurations: train@m-400-r2 diverged\n") in cli("diff", "HEAD~1", "HEAD", cwd=repo).out
    archive_commit(repo, [shown], [_fit(0.2, 0.01)])
    assert "other kept configurations: train@m-400-r2 diverged before, not now" in cli("diff", "HEAD~1", "HEAD",
                                                                                          cwd=repo).out


def test_the_fits_of_excess_fcd_are_diffed_beside_the_loss_exponents(cli, repo):
    """Only the loss exponents were compared: a sampling change that moved the FCD exponents showed none."""
    cells = [_cell("xs", 100, 2.0)]
    for exponent in (0.017, 0.063):
        fcd = {**_fit(exponent, 0.01), "metric": "fcd_excess"}
        archive_commit(repo, cells, [_fit(0.2, 0.01)], generation_fits=[fcd])
    (row,) = json.loads(cli("diff", "HEAD~1", "HEAD", "--json", cwd=repo).out)["exponents"][1:]
    assert (row["law"], row["before"], row["after"]) == ("fcd_excess power", 0.017, 0.063)
    assert row["significant"] is not None, "tested as the loss exponents are"
    assert "exponent data/xs (fcd_excess power): 0.017 [" in cli("diff", "HEAD~1", "HEAD", cwd=repo).out


def test_a_run_that_starts_sampling_is_diffed_without_a_study_wide_value_on_every_cell(cli, repo):
    """Adding generation printed fcd_floor and its spread on each of 8 cells, and blamed the missing FCD fits of the
    earlier run on its age, with refit as the fix, though it had sampled nothing."""
    cells = [_cell("xs", 100, 2.0), _cell("xs", 200, 1.8), _cell("s", 100, 1.9)]
    archive_commit(repo, cells, [_fit(0.2, 0.01)])
    sampled = [{**cell, "generation": {"fcd_floor": 15.81, "validity": v}} for cell, v in zip(cells, (0.9, 0.8, 0.7))]
    archive_commit(repo, sampled, [_fit(0.2, 0.01)], generation_fits=[{**_fit(0.05, 0.01), "metric": "fcd_excess"}])
    out = cli("diff", "HEAD~1", "HEAD", cwd=repo).out
    assert "  ~ all 3 cells: fcd_floor none -> 15.81" in out and out.count("fcd_floor") == 1, out
    assert "  ~ cell xs-200: validity none -> 0.8" in out, out
    assert ("no such fit: this run fitted no fcd_excess power law (it sampled no molecules, having no generation "
            "section, or was archived before chemspec fitted their quality)") in out, out
    assert "refit" not in out
    alike = [{**cell, "generation": {**cell["generation"], "validity": 0.95 if cell["model"] == "s" else 0.5}}
             for cell in sampled]
    archive_commit(repo, alike, [_fit(0.2, 0.01)], generation_fits=[{**_fit(0.05, 0.01), "metric": "fcd_excess"}])
    out = cli("diff", "HEAD~1", "HEAD", cwd=repo).out
    assert "  ~ cell xs-100: validity 0.9 -> 0.5" in out and "  ~ cell xs-200: validity 0.8 -> 0.5" in out, \
        "two of three cells alike are named each"


def test_a_force_fields_test_error_exponents_are_diffed_beside_the_loss_exponents(cli, repo):
    cells = [_cell("xs", 100, 2.0)]
    for exponent in (0.31, 0.42):
        archive_commit(repo, cells, [_fit(0.2, 0.01)], error_fits=[{**_fit(exponent, 0.01), "metric": "force_mae"}])
    (row,) = json.loads(cli("diff", "HEAD~1", "HEAD", "--json", cwd=repo).out)["exponents"][1:]
    assert (row["law"], row["before"], row["after"]) == ("force_mae power", 0.31, 0.42)
    assert "exponent data/xs (force_mae power): 0.31 [" in cli("diff", "HEAD~1", "HEAD", cwd=repo).out


def test_a_force_field_diff_names_test_errors_in_the_runs_order_with_numbers_rounded(cli, repo):
    def cell(model: str, size: int, loss: float, forces: float) -> dict:
        return {**_cell(model, size, loss), "force_mae_meV_per_A": forces, "energy_mae_meV": 40.0}

    archive_commit(repo, [cell("w8", 25, 0.9, 600.0), cell("w8", 100, 0.7, 500.0), cell("w16", 25, 0.8, 550.0)],
                   [_fit(0.2651641250254359, 0.01, n=30)])
    archive_commit(repo, [cell("w8", 25, 0.9, 600.0), cell("w8", 100, 0.7, 480.123456), cell("w16", 25, 0.8, 520.0)],
                   [_fit(0.2712345678, 0.01, n=30)])
    out = cli("diff", "HEAD~1", "HEAD", cwd=repo).out
    changed = [line for line in out.splitlines() if line.startswith("  ~ cell")]
    assert changed == ["  ~ cell w8-100: val loss 0.7 -> 0.7, test force MAE (meV/Å) 500 -> 480.1",
                       "  ~ cell w16-25: val loss 0.8 -> 0.8, test force MAE (meV/Å) 550 -> 520"], out
    assert "exponent data/xs (power): 0.2652 [0.2447, 0.2856] -> 0.2712 [0.2508, 0.2917] (" in out


def test_an_object_missing_from_the_working_tree_archive_says_how_to_restore_it(cli, repo):
    digest = archive_commit(repo, [_cell("xs", 100, 2.0)], [])
    manifest = json.loads((repo / "archive" / "objects" / digest[:2] / digest).read_text())
    cells = manifest["objects"]["cells"]
    (repo / "archive" / "objects" / cells[:2] / cells).unlink()
    result = cli("report", "--from", "WORKTREE", "--no-files", cwd=repo)
    assert result.code == 1 and f"archive/objects/{cells[:2]}/{cells} not found in the working tree" in result.err
    assert "`git checkout -- archive`" in result.err and "Traceback" not in result.err, result.err


def test_an_object_corrupt_at_a_past_revision_says_verify_cannot_mend_it(cli, repo):
    """`archive verify` reads the working tree, whose copy may be intact; the message must not send the user
    there alone."""
    digest = archive_commit(repo, [_cell("xs", 100, 2.0)], [])
    cells = json.loads((repo / "archive" / "objects" / digest[:2] / digest).read_text())["objects"]["cells"]
    path = repo / "archive" / "objects" / cells[:2] / cells
    intact = path.read_bytes()
    path.write_bytes(intact.replace(b"2.0", b"2.5"))
    subprocess.run(["git", "commit", "-qam", "damage"], cwd=repo, check=True)
    path.write_bytes(intact)
    assert cli("archive", "verify", cwd=repo).code == 0
    result = cli("report", "--from", "HEAD", "--no-files", cwd=repo)
    assert result.code == 1 and f"archive object {cells} at revision HEAD is corrupt: the bytes committed there no " \
        "longer hash to its name" in result.err, result.err
    assert f"`git log --oneline -- archive/objects/{cells[:2]}/{cells}`" in result.err


def test_a_diff_gives_why_an_exponent_is_none_and_spec_values_as_yaml_writes_them(cli, repo):
    archive_commit(repo, [_cell("xs", 100, 2.0)], [_fit(0.2, 0.01)], spec_archive={"remote": "default"})
    reason = "cannot fit: 2 points; a power law with an interval needs at least 3"
    archive_commit(repo, [_cell("xs", 100, 2.0)], [{"axis": "data", "group": "xs", "law": "power", "n": 2,
                                                   "status": "cannot fit", "reason": reason}])
    out = cli("diff", "HEAD~1", "HEAD", cwd=repo).out
    assert f"exponent data/xs (power): 0.2 [0.07294, 0.3271] -> none (untested at 95%; after: {reason})" in out, out
    assert 'spec archive: {"remote": "default"} -> null' in out, out


def test_a_diff_with_the_working_tree_says_where_its_results_predate_the_compiled_study(cli, tmp_path, git_env):
    """A spec edited and compiled, not yet run: the archived run on disk is HEAD's, but not the study's now."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    ran = expand(load_study(write_spec(tmp_path / "before.yaml", tiny_study(**{"model.sizes.s.n_embd": 24}))))
    stages = {name: {"cmd": f"chemspec run x --params params.yaml --identity {ident}"}
              for name, ident in stage_identities(ran).items()}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}))
    write_spec(tmp_path / "study.yaml", tiny_study())
    assert cli("compile", "study.yaml", cwd=tmp_path).code == 0
    archive_commit(tmp_path, [_cell("xs", 100, 2.0)], [_fit(0.2, 0.01)], study="tiny")
    archive_commit(tmp_path, [_cell("xs", 100, 2.0)], [_fit(0.2, 0.01)], study="other")
    result = cli("diff", cwd=tmp_path)
    assert result.code == 0 and result.out.startswith("study tiny: HEAD"), result.err
    assert result.out.splitlines()[-1] == ("  no changes between the archived runs (spec, data, cells and exponents); "
                                           "what is compiled was not run (see the notes)")
    assert "note: WORKTREE: these results predate params.yaml as compiled now: 4 stages did not run as compiled " \
        "(archive, train@s-200, train@s-400, train@s-800)" in result.err, result.err
    assert "Run `dvc repro` to bring them up to date" in result.err


@pytest.mark.parametrize("args", [("diff", "nosuch", "HEAD"), ("report", "--from", "nosuch"), ("pull", "nosuch"),
                                  ("refit", "nosuch")], ids=["diff", "report-from", "pull", "refit"])
def test_a_revision_that_is_none_is_a_usage_error_in_every_verb(cli, repo, args):
    archive_commit(repo, [_cell("xs", 100, 2.0)], [])
    result = cli(*args, cwd=repo)
    assert result.code == 2 and "nosuch" in result.err and "git revision" in result.err, result.err


def test_a_diff_names_the_configurations_tpe_kept_where_they_changed(cli, repo):
    def selected(*rates: float) -> dict:
        return {"estimator": "tse", "kept": {"*": [{"learning_rate": rate} for rate in rates]}}

    cells = [_cell("xs", 100, 2.0)]
    archive_commit(repo, cells, [], selected=selected(0.003))
    archive_commit(repo, cells, [], selected=selected(0.01, 0.003))
    archive_commit(repo, [_cell("xs", 100, 1.9)], [], selected=selected(0.01, 0.003))
    result = json.loads(cli("diff", "HEAD~2", "HEAD~1", "--json", cwd=repo).out)
    assert result["selection"] == [{"group": "*", "before": [{"learning_rate": 0.003}],
                                    "after": [{"learning_rate": 0.01}, {"learning_rate": 0.003}],
                                    "unranked_before": False, "unranked_after": False}]
    text = cli("diff", "HEAD~2", "HEAD~1", cwd=repo).out
    assert "  TPE kept: learning_rate=0.003 -> learning_rate=0.01; learning_rate=0.003" in text, text
    assert json.loads(cli("diff", "HEAD~1", "HEAD", "--json", cwd=repo).out)["selection"] == []


def test_a_diff_says_which_side_trained_the_grids_only_configuration_without_tpe(cli, repo):
    only = {"estimator": "tse", "kept": {"*": [{"learning_rate": 0.003}]},
            "configs": [{"name": "c0", "hparams": {"learning_rate": 0.003}, "rank": 1, "kept": True, "unranked": True}]}
    ranked = {"estimator": "tse", "kept": {"*": [{"learning_rate": 0.01}]},
              "configs": [{"name": "c0", "hparams": {"learning_rate": 0.01}, "rank": 1, "kept": True},
                          {"name": "c1", "hparams": {"learning_rate": 0.003}, "rank": 2, "kept": False}]}
    cells = [_cell("xs", 100, 2.0)]
    archive_commit(repo, cells, [], selected=only)
    archive_commit(repo, cells, [], selected=ranked)
    archive_commit(repo, cells, [], selected={**only, "kept": {"*": [{"learning_rate": 0.001}]}})
    result = json.loads(cli("diff", "HEAD~2", "HEAD~1", "--json", cwd=repo).out)
    assert [(c["unranked_before"], c["unranked_after"]) for c in result["selection"]] == [(True, False)]
    text = cli("diff", "HEAD~2", "HEAD~1", cwd=repo).out
    assert ("  selection: learning_rate=0.003 (hpo.grid's only configuration) -> learning_rate=0.01 (TPE kept)"
            in text), text
    text = cli("diff", "HEAD~2", "HEAD", cwd=repo).out
    assert "  hpo.grid's only configuration: learning_rate=0.003 -> learning_rate=0.001" in text, text


def test_a_changed_result_of_a_cell_trained_with_the_same_identity_is_flagged(cli, repo):
    """The signal that a cell does not reproduce: nothing that changes results changed, the result did."""
    def cell(loss: float) -> dict:
        return {**_cell("xs", 100, loss), "cell": "train@xs-100"}

    archive_commit(repo, [cell(2.0)], [], identities={"train@xs-100": "a" * 64})
    archive_commit(repo, [cell(2.1)], [], identities={"train@xs-100": "a" * 64})
    archive_commit(repo, [cell(2.2)], [], identities={"train@xs-100": "b" * 64})
    (same,) = json.loads(cli("diff", "HEAD~2", "HEAD~1", "--json", cwd=repo).out)["cells"]["changed"]
    assert same["same_identity"] is True
    assert "val loss 2 -> 2.1; the same stage and cell identity trained both: it did not reproduce" in \
        cli("diff", "HEAD~2", "HEAD~1", cwd=repo).out
    (other,) = json.loads(cli("diff", "HEAD~1", "HEAD", "--json", cwd=repo).out)["cells"]["changed"]
    assert "same_identity" not in other
    archive_commit(repo, [{**cell(2.3), "hparams": {"learning_rate": 0.01}}], [], identities={"train@xs-100": "b" * 64})
    (rechosen,) = json.loads(cli("diff", "HEAD~1", "HEAD", "--json", cwd=repo).out)["cells"]["changed"]
    assert "same_identity" not in rechosen, "its identity holds no hyperparameters: TPE chose others"


def test_a_section_or_size_one_side_lacks_is_one_spec_change_not_one_per_default():
    """Adding `generation` listed each of its defaults as `null -> value`, and a new size each of its fields."""
    from chemspec.archive.history import spec_changes

    before = {"study": "s", "generation": None, "model": {"sizes": {"xs": {"n_embd": 16, "n_layer": 1}}},
              "executor": {"kind": "local"}}
    after = {"study": "s", "generation": {"samples": 50, "top_k": 0},
             "model": {"sizes": {"xs": {"n_embd": 24, "n_layer": 1}, "s": {"n_embd": 32, "n_layer": 1}}}}
    assert spec_changes(before, after) == [
        {"field": "generation", "before": None, "after": {"samples": 50, "top_k": 0}},
        {"field": "model.sizes.s", "before": None, "after": {"n_embd": 32, "n_layer": 1}},
        {"field": "model.sizes.xs.n_embd", "before": 16, "after": 24}]


def test_an_exponent_of_a_group_only_one_run_has_says_so_not_none_alone(cli, repo):
    """Across a change of data sizes, a params/<size> group exists on one side: 'none' read as a failed fit."""
    cells = [_cell("xs", 100, 2.0)]
    archive_commit(repo, cells, [_fit(0.05, 0.01, axis="params", group="900")])
    archive_commit(repo, cells, [_fit(0.06, 0.01, axis="params", group="950")])
    text = cli("diff", "HEAD~1", "HEAD", cwd=repo).out
    assert "exponent params/950 (power): none -> 0.06 [" in text and "before: no such fit: the grid had no such group" \
        in text, text
    assert "exponent params/900 (power): 0.05 [" in text and "after: no such fit: the grid had no such group" in text


def test_a_study_name_archived_nowhere_points_to_the_one_study_there_and_a_missing_params_file_is_refused(cli, repo):
    archive_commit(repo, [_cell("xs", 100, 2.0)], [_fit(0.2, 0.01)], study="qs")
    archive_commit(repo, [_cell("xs", 100, 1.0)], [_fit(0.2, 0.01)], study="qs")
    renamed = cli("diff", "HEAD~1", "HEAD", "--study", "qs2", cwd=repo)
    assert renamed.code == 2 and ("study 'qs2' is not archived at HEAD; archived: ['qs']; if 'qs2' is a renamed "
                                  "'qs', its runs before the rename are under the old name: give --study qs"
                                  ) in renamed.err, renamed.err
    missing = cli("diff", "HEAD~1", "HEAD", "--params", "nofile.yaml", cwd=repo)
    assert missing.code == 2 and "--params nofile.yaml: no such file" in missing.err, missing.err


def test_an_unknown_study_is_bad_input_only_where_study_named_it():
    """diff across a rename reads the compiled study's name at the older revision: no option was wrong."""
    from chemspec.archive.snapshot import given_study
    from chemspec.errors import UnknownStudy, UsageError

    @given_study
    def verb(source: str, study: str | None = None) -> None:
        raise UnknownStudy(f"study {study or 'qs2'!r} is not archived at {source}")

    with pytest.raises(UnknownStudy, match=r"study 'qs2' is not archived at HEAD~1"):
        verb("HEAD~1")
    with pytest.raises(UsageError, match=r"study 'qs3' is not archived at HEAD~1"):
        verb("HEAD~1", study="qs3")


def test_a_law_only_one_run_fitted_is_named_as_such_not_as_a_missing_group(cli, repo):
    """A run archived before the test-error fits has none: each of the newer run's read 'the grid had no such
    group' (outside review)."""
    cells = [_cell("xs", 100, 2.0)]
    archive_commit(repo, cells, [_fit(0.2, 0.01)])
    archive_commit(repo, cells, [_fit(0.2, 0.01)], error_fits=[{**_fit(0.4, 0.01), "metric": "force_mae"}])
    (row,) = json.loads(cli("diff", "HEAD~1", "HEAD", "--json", cwd=repo).out)["exponents"][1:]
    assert row["reason_before"].startswith("no such fit: this run fitted no force_mae power law"), row


def test_a_joint_exponent_shows_the_profile_interval_the_report_quotes_beside_the_tested_wald_one(cli, repo):
    cells = [_cell("xs", 100, 2.0)]
    archive_commit(repo, cells, [_fit(0.2, 0.5, n=9, law="joint", ci_profile=[0.07, 1.16])])
    archive_commit(repo, cells, [_fit(0.25, 0.4, n=9, law="joint", ci_profile=[0.1, 0.9])])
    text = cli("diff", "HEAD~1", "HEAD", cwd=repo).out
    assert "exponent data/xs (joint): 0.2 [-1.188, 1.588] (profile [0.07, 1.16]) -> 0.25 [-0.8606, 1.361] (profile " \
           "[0.1, 0.9]) (not significant at 95%" in text, text
    row = json.loads(cli("diff", "HEAD~1", "HEAD", "--json", cwd=repo).out)["exponents"][0]
    assert row["ci_profile_before"] == [0.07, 1.16] and row["ci_profile_after"] == [0.1, 0.9]
