"""The content-addressed store: names are hashes, equal content dedupes, verify finds every fault."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from chemspec.archive import Store, verify
from chemspec.errors import ArchiveError


def test_objects_are_named_by_the_sha256_of_their_canonical_bytes(tmp_path):
    store = Store(tmp_path)
    a = store.put_json({"b": 1, "a": [1.5, "x"]})
    b = store.put_json({"a": [1.5, "x"], "b": 1})
    assert a == b == hashlib.sha256(b'{"a":[1.5,"x"],"b":1}').hexdigest()
    assert store.path(a).read_bytes() == b'{"a":[1.5,"x"],"b":1}'
    assert store.put_json({"a": 2}) != a
    assert len([p for p in (tmp_path / "objects").rglob("*") if p.is_file()]) == 2


def _archived(tmp_path) -> tuple[Store, dict]:
    store = Store(tmp_path)
    objects = {"fit": store.put_json({"alpha": 0.2}), "plot": store.put_bytes(b"\x89PNG fake"),
               "train": {"xs-100": store.put_json({"val_loss": 1.0})}}
    manifest = store.put_json({"study": "s", "objects": objects})
    store.set_ref("s", manifest)
    return store, objects


def test_verify_passes_on_an_intact_archive(tmp_path):
    _archived(tmp_path)
    assert verify(tmp_path) == (4, [])  # the manifest and the three objects it names


@pytest.mark.parametrize("role", ["fit", "plot", "train"])
def test_verify_detects_one_flipped_byte_in_each_object_type(tmp_path, role):
    store, objects = _archived(tmp_path)
    digest = objects[role] if role != "train" else objects["train"]["xs-100"]
    path = store.path(digest)
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))
    checked, problems = verify(tmp_path)
    assert len(problems) == 1 and "corrupt" in problems[0] and role in problems[0]


def test_verify_detects_a_deleted_object_and_a_corrupt_manifest(tmp_path):
    store, objects = _archived(tmp_path)
    store.path(objects["fit"]).unlink()
    assert "missing" in verify(tmp_path)[1][0]
    manifest = store.path(store.ref("s"))
    manifest.write_bytes(manifest.read_bytes() + b" ")
    assert "manifest" in verify(tmp_path)[1][0]


@pytest.mark.parametrize("text", ["<<<<<<< HEAD\n", "{}", '{"manifest": "abc"}'])
def test_a_garbled_ref_is_named_with_the_fix(cli, tmp_path, text):
    _archived(tmp_path / "archive")
    (tmp_path / "archive" / "refs" / "s.json").write_text(text)
    with pytest.raises(ArchiveError, match=r"refs/s.json is not an archive ref .*git checkout -- archive/refs"):
        Store(tmp_path / "archive").ref("s")
    for args in (("archive", "ls"), ("diff", "WORKTREE", "WORKTREE", "--study", "s")):
        result = cli(*args, cwd=tmp_path)
        assert result.code == 1 and "internal error" not in result.err, result.err
    assert "refs/s.json is not an archive ref" in cli("archive", "ls", cwd=tmp_path).err
    assert "s: manifest: archive/refs/s.json is not an archive ref" in cli("archive", "verify", cwd=tmp_path).err


def test_files_keep_the_modes_open_would_give(tmp_path):
    store, objects = _archived(tmp_path)
    mask = os.umask(0)
    os.umask(mask)
    assert oct(store.path(objects["fit"]).stat().st_mode & 0o777) == oct(0o666 & ~mask)


def test_verify_of_an_empty_archive_says_what_to_run(tmp_path):
    with pytest.raises(ArchiveError, match="no archived runs"):
        verify(tmp_path)


def test_a_write_killed_midway_leaves_no_object(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal
        from chemspec.runtime import io
        real = os.replace
        def die(*a):
            os.kill(os.getpid(), signal.SIGKILL)
        io.os.replace = die
        from chemspec.archive import Store
        Store({str(tmp_path)!r}).put_bytes(b"x" * 100000)
    """)
    done = subprocess.run([sys.executable, "-c", script])
    assert done.returncode == -signal.SIGKILL
    digest = hashlib.sha256(b"x" * 100000).hexdigest()
    assert not Store(tmp_path).path(digest).exists()
    assert os.listdir(tmp_path / "objects" / digest[:2]) != [digest]


