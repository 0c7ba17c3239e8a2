"""`chemspec launch --executor local -j 4` against a serial `dvc repro` of the same study, in two temp repos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from chemspec.archive.manifest import TIMING_KEYS
from chemspec.errors import LaunchError
from chemspec.launch import launch
from chemspec.launch_jobs import Settings
from tests.conftest import sh, tiny_study, write_spec

pytestmark = pytest.mark.slow

IGNORED = set(TIMING_KEYS)  # the fields of cells.json that may differ between runs: time, speed, memory


def small_study() -> dict:
    """2 TPE configs, 2 model sizes x 2 data sizes: four train cells to run at once."""
    study = tiny_study(**{"data.source.max_molecules": 700, "data.sizes": [100, 200], "data.validation": 100,
                          "data.test": 100, "hpo.tpe.data_size": 200})
    del study["model"]["sizes"]["m"]
    return study


def project(root: Path) -> Path:
    sh("git", "init", "-q", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    write_spec(root / "study.yaml", small_study())
    sh("chemspec", "compile", "study.yaml", cwd=root)
    return root


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> Path:
    root = project(tmp_path_factory.mktemp("serial"))
    sh("dvc", "repro", cwd=root)
    return root


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> tuple[Path, str]:
    root = project(tmp_path_factory.mktemp("launched"))
    return root, sh("chemspec", "launch", "--executor", "local", "-j", "4", cwd=root)


def jobs(root: Path) -> list[dict]:
    (run,) = (root / ".chemspec" / "launch").iterdir()
    return json.loads((run / "jobs.json").read_text())


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    return max(sum(start <= t < end for start, end in intervals) for t, _ in intervals)


def test_train_cells_run_four_at_once(launched):
    root, out = launched
    records = {r["stage"]: r for r in jobs(root)}
    assert set(records) == {"tpe@lr3e-3-bs32", "tpe@lr1e-2-bs32", "train@xs-100", "train@xs-200",
                            "train@s-100", "train@s-200"}, out
    train = [(r["start"], r["end"]) for s, r in records.items() if s.startswith("train@")]
    assert most_at_once(train) == 4
    tpe = [(r["start"], r["end"]) for s, r in records.items() if s.startswith("tpe@")]
    assert most_at_once(tpe) == 2
    # The stage commands themselves overlapped, not just jobs waiting on dvc's repo lock: each `ran` is
    # from dvc's "Running stage" to its "Updating lock file", which would be disjoint were the lock held
    # while a command runs.
    assert most_at_once([tuple(r["ran"]) for s, r in records.items() if s.startswith("train@")]) == 4
    for record in records.values():
        assert Path(record["log"]).is_file() and Path(record["log"]).parent.parent == root / ".chemspec" / "launch"


def test_dvc_status_is_clean_and_dvc_lock_complete(launched, serial):
    root, out = launched
    assert ("launch complete: 6 jobs (local, 4 at once), then dvc repro ran fit, archive, dvc status clean") in out
    assert "Data and pipelines are up to date." in sh("dvc", "status", cwd=root)
    stages = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert set(stages) == set(yaml.safe_load((serial / "dvc.lock").read_text())["stages"])
    for tpe in ("results/tiny/tpe/lr1e-2-bs32", "results/tiny/tpe/lr3e-3-bs32"):
        assert sh("git", "check-ignore", tpe, cwd=root).strip() == tpe
    assert sh("git", "check-ignore", ".chemspec/launch/jobs.json", cwd=root).strip() == ".chemspec/launch/jobs.json"


def test_results_equal_a_serial_repro(launched, serial):
    root, _ = launched
    ours, theirs = (json.loads((r / "results" / "tiny" / "fit" / "cells.json").read_text()) for r in (root, serial))
    strip = lambda rows: [{k: v for k, v in row.items() if k not in IGNORED} for row in rows]  # noqa: E731
    assert strip(ours) == strip(theirs)
    assert [c["val_loss"] for c in ours] == [c["val_loss"] for c in theirs]
    # Checkpoints and per-step loss logs are bitwise equal too: same md5 in both dvc.lock files.
    outs = [{o["path"]: o["md5"] for s, st in yaml.safe_load((r / "dvc.lock").read_text())["stages"].items()
             if s.startswith("train@") for o in st["outs"] if not o["path"].endswith("metrics.json")}
            for r in (root, serial)]
    assert len(outs[0]) == 8 and outs[0] == outs[1]


def test_a_second_launch_runs_no_jobs(launched):
    root, _ = launched
    out = sh("chemspec", "launch", "-j", "4", cwd=root)
    assert ("launch complete: no cell was stale, so no job ran (local, 4 at once), then dvc repro had nothing else "
            "to run, dvc status clean") in out
    assert "submitted" not in out
    study = small_study()
    study["fit"] = {"confidence": 0.9}  # the fit and what archives it go stale, no cell does
    write_spec(root / "study.yaml", study)
    sh("chemspec", "compile", "study.yaml", cwd=root)
    out = sh("chemspec", "launch", "-j", "4", cwd=root)
    assert ("launch complete: no cell was stale, so no job ran (local, 4 at once), then dvc repro ran fit, archive, "
            "dvc status clean") in out


FAILING = """
stages:
  split:
    cmd: python cell.py split
    outs:
    - split.txt
  tpe:
    foreach: [a, b, c]
    do:
      cmd: python cell.py ${item}
      deps:
      - split.txt
      outs:
      - ${item}.txt
