"""The archive across commits: diff two runs, pull one into a fresh clone, refit it, survive a killed write."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chemspec.words import number
from chemspec.runtime.io import sha256_tree
from tests.conftest import copy_project, repro_and_commit, tiny_study, tool_env, write_spec

pytestmark = pytest.mark.slow


def sh(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, env=tool_env())
    if check:
        assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def history(tiny_project, tmp_path_factory):
    root = copy_project(tiny_project[0], tmp_path_factory.mktemp("history") / "history")
    repro_and_commit(root, tiny_study(**{"data.sizes": [200, 400, 800, 1000]}), "one more data size")
    return root


def manifest_id(root: Path) -> str:
    return json.loads((root / "archive" / "refs" / "tiny.json").read_text())["manifest"]


def test_diff_lists_added_cells_and_exponent_changes(history):
    result = json.loads(sh("chemspec", "diff", "HEAD~1", "HEAD", "--json", cwd=history).stdout)
    assert result["cells"]["added"] == ["xs-1000", "s-1000", "m-1000"], "in the run's order, not as text"
    assert result["cells"]["removed"] == [] and result["cells"]["changed"] == []
    assert {"field": "data.sizes", "before": [200, 400, 800], "after": [200, 400, 800, 1000]} in result["spec"]
    data_axis = [e for e in result["exponents"] if e["axis"] == "data" and e["law"] == "power"]
    assert len(data_axis) == 3
    for row in data_axis:
        assert row["before"] != row["after"] and row["significant"] in (True, False)
        assert len(row["ci_before"]) == 2 and len(row["ci_after"]) == 2
    added = result["cells"]["losses"]["xs-1000"]
    assert added["status"] == "ok" and added["val_loss"] > 0
    text = sh("chemspec", "diff", "HEAD~1", "HEAD", cwd=history).stdout
    assert f"+ cell xs-1000: val loss {number(added['val_loss'])}\n" in text
    removed = json.loads(sh("chemspec", "diff", "HEAD", "HEAD~1", "--json", cwd=history).stdout)["cells"]
    assert removed["removed"] == ["xs-1000", "s-1000", "m-1000"] and removed["losses"]["xs-1000"] == added
    assert f"- cell xs-1000: val loss {number(added['val_loss'])}\n" in \
        sh("chemspec", "diff", "HEAD", "HEAD~1", cwd=history).stdout


def test_dvc_metrics_diff_compares_the_two_commits(history):
    out = sh("dvc", "metrics", "diff", "HEAD~1", "HEAD", "--json", cwd=history).stdout
    diff = json.loads(out)
    assert "results/tiny/fit/fit.json" in diff
    assert "exponents.power.data.xs" in diff["results/tiny/fit/fit.json"]
    assert "results/tiny/train/xs-1000/metrics.json" in diff


def test_corrupting_any_archived_object_is_detected(history):
    manifest = json.loads(sh("chemspec", "archive", "show", manifest_id(history), cwd=history).stdout)
    roles = {role: value if isinstance(value, str) else next(iter(value.values()))
             for role, value in manifest["objects"].items()}
    roles["manifest"] = manifest["manifest"]
    for role, digest in roles.items():
        path = history / "archive" / "objects" / digest[:2] / digest
        original = path.read_bytes()
        path.write_bytes(bytes([original[0] ^ 1]) + original[1:])
        try:
            failed = sh("chemspec", "archive", "verify", cwd=history, check=False)
            assert failed.returncode == 1 and "corrupt" in failed.stderr, role
        finally:
            path.write_bytes(original)
    assert len(roles) >= 11


def test_pull_into_a_fresh_clone_restores_checkpoints_and_refit_is_exact(history, tmp_path):
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(history), str(clone), cwd=tmp_path)
    pulled = sh("chemspec", "pull", "HEAD~1", "--to", "first", cwd=clone).stdout
    assert "9 checkpoints" in pulled and "note:" not in pulled
    first = clone / "first"
    hashes = json.loads((first / "manifest.json").read_text())["checkpoint_sha256"]
    assert sorted(hashes) == sorted(json.loads((first / "manifest.json").read_text())["checkpoints"])
    for cell in ("xs-200", "s-400", "m-800"):
        assert (first / "checkpoints" / cell / "config.json").is_file()
        assert (first / "checkpoints" / cell / "model.safetensors").is_file()
    assert not list(clone.glob("results/**/metrics.json")), "pull must not run or restore the pipeline"
    archived = json.loads((first / "fit.json").read_text())["fits"]
    refit = json.loads(sh("chemspec", "refit", "first", "--json", cwd=clone).stdout)["fits"]
    assert [f.get("exponent") for f in refit] == [f.get("exponent") for f in archived]
    assert [f.get("ci") for f in refit] == [f.get("ci") for f in archived]
    from_rev = json.loads(sh("chemspec", "refit", "HEAD~1", "--json", cwd=clone).stdout)["fits"]
    assert [f.get("exponent") for f in from_rev] == [f.get("exponent") for f in archived]
    other = sh("chemspec", "refit", "first", "--study", "painn", cwd=clone, check=False)
    assert other.returncode == 1 and "first holds study 'tiny', not 'painn'" in other.stderr


def _narrower_m(history: Path, root: Path, *repro: str) -> Path:
    """A copy of `history` with model size m narrower, compiled, `dvc repro <repro>` run and pushed."""
    copy_project(history, root)
    write_spec(root / "study.yaml", tiny_study(**{"data.sizes": [200, 400, 800, 1000], "model.sizes.m.n_embd": 24}))
    sh("chemspec", "compile", "study.yaml", cwd=root)
    sh("dvc", "repro", *repro, cwd=root)
    sh("dvc", "push", cwd=root)
    return root


def _pulled_head_is_the_archived_run(root: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(root), str(clone), cwd=tmp_path)
    pulled = sh("chemspec", "pull", "HEAD", "--to", "run", cwd=clone)
    assert "12 checkpoints" in pulled.stdout, pulled.stdout + pulled.stderr
    archived = json.loads((clone / "run" / "manifest.json").read_text())["checkpoint_sha256"]["m-200"]
    assert sha256_tree(clone / "run" / "checkpoints" / "m-200") == archived


def test_a_pull_fetches_checkpoints_as_the_commit_that_archived_the_run_recorded_them(history, tmp_path):
    """A commit after a partial `dvc repro` (one retrained cell, no archive stage) still names the older run;
    its dvc.lock records the new checkpoint, which the pull fetched and then called damaged."""
    root = _narrower_m(history, tmp_path / "partial", "train@m-200")
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "m narrower, one cell retrained, nothing archived", cwd=root)
    _pulled_head_is_the_archived_run(root, tmp_path)


def test_a_run_whose_archive_was_committed_before_its_dvc_lock_pulls_as_the_later_commit_records_it(history,
                                                                                                      tmp_path):
    """The commit that changed the ref records the run before in its dvc.lock: the later one holds the checkpoints."""
    root = _narrower_m(history, tmp_path / "apart")
    sh("git", "add", "archive", cwd=root)
    sh("git", "commit", "-qm", "the archive alone", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "dvc.lock and the rest", cwd=root)
    _pulled_head_is_the_archived_run(root, tmp_path)


def test_a_commit_whose_compiled_study_was_not_archived_is_named_by_diff_and_report_from(history, tmp_path):
    """Edited, compiled and committed without a repro, a commit's archive still names the run before: diff said
    "no changes: the same run", and report --from showed that run, without a word."""
    root = copy_project(history, tmp_path / "edited")
    write_spec(root / "study.yaml", tiny_study(**{"data.sizes": [200, 400, 800, 1000], "fit.confidence": 0.9}))
    sh("chemspec", "compile", "study.yaml", cwd=root)
    sh("git", "commit", "-qam", "confidence 0.9, not run", cwd=root)
    said = ("HEAD: the run archived there is not of the study its params.yaml compiles (the study was edited, "
            "compiled and committed after that run); `dvc repro` at that commit, then a commit")
    diff = sh("chemspec", "diff", "HEAD~1", "HEAD", cwd=root)
    assert "no changes between the archived runs (spec, data, cells and exponents); what is compiled was not run " \
           "(see the notes)" in diff.stdout and f"note: {said}" in diff.stderr, diff.stderr
    (note,) = json.loads(sh("chemspec", "diff", "HEAD~1", "HEAD", "--json", cwd=root).stdout)["unarchived"]
    assert note.startswith(said)
    report = sh("chemspec", "report", "--from", "HEAD", "--no-files", cwd=root)
    assert f"warning: {said}" in report.stderr, report.stderr
    assert said not in sh("chemspec", "diff", "HEAD~2", "HEAD~1", cwd=root).stderr, "both are runs as compiled"
    write_spec(root / "study.yaml", tiny_study(study="renamed"))
    sh("chemspec", "compile", "study.yaml", cwd=root)
    renamed = sh("chemspec", "diff", "HEAD", cwd=root).stderr
    assert ("note: the study compiled here, 'renamed', has no archived run at WORKTREE (`dvc repro` archives it; a "
            "renamed study starts a new archive), so the runs of 'tiny' were compared; --study names one") in renamed


def test_report_without_files_says_when_the_pages_on_disk_show_another_run(history):
    """An outside review committed pages that named an earlier manifest after a `report --no-files`."""
    page = history / "results" / "tiny" / "report" / "report.md"
    kept = page.read_text() if page.is_file() else None
    try:
        sh("chemspec", "report", cwd=history)
        assert "earlier run" not in sh("chemspec", "report", "--no-files", cwd=history).stderr
        page.write_text(page.read_text().replace(manifest_id(history), "0" * 64))
        older = sh("chemspec", "report", "--no-files", cwd=history).stderr
        assert (f"note: results/tiny/report/ holds the pages of an earlier run (manifest 000000000000; this one is "
                f"{manifest_id(history)[:12]}): run `chemspec report` without --no-files to rewrite them before you "
                "commit them") in " ".join(older.split()), older
        assert "earlier run" not in sh("chemspec", "report", cwd=history).stderr
        assert f"Archived as manifest {manifest_id(history)}." in page.read_text()
    finally:
        if kept is None:
            shutil.rmtree(page.parent)
        else:
            page.write_text(kept)


def test_report_from_an_archived_revision_needs_no_workspace_results(history, tmp_path):
    workspace = json.loads(sh("chemspec", "report", "--json", "--no-files", cwd=history).stdout)
    elsewhere = sh("chemspec", "report", "--json", "--no-files", "--params", str(history / "params.yaml"),
                   cwd=tmp_path)
    assert json.loads(elsewhere.stdout)["cells"] == workspace["cells"]
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(history), str(clone), cwd=tmp_path)
    before = sorted(p for p in clone.rglob("*") if ".git" not in p.parts)
    archived = json.loads(sh("chemspec", "report", "--from", "HEAD", "--json", cwd=clone).stdout)
    after = sorted(p for p in clone.rglob("*") if ".git" not in p.parts and "reports" not in p.parts)
    assert after == before, "a report from the archive writes only reports/ and reads no workspace results"
    assert not list(clone.glob("results/**/metrics.json"))
    assert archived["cells"] == workspace["cells"] and archived["fits"] == workspace["fits"]
    assert archived["manifest"] == manifest_id(history)
    page = (clone / "reports" / "tiny" / "report.md").read_text()
    assert f"Archived as manifest {manifest_id(history)}." in page and "| data size | Spearman" in page
    assert (clone / "reports" / "tiny" / "plots" / "scaling.png").is_file()
    earlier = json.loads(sh("chemspec", "report", "--from", "HEAD~1", "--no-files", "--json", cwd=clone).stdout)
    assert {c["data_size"] for c in earlier["cells"]} == {200, 400, 800}
    missing = sh("chemspec", "report", "--from", "HEAD", "--study", "nope", cwd=clone, check=False)
    assert missing.returncode != 0 and "study 'nope' is not archived at HEAD" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_a_fresh_clone_restores_finished_cells_from_the_remote_without_training(history, tmp_path):
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(history), str(clone), cwd=tmp_path)
    report = sh("chemspec", "report", cwd=clone, check=False)  # git's fit.json is there, DVC's cells.json not
    assert report.returncode == 1 and ("(results/tiny/fit holds no cells.json); where `dvc repro` ran and pushed "
                                       "them (as in a clone), `chemspec compile study.yaml` sets this copy's DVC "
                                       "remote and `dvc pull` then fetches them") in report.stderr, report.stderr
    sh("chemspec", "compile", "study.yaml", cwd=clone)
    out = sh("dvc", "repro", "--pull", cwd=clone).stdout
    assert "Running stage 'train@" not in out and "Running stage 'tpe@" not in out, out
    assert json.loads((clone / "results" / "tiny" / "train" / "xs-800" / "metrics.json").read_text())["status"] == "ok"


def test_a_diff_after_an_edit_compiled_but_not_run_heads_its_note(history, tmp_path):
    """The headline said "no changes: the same run" above a note that the compiled study had not run."""
    root = copy_project(history, tmp_path / "edited")
    write_spec(root / "study.yaml", tiny_study(**{"data.sizes": [200, 400, 800, 1000], "hpo.grid.learning_rate":
                                                  [1.0e-3, 3.0e-3]}))
    sh("chemspec", "compile", "study.yaml", cwd=root)
    done = sh("chemspec", "diff", cwd=root)
    assert done.stdout.splitlines()[-1] == ("  no changes between the archived runs (spec, data, cells and exponents); "
                                            "the working tree's study may not be what they ran (see the note on its "
                                            "results)"), done.stdout
    assert "note: WORKTREE: these results predate params.yaml as compiled now" in done.stderr


def test_pulled_checkpoint_loads_with_transformers(history, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sh("chemspec", "pull", "HEAD", "--to", str(tmp_path / "run"), cwd=history)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "checkpoints" / "xs-800")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "run" / "checkpoints" / "xs-800")
    assert model.config.vocab_size == len(tokenizer)


def test_archiving_the_same_results_again_gives_the_same_hashes(history):
    before = json.loads(sh("chemspec", "archive", "show", manifest_id(history), cwd=history).stdout)
    sh("chemspec", "run", "archive", "--params", "params.yaml", cwd=history)
    after = json.loads(sh("chemspec", "archive", "show", manifest_id(history), cwd=history).stdout)
    assert before["provenance"]["git"] != after["provenance"]["git"] or before == after
    for role in ("spec", "cells", "fit", "selected", "data", "split", "plots", "train", "tpe"):
        assert before["objects"][role] == after["objects"][role], role
    sh("git", "checkout", "--", "archive", cwd=history)


def _later(value, timed: bool = False):
    """`value` with every number under a timing key one and a half seconds later."""
    from chemspec.archive.manifest import SUMMARY_TIMES

    if isinstance(value, dict):
        return {k: _later(v, timed or k in SUMMARY_TIMES) for k, v in value.items()}
    if isinstance(value, list):
        return [_later(v, timed) for v in value]
    return value + 1.5 if timed and isinstance(value, (int, float)) and not isinstance(value, bool) else value


def test_a_rerun_that_took_longer_keeps_the_summary_objects_and_its_times_come_back(history):
    results = history / "results" / "tiny"
    files = [results / "fit" / "cells.json", results / "fit" / "fit.json", results / "selected.json"]
    originals = {path: path.read_bytes() for path in files}
    before = json.loads(sh("chemspec", "archive", "show", manifest_id(history), cwd=history).stdout)
    try:
        for path in files:
            path.write_text(json.dumps(_later(json.loads(path.read_text()))))
        sh("chemspec", "run", "archive", "--params", "params.yaml", cwd=history)
        after = json.loads(sh("chemspec", "archive", "show", manifest_id(history), cwd=history).stdout)
        for role in ("cells", "fit", "selected", "train", "tpe"):
            assert before["objects"][role] == after["objects"][role], role
        assert before["objects"]["timing"] != after["objects"]["timing"]
        report = json.loads(sh("chemspec", "report", "--from", "WORKTREE", "--json", "--no-files", cwd=history).stdout)
        later = json.loads(files[1].read_text())
        assert report["cost"] == later["cost"] and report["cost"]["train_s"] > 1.5
        times = lambda rows: {(r["model"], r["data_size"]): r["wall_time_s"] for r in rows}  # noqa: E731
        assert times(report["cells"]) == times(json.loads(files[0].read_text()))
        assert report["statistics"] == later["statistics"]
    finally:
        for path, data in originals.items():
            path.write_bytes(data)
        sh("git", "checkout", "--", "archive", cwd=history)
        sh("git", "clean", "-fdq", "--", "archive", cwd=history)


def test_a_killed_archive_write_leaves_the_previous_archive_intact(history):
    ref = history / "archive" / "refs" / "tiny.json"
    previous = ref.read_bytes()
    script = textwrap.dedent("""
        import os, signal
        from chemspec.archive import store
        from chemspec import api
        real, calls = store.Store.put_bytes, []
        def dying(self, data):
            calls.append(1)
            if len(calls) == 4:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, data)
        store.Store.put_bytes = dying
        api.run("archive", "params.yaml")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=history, env=tool_env())
    assert done.returncode == -signal.SIGKILL
    assert ref.read_bytes() == previous
    assert "verified" in sh("chemspec", "archive", "verify", cwd=history).stdout