def test_an_unknown_revision_is_named_as_such(cli, tmp_path, git_env):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    result = cli("refit", "nonrev", cwd=tmp_path)
    assert result.code == 2 and ("nonrev is neither a folder, a git revision nor an archived manifest id here; give "
                                 "a folder that `chemspec pull` made, a commit, branch or tag, or a manifest id "
                                 "(`chemspec archive ls`)") in result.err, result.err


def _two_runs(root) -> tuple[Store, str, str]:
    """An earlier and a current run of study s, each a manifest naming its own fit object."""
    store = Store(root)
    digests = []
    for loss in (2.0, 1.0):
        objects = {"fit": store.put_json({"loss": loss}), "train": {"xs-100": store.put_json({"val_loss": loss})}}
        digests.append(store.put_json({"kind": "chemspec-manifest", "study": "s", "objects": objects,
                                       "provenance": {"git": {"commit": None}, "compute_hours": 0.0}}))
        store.set_ref("s", digests[-1])
    return store, digests[0], digests[1]


def _flip(path) -> None:
    data = bytearray(path.read_bytes())
    data[-2] ^= 1
    path.write_bytes(bytes(data))


def test_verify_checks_the_objects_of_earlier_runs_and_objects_no_manifest_names(tmp_path):
    store, old, new = _two_runs(tmp_path)
    assert verify(tmp_path) == (6, [])
    _flip(store.path(store.get_json(old)["objects"]["fit"]))
    orphan = store.put_bytes(b"left by an interrupted run")
    _flip(store.path(orphan))
    checked, problems = verify(tmp_path)
    assert checked == 7 and len(problems) == 2, problems
    assert problems[0].startswith(f"s (manifest {old[:12]}): fit: archive object") and "corrupt" in problems[0]
    assert problems[1].startswith(f"object {orphan}: archive object {orphan} is corrupt")


def test_verify_names_an_object_that_two_runs_share_under_each_of_them(tmp_path):
    """Listed under the older run only, the current run's copy looked intact."""
    store = Store(tmp_path)
    shared = store.put_json({"cells": "the same in both runs"})
    runs = [store.put_json({"kind": "chemspec-manifest", "study": "s", "provenance": {"git": {"commit": None}},
                            "objects": {"cells": shared, "fit": store.put_json({"loss": loss})}})
            for loss in (2.0, 1.0)]
    store.set_ref("s", runs[1])
    _flip(store.path(shared))
    problems = verify(tmp_path)[1]
    assert sorted(problem.split(":")[0] for problem in problems) == sorted(f"s (manifest {run[:12]})" for run in runs)


def test_archive_show_tells_an_id_that_names_nothing_from_a_damaged_manifest_and_from_no_archive(cli, tmp_path):
    empty = cli("archive", "show", "deadbeef", cwd=tmp_path)
    assert empty.code == 1 and "no archived runs under archive; run `dvc repro` first" in empty.err, empty.err
    store, old, new = _two_runs(tmp_path / "archive")
    unknown = cli("archive", "show", "deadbeef", cwd=tmp_path)
    assert unknown.code == 2 and ("no manifest in archive starts with 'deadbeef', and no study of that name is "
                                  "archived there; `chemspec archive ls`") in unknown.err, unknown.err
    by_study = cli("archive", "show", "s", cwd=tmp_path)
    assert by_study.code == 0 and json.loads(by_study.out)["manifest"] == new, "a study's name shows its newest run"
    assert json.loads(cli("archive", "show", old[:12], cwd=tmp_path).out)["manifest"] == old
    store.path(new).unlink()
    lost = cli("archive", "show", "s", cwd=tmp_path)
    assert lost.code == 1 and f"archive/refs/s.json names manifest {new[:16]}, which is missing; restore the " \
        "archive with `git checkout -- archive`" in lost.err, lost.err
    _flip(store.path(old))
    damaged = cli("archive", "show", old[:12], cwd=tmp_path)
    assert damaged.code == 1 and damaged.err.startswith(f"error: manifest {old}: ") and "restore the archive with " \
        "`git checkout -- archive`" in damaged.err, damaged.err


