"""`chemspec pull` on archives made by hand: which run a target names, and what it refuses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from chemspec.archive.store import Store
from tests.conftest import archive_commit, tiny_study, write_spec


def _cells(loss: float) -> list[dict]:
    return [{"model": "xs", "params": 100, "data_size": 100, "val_loss": loss, "status": "ok", "wall_time_s": 1.0,
             "hparams": {}}]


@pytest.fixture
def two_studies(tmp_path, git_env):
    """A repository whose HEAD archives studies alpha and beta, each with its own manifest."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    alpha = archive_commit(tmp_path, _cells(2.0), [], study="alpha")
    beta = archive_commit(tmp_path, _cells(1.0), [], study="beta")
    return tmp_path, alpha, beta


def test_a_manifest_id_pulls_its_own_study_where_several_are_archived(cli, two_studies):
    root, alpha, beta = two_studies
    result = cli("pull", alpha[:10], "--to", "a", cwd=root)
    assert result.code == 0 and "pulled study alpha" in result.out, result.err
    assert "note: this run's manifest names no checkpoints (its models were not archived)" in result.err, result.err
    assert json.loads((root / "a" / "manifest.json").read_text())["study"] == "alpha"
    assert json.loads((root / "a" / "cells.json").read_text())[0]["val_loss"] == 2.0
    assert cli("pull", beta[:10], "--to", "b", "--study", "beta", cwd=root).code == 0
    assert json.loads((root / "b" / "cells.json").read_text())[0]["val_loss"] == 1.0


def test_refit_takes_a_manifest_id_as_pull_does(cli, two_studies):
    root, alpha, beta = two_studies
    for digest, study in ((alpha, "alpha"), (beta, "beta")):
        result = cli("refit", digest[:10], "--json", cwd=root)
        assert result.code == 1 and json.loads(result.out)["study"] == study, result.err  # one cell: nothing fits
    refused = cli("refit", alpha[:10], "--study", "beta", cwd=root)
    assert refused.code == 2 and f"manifest {alpha[:16]} is a run of study 'alpha', not 'beta'" in refused.err


def test_refit_of_a_damaged_pulled_folder_says_to_pull_again_not_to_rerun_a_stage(cli, two_studies):
    root, alpha, _ = two_studies
    assert cli("pull", alpha[:10], "--to", "a", cwd=root).code == 0
    (root / "a" / "fit.json").unlink()
    missing = cli("refit", "a", cwd=root)
    assert missing.code == 1 and "a/fit.json is missing; a was pulled, so no stage rewrites it: pull the run again" \
        in missing.err, missing.err
    (root / "a" / "cells.json").write_text('[{"model": "xs"')
    truncated = cli("refit", "a", cwd=root)
    assert truncated.code == 1 and "a/cells.json is not readable JSON (JSONDecodeError" in truncated.err
    assert "pull the run again" in truncated.err and "dvc" not in truncated.err, truncated.err


def test_refit_of_a_pulled_folder_names_the_files_edited_since_the_pull(cli, two_studies):
    root, alpha, _ = two_studies
    assert cli("pull", alpha[:10], "--to", "a", cwd=root).code == 0
    untouched = cli("refit", "a", "--json", cwd=root)
    assert json.loads(untouched.out)["edited"] == [] and "note:" not in untouched.err, untouched.err
    cells = json.loads((root / "a" / "cells.json").read_text())
    (root / "a" / "cells.json").write_text(json.dumps([{**cells[0], "val_loss": 9.9}]))
    (root / "a" / "spec.json").write_text("{}")
    edited = cli("refit", "a", "--json", cwd=root)
    assert json.loads(edited.out)["edited"] == ["cells.json", "spec.json"]
    assert "note: cells.json, spec.json of a differ from the run pulled into it (its manifest.json): these fits " \
           "are of the edited files, not of the archive" in edited.err, edited.err


def test_a_run_only_the_working_tree_holds_is_refit_in_place_and_not_pulled(cli, two_studies):
    """The usual moment to look at a new run is before committing it: `archive ls` lists its id already."""
    from chemspec.archive.store import Store

    root, alpha, _ = two_studies
    store = Store(root / "archive")
    manifest = store.get_json(alpha)
    new = store.put_json({**manifest, "provenance": {**manifest["provenance"], "compute_hours": 1.0}})
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout
    listed = {line[2:18]: line for line in cli("archive", "ls", cwd=root).out.splitlines()}
    assert "   1 cells  at -  " in listed[new[:16]] and f"1 cells  at {head[:12]}" in listed[alpha[:16]], listed
    pulled = cli("pull", new[:12], "--to", "p", cwd=root)
    assert pulled.code == 2 and f"manifest {new[:16]} (study alpha) is in the working tree's archive/ but in no " \
        f"commit, and a pull reads a committed run: commit it" in pulled.err, pulled.err
    assert f"or refit it in place (`chemspec refit {new[:12]}`)" in pulled.err and not (root / "p").exists()
    refit = cli("refit", new[:12], "--json", cwd=root)
    assert json.loads(refit.out)["study"] == "alpha", refit.err
    worktree = cli("pull", "WORKTREE", cwd=root)
    assert worktree.code == 2 and "a pull reads a committed run" in worktree.err, worktree.err
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "the object, its ref still alpha's first run"], cwd=root, check=True)
    replaced = cli("pull", new[:12], "--to", "p", cwd=root)
    assert replaced.code == 2 and f"manifest {new[:16]} (study alpha) is committed, but no commit's archive/refs " \
        "names it" in replaced.err and f"(`chemspec refit {new[:12]}`)" in replaced.err, replaced.err