def test_a_study_archived_to_a_named_remote_pushes_and_pulls_through_it(tiny_project, tmp_path, monkeypatch):
    root = copy_project(tiny_project[0], tmp_path / "named")
    store = tmp_path / "store"
    sh("dvc", "remote", "add", "store", str(store), cwd=root)
    out = repro_and_commit(root, tiny_study(**{"archive.remote": "store"}), "archive to the store remote")
    assert "Running stage 'train@" not in out and "Running stage 'archive'" in out, out
    assert sh("dvc", "remote", "default", cwd=root).stdout.strip() == "store", "compile makes it dvc push's remote"
    assert list(store.rglob("*")), "dvc push went to the study's remote"
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(root), str(clone), cwd=tmp_path)
    monkeypatch.setenv("CHEMSPEC_REMOTE", str(tmp_path / "empty"))  # the default remote holds nothing
    assert "9 checkpoints" in sh("chemspec", "pull", "HEAD", "--to", "run", cwd=clone).stdout
    assert (clone / "run" / "checkpoints" / "m-800" / "model.safetensors").is_file()
    sh("dvc", "remote", "remove", "store", cwd=clone)
    gone = sh("chemspec", "pull", "HEAD", "--to", "again", cwd=clone, check=False)
    assert gone.returncode == 1 and "archive.remote 'store' of this run is not a DVC remote of this project" in gone.stderr