def test_a_study_named_like_the_start_of_another_runs_id_is_refused_as_ambiguous(cli, tmp_path):
    store, old, new = _two_runs(tmp_path / "archive")
    store.set_ref(old[:3], new)
    shadowed = cli("archive", "show", old[:3], cwd=tmp_path)
    assert shadowed.code == 2 and f"{old[:3]!r} is a study's name and the start of manifest {old[:16]}: give more " \
        f"of that id, or {new[:16]} (the study's newest run)" in shadowed.err, shadowed.err
    assert json.loads(cli("archive", "show", old[:8], cwd=tmp_path).out)["manifest"] == old
    store.set_ref(old[:3], old)
    assert json.loads(cli("archive", "show", old[:3], cwd=tmp_path).out)["manifest"] == old


def test_archive_ls_lists_the_readable_runs_and_names_what_it_cannot_read(cli, tmp_path):
    store, old, new = _two_runs(tmp_path / "archive")
    (tmp_path / "archive" / "refs" / "stray.json").mkdir()
    listed = cli("archive", "ls", cwd=tmp_path)
    assert listed.code == 0 and listed.err == "", listed.err
    header, *rows = listed.out.splitlines()
    assert header.split() == ["manifest", "study", "cells", "at", "(commit)", "compute"], header
    assert sorted(line[:18] for line in rows) == sorted([f"* {new[:16]}", f"  {old[:16]}"])
    assert all(row.index(" cells  at ") + 6 == header.index("  at (commit)") for row in rows), listed.out
    store.path(new).unlink()
    broken = cli("archive", "ls", cwd=tmp_path)
    assert broken.code == 1 and f"  {old[:16]}  s" in broken.out, broken.out
    assert f"refs/s.json names manifest {new}, which is missing or corrupt; restore it" in broken.err
    assert f"s: manifest: archive object {new} is missing" in cli("archive", "verify", cwd=tmp_path).err


def test_archive_ls_keeps_its_columns_under_the_header_for_long_study_names(cli, tmp_path):
    store, old, _ = _two_runs(tmp_path / "archive")
    store.set_ref("a-study-name-of-32-characters-xy", old)
    header, *rows = cli("archive", "ls", cwd=tmp_path).out.splitlines()
    assert len(rows) == 2 and all(row.index(" cells  at ") + 6 == header.index("  at (commit)") for row in rows), rows


def test_a_temporary_file_left_by_a_killed_write_is_named_not_fatal(cli, tmp_path):
    store, old, new = _two_runs(tmp_path / "archive")
    leftover = store.path(new).parent / f".{new}.k3j9x0qa.tmp"
    leftover.write_bytes(b'{"kind":"chemspec-manifest","stu')
    listed = cli("archive", "ls", cwd=tmp_path)
    assert listed.code == 0 and f"* {new[:16]}" in listed.out, listed.err
    note = f"note: {leftover.relative_to(tmp_path)}: leftover from an interrupted write, not an object; delete it"
    assert note in listed.err
    verified = cli("archive", "verify", cwd=tmp_path)
    assert verified.code == 0 and "6 objects verified" in verified.out, verified.err
    assert "leftover from an interrupted write" in verified.err