def test_a_study_that_disagrees_with_the_manifest_id_is_refused(cli, two_studies):
    root, alpha, _ = two_studies
    result = cli("pull", alpha[:10], "--to", "a", "--study", "beta", cwd=root)
    assert result.code == 2 and f"manifest {alpha[:16]} is a run of study 'alpha', not 'beta'" in result.err
    assert not (root / "a").exists()


def test_a_prefix_that_is_also_a_git_revision_is_refused_as_ambiguous(cli, two_studies):
    root, alpha, _ = two_studies
    subprocess.run(["git", "branch", alpha[:8]], cwd=root, check=True)
    result = cli("pull", alpha[:8], "--to", "a", cwd=root)
    assert result.code == 1 and f"{alpha[:8]!r} is both a git revision" in result.err, result.err
    assert f"the start of manifest {alpha[:16]};" in result.err and not (root / "a").exists()


def test_a_revision_still_needs_study_where_several_are_archived(cli, two_studies):
    root, _, _ = two_studies
    ambiguous = cli("pull", "HEAD", "--to", "h", cwd=root)
    assert ambiguous.code == 2 and "name one with --study" in ambiguous.err, "the fix is an option: bad usage"
    pulled = cli("pull", "HEAD", "--to", "h", "--study", "beta", cwd=root)
    assert pulled.code == 0 and "pulled study beta" in pulled.out, pulled.err


def test_a_ref_left_unreadable_in_history_does_not_stop_a_pull_by_commit_or_manifest_id(cli, two_studies):
    root, alpha, _ = two_studies
    first = subprocess.run(["git", "rev-parse", "HEAD~1"], cwd=root, capture_output=True, text=True).stdout.strip()
    (root / "archive" / "refs" / "alpha.json").write_text("<<<<<<< HEAD\n")
    subprocess.run(["git", "commit", "-qam", "a conflicted ref"], cwd=root, check=True)
    later = archive_commit(root, _cells(3.0), [], study="alpha")
    by_commit = cli("pull", first[:7], "--to", "c", cwd=root)
    assert by_commit.code == 0 and "pulled study alpha" in by_commit.out, by_commit.err
    assert json.loads((root / "c" / "cells.json").read_text())[0]["val_loss"] == 2.0
    for digest, loss in ((alpha, 2.0), (later, 3.0)):
        pulled = cli("pull", digest[:12], "--to", digest[:6], cwd=root)
        assert pulled.code == 0, pulled.err
        assert json.loads((root / digest[:6] / "cells.json").read_text())[0]["val_loss"] == loss


@pytest.fixture
def with_checkpoint(tmp_path, git_env, monkeypatch, request):
    """A project whose archived run names one DVC-tracked checkpoint (with its hash, unless the test's
    parameter is False, as manifests written before hashes were recorded), pushed to a folder remote, and
    a fresh clone of it (no DVC cache: checkpoints come from the remote)."""
    from chemspec.runtime.io import sha256_tree

    project, store = tmp_path / "project", tmp_path / "store"
    model = project / "results" / "s" / "train" / "xs-100" / "model"
    model.mkdir(parents=True)
    (model / "weights.bin").write_bytes(bytes(range(256)) * 64)
    for args in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "add", "-q", "results/s/train/xs-100/model"],
                 ["dvc", "remote", "add", "--local", "default", str(store)], ["dvc", "push", "-q", "-r", "default"]):
        subprocess.run(args, cwd=project, check=True, capture_output=True)
    archive_commit(project, _cells(1.0), [], checkpoints={"xs-100": "results/s/train/xs-100/model"},
                   spec_archive={"remote": "default"},
                   **({"checkpoint_sha256": {"xs-100": sha256_tree(model)}} if getattr(request, "param", True) else {}))
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
    monkeypatch.setenv("CHEMSPEC_REMOTE", str(store))
    return clone, store