"""
CELL = "import sys\nsys.exit(f'{sys.argv[1]} fails') if sys.argv[1] == 'a' else open(f'{sys.argv[1]}.txt', 'w').close()\n"


def test_a_failed_local_job_ends_the_launch_and_names_the_cells_it_did_not_start(tmp_path, git_env):
    """One job at a time, the first fails: the launch ends (its loop kept waiting on the cells it would no
    longer submit) and lists them."""
    sh("dvc", "init", "--no-scm", "-q", cwd=tmp_path)
    (tmp_path / "dvc.yaml").write_text(FAILING)
    (tmp_path / "cell.py").write_text(CELL)
    said = []
    with pytest.raises(LaunchError, match=r"1 of 3 jobs failed:\n  tpe@a: ERROR: failed to reproduce 'tpe@a'.*\n"
                                          r"    logs: .*\n2 not started: tpe@b, tpe@c\n"):
        launch(Settings(kind="local", jobs=1, study="tiny"), tmp_path, say=said.append)
    assert any(line.startswith("3 stale tpe cells, 1 at once (executor.jobs, or -j, runs more) (local)")
               for line in said), said
    assert not (tmp_path / "b.txt").exists() and not (tmp_path / "c.txt").exists()


def test_a_dvc_repro_beside_a_running_launch_runs_no_stage_and_names_the_launch(tmp_path):
    """A `dvc repro` started while a launch ran trained the launch's cells too, and the launch's jobs then
    failed on dvc's locks. Stages the launch starts (CHEMSPEC_LAUNCH set) run; any other is refused."""
    import fcntl
    import subprocess

    from chemspec.launch_stop import LAUNCH_ENV
    from tests.conftest import tool_env

    root = project(tmp_path)
    (root / ".chemspec").mkdir(exist_ok=True)
    with open(root / ".chemspec" / "launch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write("pid 4242 on node7, started 2026-12-07 05:00:00")
        lock.flush()
        env = {k: v for k, v in tool_env().items() if k != LAUNCH_ENV}
        stage = ["chemspec", "run", "data", "--params", "params.yaml"]
        refused = subprocess.run(stage, cwd=root, capture_output=True, text=True, env=env)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert ("error: a `chemspec launch` is running this project's cells (pid 4242 on node7, started 2026-12-07 "
                "05:00:00); a `dvc repro` or stage beside it would train the same cells twice") in refused.stderr
        repro = subprocess.run(["dvc", "repro"], cwd=root, capture_output=True, text=True, env=env)
        assert repro.returncode != 0 and "is running this project's cells (pid 4242" in repro.stdout + repro.stderr
        assert not (root / "data").exists() and not (root / "dvc.lock").exists()
        other = subprocess.run(stage, cwd=root, capture_output=True, env={**env, LAUNCH_ENV: "1"})
        assert other.returncode == 2, "a value left in a shell, or another launch's, is not this launch's"
        assert subprocess.run(stage, cwd=root, capture_output=True, env={**env, LAUNCH_ENV: "4242"}).returncode == 0