def test_the_chemspec_source_is_recorded_only_for_a_checkout_of_chemspec(tmp_path):
    """An installed copy in a project's ignored .venv lies inside the project's git work tree: its commit
    is the project's, not chemspec's, so none is recorded; chemspec's own checkout records its HEAD."""
    from pathlib import Path

    import chemspec
    from chemspec.archive.manifest import source_state

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / ".gitignore").write_text(".venv/\n")
    subprocess.run(["git", "add", ".gitignore"], cwd=tmp_path, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project"], cwd=tmp_path,
                   check=True)
    installed = tmp_path / ".venv" / "lib" / "site-packages" / "chemspec"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text('__version__ = "0.1.0"\n')
    assert source_state(installed) == {"commit": None, "dirty": None}
    package = Path(chemspec.__file__).resolve().parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=package, capture_output=True, text=True).stdout.strip()
    assert source_state(package)["commit"] == head


def test_archive_ls_lists_each_studys_runs_in_the_order_of_the_commits_they_ran_on(cli, tmp_path, git_env):
    """Runs were listed by manifest id, which scrambled a study's history."""
    from tests.conftest import archive_commit

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "start"], cwd=tmp_path, check=True)
    runs = []
    for loss in (3.0, 2.5, 2.0, 1.5):
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
        runs.append(archive_commit(tmp_path, [{"model": "xs", "val_loss": loss}], [], study="s",
                                   provenance={"git": {"commit": head}, "compute_hours": 0.0}))
    assert sorted(runs) != runs, "ids in another order than the commits', or the test shows nothing"
    listed = cli("archive", "ls", cwd=tmp_path)
    assert [line[2:18] for line in listed.out.splitlines()[1:]] == [run[:16] for run in runs], listed.out
    assert listed.out.splitlines()[-1].startswith(f"* {runs[-1][:16]}")


def test_a_study_file_never_committed_makes_the_run_dirty_and_the_archives_own_objects_do_not(tmp_path):
    """A first run recorded its empty first commit as clean while study.yaml was untracked."""
    from chemspec.archive.manifest import git_state

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "init"],
                   cwd=tmp_path, check=True)
    (tmp_path / "archive" / "objects").mkdir(parents=True)
    (tmp_path / "archive" / "objects" / "ab").write_text("{}")
    assert git_state(tmp_path, tmp_path / "archive")["dirty"] is False
    (tmp_path / "study.yaml").write_text("study: s\n")
    assert git_state(tmp_path, tmp_path / "archive")["dirty"] is True


def test_verify_names_a_cells_row_rewritten_consistently_beside_its_cells_own_object(tmp_path):
    """A loss edited in `cells`, stored under its new hash with the manifest and ref rewritten, passed verify, and
    the report showed it beside fits of the old loss."""
    store = Store(tmp_path / "archive")
    train = store.put_json({"val_loss": 1.518, "test_loss": 1.52})

    def archive(loss: float) -> None:
        cells = store.put_json([{"cell": "l-100", "model": "l", "data_size": 100, "val_loss": loss, "test_loss": 1.52}])
        fit = store.put_json({"fits": [{"axis": "data", "group": "l", "law": "power", "x": [100], "y": [1.518]}]})
        objects = {"spec": store.put_json({"study": "s"}), "cells": cells, "fit": fit, "train": {"l-100": train}}
        store.set_ref("s", store.put_json({"kind": "chemspec-manifest", "study": "s", "objects": objects,
                                           "checkpoints": {}, "provenance": {"git": {}}}))

    archive(1.518)
    assert verify(tmp_path / "archive")[1] == []
    archive(0.45)
    problems = verify(tmp_path / "archive")[1]
    assert any(line.endswith("cells: l-100 has val_loss 0.45, its train object 1.518") for line in problems), problems
    assert any(line.endswith("fit: the power law of data/l has a point (100, 1.518) that no row of cells records")
               for line in problems), problems