def test_a_checkpoint_is_pulled_and_checked_against_its_archived_hash(cli, with_checkpoint):
    clone, _ = with_checkpoint
    result = cli("pull", "HEAD", "--to", "run", cwd=clone)
    assert result.code == 0 and "1 checkpoints" in result.out and result.err == "", result.err
    assert (clone / "run" / "checkpoints" / "xs-100" / "weights.bin").read_bytes() == bytes(range(256)) * 64
    ignored = subprocess.run(["git", "check-ignore", "run/checkpoints/xs-100/weights.bin", "run/cells.json"],
                             cwd=clone, capture_output=True, text=True).stdout.split()
    assert ignored == ["run/checkpoints/xs-100/weights.bin"], "checkpoints stay out of git, the summaries may go in"
    same = cli("pull", "HEAD", "--to", "run", cwd=clone)
    assert "is already pulled into run, unedited" in same.out, same.err
    (clone / "run" / "checkpoints" / "xs-100" / "weights.bin").write_bytes(b"cut short")
    again = cli("pull", "HEAD", "--to", "run", cwd=clone)
    said = ("run holds this run's pull, its checkpoints missing or other than the archived ones (refit needs none). "
            "Give another --to DIR for a fresh copy, or remove it")
    assert again.code == 1 and said in again.err, again.err


def test_the_default_folder_is_named_by_study_and_manifest_not_by_a_relative_revision(cli, two_studies,
                                                                                     monkeypatch):
    root, alpha, _ = two_studies
    result = cli("pull", "HEAD~1", cwd=root)
    assert result.code == 0 and f"-> pulled/alpha-{alpha[:12]}" in result.out, result.err
    assert json.loads((root / "pulled" / f"alpha-{alpha[:12]}" / "manifest.json").read_text())["study"] == "alpha"
    unknown = cli("pull", "nosuchrev", cwd=root)
    assert unknown.code == 2 and "'nosuchrev' is neither a git revision nor a manifest id archived in this history;" \
        in unknown.err, unknown.err
    absent = cli("pull", "HEAD", "--study", "gamma", cwd=root)
    assert absent.code == 2 and "study 'gamma' is not archived at HEAD;" in absent.err, absent.err
    (root / "elsewhere").mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(root))
    outside = cli("pull", "HEAD", cwd=root / "elsewhere")
    assert outside.code == 2 and "elsewhere is in no git repository: run this in the study's project" in outside.err


def test_a_checkpoint_damaged_on_the_remote_is_refused_and_nothing_is_pulled(cli, with_checkpoint):
    clone, store = with_checkpoint
    (blob,) = [p for p in store.rglob("*") if p.is_file() and p.stat().st_size == 256 * 64]
    blob.chmod(0o644)
    blob.write_bytes(b"X" + blob.read_bytes()[1:])
    result = cli("pull", "HEAD", "--to", "run", cwd=clone)
    assert result.code == 1 and f"remote 'default' ({store})" in result.err, result.err
    assert "checkpoint xs-100 (results/s/train/xs-100/model) at " in result.err, result.err
    damaged = f"{store}/files/md5/{blob.parent.name}/{blob.name}"
    assert f"is damaged on remote 'default' ({store}): {damaged} no longer holds the bytes DVC named it by, so " \
        "nothing was pulled; delete it there, then push" in result.err, result.err
    assert "a push alone mends nothing" in result.err and not (clone / "run").exists()
    default = cli("pull", "HEAD", cwd=clone)
    assert default.code == 1 and not (clone / "pulled").exists(), "nor the folder made for it"


def test_a_checkpoint_damaged_in_the_local_cache_names_that_file_and_a_pull_after_deleting_it_succeeds(
        cli, with_checkpoint, tmp_path):
    project = tmp_path / "project"
    (blob,) = [p for p in (project / ".dvc" / "cache").rglob("*") if p.is_file() and p.stat().st_size == 256 * 64]
    blob.chmod(0o644)
    blob.write_bytes(b"X" + blob.read_bytes()[1:])
    result = cli("pull", "HEAD", "--to", "run", cwd=project)
    assert result.code == 1 and (f"is damaged in this project's DVC cache: {blob} no longer holds the bytes DVC "
                                 "named it by") in result.err
    assert "delete it and pull again" in result.err and not (project / "run").exists()
    blob.unlink()
    again = cli("pull", "HEAD", "--to", "run", cwd=project)
    assert again.code == 0, again.err
    assert (project / "run" / "checkpoints" / "xs-100" / "weights.bin").read_bytes() == bytes(range(256)) * 64


def test_a_missing_folder_remote_is_named_not_blamed_on_dvc_push(cli, with_checkpoint, tmp_path, monkeypatch):
    clone, _ = with_checkpoint
    monkeypatch.setenv("CHEMSPEC_REMOTE", str(tmp_path / "nonexistent"))
    result = cli("pull", "HEAD", "--to", "run", cwd=clone)
    assert result.code == 1 and "dvc push" not in result.err.split(";")[0], result.err
    assert f"remote 'default' is the folder {tmp_path / 'nonexistent'}, which does not exist" in result.err
    assert not (clone / "run").exists()


@pytest.mark.parametrize("with_checkpoint", [False], indirect=True)
def test_a_run_archived_before_checkpoint_hashes_still_pulls_with_a_note(cli, with_checkpoint):
    clone, _ = with_checkpoint
    result = cli("pull", "HEAD", "--to", "run", cwd=clone)
    assert result.code == 0 and (clone / "run" / "checkpoints" / "xs-100" / "weights.bin").is_file(), result.err
    assert "note: 1 checkpoints were archived before chemspec recorded their hashes" in result.err


def test_a_pull_into_a_folder_that_holds_files_is_refused_whether_named_or_default(cli, two_studies):
    root, alpha, _ = two_studies
    for folder, args in ((root / "pulled" / f"alpha-{alpha[:12]}", ()), (root / "mine", ("--to", "mine"))):
        folder.mkdir(parents=True)
        (folder / "notes.txt").write_text("mine\n")
        result = cli("pull", alpha[:10], *args, cwd=root)
        assert result.code == 1 and "--to " + str(folder.relative_to(root)) not in result.err, result.err
        assert (f"{folder.relative_to(root)} is not empty, and a pull writes a new directory; remove it, or give "
                "another with --to DIR") in result.err
        assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_pulling_the_same_run_again_into_its_default_folder_does_nothing_while_it_is_unedited(cli, two_studies):
    root, alpha, _ = two_studies
    assert cli("pull", alpha[:10], cwd=root).code == 0
    folder = root / "pulled" / f"alpha-{alpha[:12]}"
    again = cli("pull", alpha[:10], cwd=root)
    assert again.code == 0 and (f"is already pulled into {Path('pulled') / f'alpha-{alpha[:12]}'}, unedited: nothing "
                                "to do") in again.out, again.out + again.err
    (folder / "fit.json").write_text("{}\n")
    edited = cli("pull", alpha[:10], cwd=root)
    assert edited.code == 1 and "holds this run's pull, edited since (fit.json); `chemspec refit" in edited.err, \
        edited.err
    (folder / "manifest.json").write_text("{}\n")
    edited = cli("pull", alpha[:10], cwd=root)
    assert "holds this run's pull, edited since (fit.json, manifest.json)" in edited.err, edited.err
    assert (folder / "fit.json").read_text() == "{}\n"


def test_a_revision_in_a_repository_without_commits_says_to_commit_first(cli, tmp_path, git_env):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    result = cli("diff", "HEAD~1", "HEAD", cwd=tmp_path)
    assert result.code == 1 and ("cannot read revision 'HEAD~1': the repository has no commits yet; commit the "
                                 "study's archive/ folder") in result.err, result.err


def test_revisions_read_from_a_folder_below_the_project_and_the_working_tree_says_where_to_go(cli, two_studies):
    root, alpha, _ = two_studies
    below = root / "results" / "deep"
    below.mkdir(parents=True)
    assert json.loads(cli("refit", "HEAD", "--study", "alpha", "--json", cwd=below).out)["study"] == "alpha"
    assert cli("pull", alpha[:10], "--to", "p", cwd=below).code == 0 and (below / "p" / "cells.json").is_file()
    assert cli("diff", "HEAD", "HEAD", "--study", "beta", cwd=below).code == 0
    hint = f"this is a folder below the project: run it from the project's top, {root}"
    for args in (("diff", "--study", "beta"), ("archive", "ls"), ("archive", "verify")):
        result = cli(*args, cwd=below)
        assert result.code == 1 and hint in result.err and "dvc repro" not in result.err, result.err


def test_a_commit_that_deleted_the_archive_refs_leaves_the_other_runs_listed_and_pulled(cli, two_studies):
    root, alpha, _ = two_studies
    for args in (["git", "rm", "-rq", "archive/refs"], ["git", "commit", "-qm", "drop"],
                 ["git", "checkout", "HEAD~1", "--", "archive/refs"], ["git", "commit", "-qm", "restore"]):
        subprocess.run(args, cwd=root, check=True)
    listed = cli("archive", "ls", cwd=root)
    assert listed.code == 0 and alpha[:16] in listed.out, listed.err
    assert cli("refit", alpha[:10], "--json", cwd=root).out


def test_a_dvc_lock_mid_merge_leaves_the_diff_standing_with_a_note(cli, tmp_path, git_env):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    write_spec(tmp_path / "study.yaml", tiny_study())
    assert cli("compile", "study.yaml", cwd=tmp_path).code == 0
    archive_commit(tmp_path, _cells(2.0), [], study="tiny")
    (tmp_path / "dvc.lock").write_text("<<<<<<< HEAD\nschema: '2.0'\n=======\n>>>>>>> other\n")
    result = cli("diff", cwd=tmp_path)
    assert result.code == 0 and "no changes between the archived runs" in result.out, result.err
    assert "note: WORKTREE: whether they predate params.yaml as compiled now is unknown: dvc.lock cannot be read" \
        in result.err, result.err


def test_an_untouched_pull_of_an_archive_holding_nan_is_not_called_edited(cli, tmp_path, git_env):
    """Result files wrote a bare NaN until 2026-12-05; a pull writes it as null, so its bytes differ from the
    archived object's although nobody edited them."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    digest = archive_commit(tmp_path, [{**_cells(2.0)[0], "val_loss": float("nan"), "status": "diverged"}], [])
    assert cli("pull", digest[:10], "--to", "p", cwd=tmp_path).code == 0
    assert json.loads((tmp_path / "p" / "cells.json").read_text())[0]["val_loss"] is None
    assert json.loads(cli("refit", "p", "--json", cwd=tmp_path).out)["edited"] == []


def _uncommitted_like(root, run: str, prefix: str) -> str:
    """A variant of manifest `run` put in the working tree's archive alone, its id starting with `prefix`."""
    from chemspec.archive.store import Store, json_digest

    store = Store(root / "archive")
    manifest = store.get_json(run)
    for hours in range(1, 2_000_000):
        variant = {**manifest, "provenance": {**manifest["provenance"], "compute_hours": float(hours)}}
        if json_digest(variant).startswith(prefix):
            return store.put_json(variant)
    raise AssertionError("no variant has the prefix")


def test_a_prefix_of_a_committed_and_an_uncommitted_run_is_refused_as_ambiguous(cli, two_studies):
    root, alpha, beta = two_studies
    length = next(n for n in range(2, 64) if beta[:n] != alpha[:n])
    new, prefix = _uncommitted_like(root, alpha, alpha[:length]), alpha[:length]
    for verb in ("pull", "refit"):
        result = cli(verb, prefix, cwd=root)
        assert result.code == 1 and f"2 archived manifests start with {prefix!r}" in result.err, result.err
        assert f"{alpha[:16]} (alpha)" in result.err and f"{new[:16]} (alpha, named by no commit)" in result.err
        assert "give more characters" in result.err
    assert json.loads(cli("refit", new[:12], "--json", cwd=root).out)["study"] == "alpha"
    shown = cli("archive", "show", prefix, cwd=root)
    assert shown.code == 2 and (f"2 manifests match {prefix!r} in archive: {min(alpha, new)[:16]} (alpha), "
                                f"{max(alpha, new)[:16]} (alpha); give more characters") in shown.err, shown.err


def test_ids_asked_for_below_the_project_are_found_in_the_archive_at_its_top(cli, two_studies):
    root, alpha, beta = two_studies
    length = next(n for n in range(2, 64) if beta[:n] != alpha[:n])
    new = _uncommitted_like(root, alpha, alpha[:length])
    below = root / "results"
    below.mkdir()
    refit = cli("refit", new[:12], cwd=below)
    assert refit.code == 2 and f"manifest {new[:16]} (study alpha) is in no commit, only in the working tree's " \
        f"archive/; this is a folder below the project: run it from the project's top, {root}" in refit.err, refit.err
    pulled = cli("pull", new[:12], cwd=below)
    assert pulled.code == 2 and "is in the working tree's archive/ but in no commit" in pulled.err, pulled.err
    for verb in ("pull", "refit"):
        ambiguous = cli(verb, alpha[:length], cwd=below)
        assert ambiguous.code == 1 and "2 archived manifests start with" in ambiguous.err, ambiguous.err
        nowhere = cli(verb, "f" * 40 if not new.startswith("f") else "e" * 40, cwd=below)
        assert nowhere.code == 2 and "neither" in nowhere.err and "below the project" not in nowhere.err


def test_a_prefix_of_a_commit_and_of_a_manifest_no_commit_names_is_refused_as_ambiguous(cli, two_studies):
    root, alpha, _ = two_studies
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    new = _uncommitted_like(root, alpha, head[:4])
    result = cli("refit", head[:4], cwd=root)
    assert result.code == 1 and f"{head[:4]!r} is both a git revision (commit {head[:12]}) and the start of " \
        f"manifest {new[:16]};" in result.err, result.err


def test_refit_with_a_law_and_a_level_needs_no_fit_json(cli, two_studies, tmp_path):
    root, alpha, _ = two_studies
    assert cli("pull", alpha[:10], "--to", "a", cwd=root).code == 0
    (root / "a" / "fit.json").unlink()
    without = cli("refit", "a", "--law", "power", cwd=root)
    assert without.code == 1 and "a/fit.json is missing" in without.err, without.err
    assert "or fit cells.json alone: give both --law and --confidence" in without.err
    pulled = json.loads(cli("refit", "a", "--law", "power", "--confidence", "0.9", "--json", cwd=root).out)
    assert (pulled["study"], pulled["confidence"], pulled["edited"]) == ("alpha", 0.9, ["fit.json"])

    hand = tmp_path / "mine"
    hand.mkdir()
    rows = [{**_cells(8.0 * size ** -0.3)[0], "data_size": size} for size in (100, 400, 1600, 6400)]
    (hand / "cells.json").write_text(json.dumps(rows))
    refused = cli("refit", str(hand), cwd=root)
    assert refused.code == 1 and "mine/fit.json is missing; fit cells.json alone: give both --law and " \
        "--confidence" in refused.err and "dvc" not in refused.err, refused.err
    result = cli("refit", str(hand), "--law", "power", "--confidence", "0.9", "--json", cwd=root)
    fitted = json.loads(result.out)
    assert result.code == 0 and fitted["study"] is None and fitted["edited"] == [], result.err
    (row,) = [f for f in fitted["fits"] if f["axis"] == "data"]
    assert row["status"] == "ok" and row["exponent"] == pytest.approx(0.3, abs=1e-3)
    text = cli("refit", str(hand), "--law", "power", "--confidence", "0.9", cwd=root).out
    assert text.startswith(f"cells of {hand}\n"), text
    (hand / "fit.json").write_text('{"study": "mine", "fits": [')
    damaged = json.loads(cli("refit", str(hand), "--law", "power", "--confidence", "0.9", "--json", cwd=root).out)
    assert damaged["fits"] == fitted["fits"] and damaged["study"] is None, "fit.json is not read: it adds nothing"
    law_only = cli("refit", str(hand), "--law", "power", cwd=root)
    assert law_only.code == 1 and "mine/fit.json is not readable JSON" in law_only.err, law_only.err
    assert ", or fit cells.json alone: give both --law and --confidence" in law_only.err
    (hand / "cells.json").write_text("[")
    cells = cli("refit", str(hand), "--law", "power", "--confidence", "0.9", cwd=root)
    assert cells.code == 1 and "mine/cells.json is not readable JSON" in cells.err, cells.err
    assert "--law" not in cells.err, "both were given: the way around a fit.json is no help with cells.json"


def test_diff_names_the_compiled_study_that_is_none_of_several_archived_and_reads_params_where_told(cli, two_studies):
    root, _, _ = two_studies
    (root / "elsewhere").mkdir()
    write_spec(root / "elsewhere" / "study.yaml", tiny_study(study="gamma"))
    assert cli("compile", "study.yaml", cwd=root / "elsewhere").code == 0
    result = cli("diff", "HEAD", "HEAD", "--params", "elsewhere/params.yaml", cwd=root)
    assert result.code == 2 and ("2 studies archived at HEAD (alpha, beta), and the study compiled into "
                                 "elsewhere/params.yaml, 'gamma', is none of them") in result.err, result.err
    assert "name one with --study" in result.err
    typo = cli("diff", "nosuchrev", "HEAD", "--params", "elsewhere/params.yaml", cwd=root)
    assert typo.code == 2 and "'nosuchrev' is not a git revision here" in typo.err, "the typo comes before --study"
    write_spec(root / "elsewhere" / "study.yaml", tiny_study(study="beta"))
    assert cli("compile", "study.yaml", cwd=root / "elsewhere").code == 0
    chosen = cli("diff", "HEAD", "HEAD", "--params", "elsewhere/params.yaml", cwd=root)
    assert chosen.code == 0 and chosen.out.startswith("study beta:"), chosen.err


def test_diff_takes_manifest_ids_as_pull_does_and_compares_the_runs_of_a_renamed_study(cli, two_studies):
    root, alpha, beta = two_studies
    again = archive_commit(root, _cells(1.5), [], study="alpha")
    result = cli("diff", alpha[:10], again[:10], cwd=root)
    assert result.code == 0 and result.out.startswith(f"study alpha: {alpha[:10]} ({alpha[:12]}) -> "
                                                      f"{again[:10]} ({again[:12]})"), result.err
    assert "2 -> 1.5" in result.out, result.out
    assert cli("diff", beta[:10], "HEAD", cwd=root).out.startswith("study beta:"), "an id names the study"
    renamed = cli("diff", alpha[:10], beta[:10], cwd=root)  # a study renamed archives its runs under each name
    assert renamed.code == 0 and renamed.out.startswith(f"study beta (against a run of 'alpha'): {alpha[:10]} "
                                                        f"({alpha[:12]}) -> {beta[:10]} ({beta[:12]})"), renamed.err
    assert '  spec study: "alpha" -> "beta"' in renamed.out and "2 -> 1" in renamed.out, renamed.out
    store = Store(root / "archive")
    manifest = store.get_json(store.ref("beta"))
    spec = {**store.get_json(manifest["objects"]["spec"]), "study": "gamma", "model": {"family": "painn"},
            "data": {"kind": "atoms"}}
    gamma = store.put_json({**manifest, "study": "gamma", "objects": {**manifest["objects"],
                                                                      "spec": store.put_json(spec)}})
    store.set_ref("gamma", gamma)
    unrelated = cli("diff", alpha[:10], gamma[:10], cwd=root)
    assert unrelated.code == 2 and ("the two runs are of different studies, 'alpha' (chemgpt on smiles data) and "
                                    "'gamma' (painn on atoms data); diff compares two runs of one study, or of one "
                                    "renamed") in unrelated.err, unrelated.err
    by_revision = cli("diff", "HEAD~2", "HEAD", "--study", "beta", cwd=root)  # HEAD~2 archives alpha alone
    assert by_revision.code == 2 and ("study 'beta' is not archived at HEAD~2; archived: ['alpha']" in by_revision.err
                                      and "; to compare a run of each name, give the two runs' manifest ids "
                                      "(`chemspec archive ls` lists them)" in by_revision.err), by_revision.err


@pytest.mark.parametrize("change, named", [
    ({"plots": {"../../evil.png": b"\x89PNG"}}, "objects.plots names '../../evil.png'"),
    ({"checkpoints": {"../../xs-evil": "results/s/train/xs-100/model"}}, "checkpoints names '../../xs-evil'")])
def test_a_committed_manifest_whose_names_are_paths_writes_nothing_anywhere(cli, tmp_path, git_env, change, named):
    """Plot and checkpoint names were joined onto the output folder as given: a commit of someone else's could
    make `pull` and `report --from` write outside it, outside the project too."""
    root = tmp_path / "project"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    archive_commit(root, _cells(2.0), [], **change)
    for args in (("pull", "HEAD", "--to", "pp"), ("report", "--from", "HEAD", "--out", "pages"), ("refit", "HEAD")):
        refused = cli(*args, cwd=root)
        assert refused.code == 1 and named in refused.err and "is not one chemspec wrote" in refused.err, refused.err
    assert not (root / "pp").exists() and not (root / "pages").exists()
    assert not list(tmp_path.rglob("evil.png")) and not list(tmp_path.rglob("xs-evil"))
    listed = cli("archive", "ls", cwd=root)
    assert named in listed.err and "Traceback" not in listed.err and "internal error" not in listed.err


def test_a_manifest_without_its_fit_or_provenance_is_named_not_an_internal_error(cli, tmp_path, git_env):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    first = archive_commit(tmp_path, _cells(2.0), [])
    objects = json.loads((tmp_path / "archive" / "objects" / first[:2] / first).read_text())["objects"]
    archive_commit(tmp_path, _cells(2.0), [], objects={k: v for k, v in objects.items() if k != "fit"})
    for args in (("diff", "HEAD~1", "HEAD"), ("report", "--from", "HEAD"), ("refit", "HEAD"), ("pull", "HEAD")):
        refused = cli(*args, cwd=tmp_path)
        assert refused.code == 1 and "is not one chemspec wrote: it names no fit object" in refused.err, refused.err
    archive_commit(tmp_path, _cells(2.0), [], provenance=None)
    listed = cli("archive", "ls", cwd=tmp_path)
    assert "its provenance (with its git state) is not a mapping" in listed.err and "internal error" not in listed.err
    assert first[:16] in listed.out, "the readable runs are still listed"


def test_a_pull_into_a_stage_output_or_the_archive_is_refused(cli, two_studies):
    """The next `dvc repro` checks a stage's outputs out whole, deleting a run pulled into them."""
    root, alpha, _ = two_studies
    (root / "results" / "s" / "fit").mkdir(parents=True)
    (root / "results" / "s" / "fit" / "fit.json").write_text("{}")
    for to, holder in (("results/s/fit/p", "results/s/fit holds fit.json"), ("archive/p", "archive holds refs")):
        refused = cli("pull", alpha[:10], "--to", to, cwd=root)
        assert refused.code == 2 and f"--to {to}: {holder}, written by a pipeline stage" in refused.err, refused.err
        assert not (root / to).exists()
    assert "git's or DVC's own" in cli("pull", alpha[:10], "--to", ".git/p", cwd=root).err


@pytest.mark.parametrize("signum, swallowed", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_a_signal_during_a_pull_stops_it_and_leaves_no_folder(cli, with_checkpoint, monkeypatch, signum, swallowed):
    """A Ctrl-C that landed in a finalizer (dulwich's, as a review saw) was swallowed, and the pull ran on and
    exited 0; a SIGTERM killed it, leaving its temporary folder and DVC's index half-written."""
    import importlib

    pulling = importlib.import_module("chemspec.archive.pull")  # the module; the package exports its function
    clone, _ = with_checkpoint
    fetch = pulling._fetch_one

    def fetch_then_signal(*args, **kwargs):
        fetch(*args, **kwargs)
        try:
            os.kill(os.getpid(), signum)
            time.sleep(0.5)  # the handler runs here
        except KeyboardInterrupt:
            if not swallowed:
                raise

    monkeypatch.setattr(pulling, "_fetch_one", fetch_then_signal)
    stopped = cli("pull", "HEAD", "--to", "run", cwd=clone)
    assert stopped.code == 130 and "interrupted" in stopped.err, stopped.err
    assert not (clone / "run").exists() and not [p for p in clone.iterdir() if p.name.startswith(".run")]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, "the pull's handlers are taken down after it"
    monkeypatch.setattr(pulling, "_fetch_one", fetch)
    assert cli("pull", "HEAD", "--to", "run", cwd=clone).code == 0, "DVC's state lets the next pull through"


def test_report_from_takes_a_manifest_id_as_pull_refit_and_diff_do(cli, two_studies):
    root, alpha, beta = two_studies
    shown = cli("report", "--from", beta[:10], "--json", "--no-files", cwd=root)
    assert shown.code == 0 and json.loads(shown.out)["study"] == "beta" and json.loads(shown.out)["manifest"] == beta
    refused = cli("report", "--from", alpha[:10], "--study", "beta", cwd=root)
    assert refused.code == 2 and f"manifest {alpha[:16]} is a run of study 'alpha', not 'beta'" in refused.err


def test_a_checkpoint_the_remote_lacks_asks_for_a_push_and_names_dvcs_index(cli, with_checkpoint):
    """A pull killed mid-fetch can leave DVC's index half-built, after which DVC fails as for an unpushed
    checkpoint: the message names the index to remove as well as the push."""
    from dvc.repo import Repo

    clone, store = with_checkpoint
    for blob in [p for p in store.rglob("*") if p.is_file()]:
        blob.unlink()
    refused = cli("pull", "HEAD", "--to", "run", cwd=clone)
    with Repo(str(clone)) as repo:
        index = str(Path(repo.site_cache_dir) / "index")
    assert refused.code == 1 and "could not be fetched from remote 'default'" in refused.err, refused.err
    assert "was `dvc push` run to it after that `dvc repro`?" in refused.err
    assert f"left DVC's index of this project half-built: remove {index} and pull again" in refused.err
    assert not (clone / "run").exists()


def test_a_project_in_a_subfolder_of_its_git_repository_reads_its_committed_runs(cli, tmp_path, git_env):
    """git resolves `REV:path` and `:(top)` pathspecs from the repository's top, not from the project: every verb
    that reads a committed run found no archive there (outside review)."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    project = tmp_path / "studies" / "one"
    project.mkdir(parents=True)
    first = archive_commit(project, _cells(2.0), [], study="alpha")
    archive_commit(project, _cells(1.0), [], study="alpha")
    diffed = cli("diff", "HEAD~1", "HEAD", "--json", cwd=project)
    assert diffed.code == 0 and json.loads(diffed.out)["cells"]["changed"][0]["delta"] == -1.0, diffed.err
    pulled = cli("pull", first[:10], "--to", "a", cwd=project)
    assert pulled.code == 0 and json.loads((project / "a" / "cells.json").read_text())[0]["val_loss"] == 2.0, pulled.err
    assert cli("refit", "HEAD", "--json", cwd=project).code == 1  # one cell: read, and nothing fits
    assert "pulled study alpha" in cli("pull", "HEAD~1", "--to", "b", cwd=project).out
    assert cli("report", "--from", "HEAD~1", "--out", "r", cwd=project).code == 0
    (project / "results").mkdir()
    assert cli("diff", "HEAD~1", "HEAD", cwd=project / "results").code == 0


def test_a_run_of_a_model_family_this_chemspec_does_not_know_asks_for_an_upgrade(cli, tmp_path, git_env):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    archive_commit(tmp_path, _cells(2.0), [], study="alpha")
    store = Store(tmp_path / "archive")
    manifest = store.get_json(store.ref("alpha"))
    spec = store.get_json(manifest["objects"]["spec"])
    manifest["objects"]["spec"] = store.put_json({**spec, "model": {"family": "mace"}})
    store.set_ref("alpha", store.put_json(manifest))
    result = cli("report", "--from", "WORKTREE", "--out", "r", cwd=tmp_path)
    assert result.code == 1 and "model family 'mace', which this chemspec does not know (it knows chemgpt," \
        in result.err
    assert "upgrade chemspec" in result.err and not (tmp_path / "r").exists(), result.err


def test_a_pull_without_to_lands_in_a_folder_git_ignores(cli, two_studies):
    """`git add -A && git commit`, the step after a study's run, took pulled copies into the history."""
    root, alpha, _ = two_studies
    result = cli("pull", alpha[:10], cwd=root)
    assert result.code == 0 and (root / "pulled" / f"alpha-{alpha[:12]}" / "cells.json").is_file(), result.err
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=root, capture_output=True,
                            text=True, check=True)
    assert status.stdout == "", status.stdout
