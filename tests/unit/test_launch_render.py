"""`chemspec launch` without running cells: the sbatch scripts submitit would submit, the dry-run plan, errors."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
from pathlib import Path
from unittest import mock

import pytest
from lightning.fabric.plugins.environments import SLURMEnvironment
from submitit.core.core import Job
from submitit.core.utils import JobPaths, cloudpickle_dump

from chemspec.errors import Interrupted, LaunchError
from chemspec.launch import _fan_out, _in_number_order, job_command, launch, run_stage_job
from chemspec.launch_jobs import Settings, for_wave, make_executor, sbatch_script, submit_array
from chemspec.launch_stop import LockGuard, guard_lock_files, one_launch, stopped_by_signals
from chemspec.stage_job import stage_environment
from tests.conftest import launch_project, tiny_study, tool_env, write_spec

SLURM = Settings(kind="slurm", jobs=3, study="tiny", partition="gpu", account="chem-lab", gpus_per_job=2,
                 time_min=90, sbatch={"qos": "high", "constraint": "a100"})


def test_sbatch_script_carries_the_slurm_settings_and_the_submitit_command(tmp_path):
    script = sbatch_script(SLURM, tmp_path, count=5)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=chem-lab", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --time=90", "#SBATCH --array=0-4%3", "#SBATCH --job-name=chemspec-tiny",
                 "#SBATCH --qos=high", "#SBATCH --constraint=a100",
                 f"#SBATCH --output={tmp_path}/%A_%a_0_log.out"):
        assert line in lines, f"{line!r} missing from\n{script}"
    command = lines[lines.index("# command") + 2]
    assert command.startswith("srun --unbuffered --output ")
    assert command.endswith(f"{sys.executable} -u -m submitit.core._submit {tmp_path}")


def test_one_job_is_no_array_and_zero_gpus_request_none(tmp_path):
    cpu = Settings(kind="slurm", jobs=4, study="tiny", gpus_per_job=0, time_min=30)
    script = sbatch_script(cpu, tmp_path, count=1)
    assert "--array" not in script and "--gpus" not in script and "--partition" not in script
    assert "#SBATCH --time=30" in script.splitlines()


def test_sample_jobs_ask_for_one_gpu_whatever_the_training_jobs_ask_for(tmp_path):
    lines = sbatch_script(for_wave(SLURM, ("sample",)), tmp_path, count=2).splitlines()
    assert "#SBATCH --gpus-per-node=1" in lines and "#SBATCH --partition=gpu" in lines
    assert for_wave(SLURM, ("train", "calibrate")) is SLURM and for_wave(SLURM, ("tpe",)) is SLURM
    cpu = Settings(kind="slurm", jobs=1, study="tiny", gpus_per_job=0)
    assert for_wave(cpu, ("sample",)).gpus_per_job == 0


def test_the_dry_run_script_is_what_submitit_submits(tmp_path, monkeypatch):
    """A fake srun/sbatch on PATH: submitit writes its real sbatch file, which must equal the rendering."""
    bin_dir, capture = tmp_path / "bin", tmp_path / "submitted.sh"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {capture}\necho "Submitted batch job 4242"\n')
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    folder = tmp_path / "logs"
    stages = ["train@xs-200", "train@xs-400", "train@s-200", "train@s-400"]
    jobs = submit_array(make_executor(SLURM, folder), tmp_path, stages, {})
    assert capture.read_text() == sbatch_script(SLURM, folder, count=len(stages))
    assert [jobs[s].job_id for s in stages] == [f"4242_{i}" for i in range(4)]
    for stage in stages:
        delayed = pickle.loads(jobs[stage].paths.submitted_pickle.read_bytes())
        assert delayed.function is run_stage_job and delayed.args == (str(tmp_path), stage, {})
    assert job_command("train@xs-200")[1:] == ["-m", "dvc", "--wait-for-lock", "repro", "-s", "train@xs-200"]


def test_dry_run_prints_the_plan_with_the_studys_executor_defaults(tmp_path, cli, git_env):
    executor = {"kind": "slurm", "jobs": 2, "slurm": {"partition": "short", "account": "acme", "gpus_per_job": 1,
                                                       "time_min": 45}}
    root = launch_project(tmp_path, executor=executor, **{"training.accelerator": "auto"})  # GPUs where there are
    assert cli("compile", "study.yaml", cwd=root).code == 0
    result = cli("launch", "--dry-run", cwd=root)
    assert result.code == 0, result.err
    out = result.out
    assert "dry run: slurm executor, 2 jobs at once" in out
    assert "wave 1: `dvc repro split`, then 2 cells stale now" in out
    assert "wave 2: `dvc repro select`, then 9 cells stale now" in out
    assert "wave 3" not in out, "a study without generation has no sample wave"
    assert f"job: {sys.executable} -m dvc --wait-for-lock repro -s train@m-800" in out
    for line in ("#SBATCH --partition=short", "#SBATCH --account=acme", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --time=45", "#SBATCH --array=0-8%2", "#SBATCH --array=0-1%2"):
        assert line in out
    assert not (root / ".chemspec").exists(), "a dry run writes nothing"
    assert "note: core.hardlink_lock is not set, so dvc locks this project with flock" in out
    subprocess.run(["dvc", "config", "core.hardlink_lock", "true"], cwd=root, env=tool_env(), check=True)
    for name in ("lock", "rwlock.lock"):  # flock's lock files, which a hardlink lock takes for held locks
        (root / ".dvc" / "tmp" / name).unlink(missing_ok=True)
    assert "core.hardlink_lock" not in cli("launch", "--dry-run", cwd=root).out
    local = cli("launch", "--dry-run", "--executor", "local", "-j", "4", cwd=root)
    assert "dry run: local executor, 4 jobs at once" in local.out and "#SBATCH" not in local.out, local.err
    assert "core.hardlink_lock" not in local.out
    ignored = cli("launch", "--executor", "local", "--sbatch", "qos=high", cwd=root)
    assert ignored.code == 2 and "--sbatch sets options of SLURM jobs, but this launch runs its cells on the " \
                                 "local executor" in ignored.err and "add --executor slurm" in ignored.err
    assert not (root / ".chemspec").exists(), "a refused launch writes nothing"


def test_calibrate_cells_run_beside_the_train_cells_not_before_the_selection(tmp_path, cli, git_env):
    root = launch_project(tmp_path, executor={"kind": "local"}, **{"hpo.tpe.calibrate": True})
    assert cli("compile", "study.yaml", cwd=root).code == 0
    out = cli("launch", "--dry-run", cwd=root).out
    assert "wave 1: `dvc repro split`, then 2 cells stale now" in out
    assert "wave 2: `dvc repro select`, then 11 cells stale now" in out
    assert out.index("job: " + " ".join(job_command("calibrate@lr3e-3-bs32"))) > out.index("wave 2:")


def test_sample_cells_wait_for_the_test_sets_statistics(tmp_path, cli, git_env):
    root = launch_project(tmp_path, executor={"kind": "local"}, generation={"samples": 10})
    assert cli("compile", "study.yaml", cwd=root).code == 0
    out = cli("launch", "--dry-run", cwd=root).out
    assert "wave 3: `dvc repro select reference`, then 9 cells stale now" in out
    assert f"job: {sys.executable} -m dvc --wait-for-lock repro -s sample@m-800" in out


@pytest.mark.parametrize(("training", "gpus"), [({"accelerator": "cpu"}, None),
                                                ({"accelerator": "gpu", "devices": 2}, 2),
                                                ({"accelerator": "auto"}, 1)], ids=["cpu", "ddp", "auto"])
def test_slurm_jobs_ask_for_the_gpus_their_cells_use_by_default(tmp_path, cli, git_env, training, gpus):
    root = launch_project(tmp_path, executor={"kind": "slurm"}, **{f"training.{k}": v for k, v in training.items()})
    assert cli("compile", "study.yaml", cwd=root).code == 0
    out = cli("launch", "--dry-run", cwd=root).out
    assert "#SBATCH --time=60" in out
    assert (f"#SBATCH --gpus-per-node={gpus}" in out) if gpus else ("--gpus-per-node" not in out)


def test_fewer_gpus_per_job_than_devices_is_refused(tmp_path, cli):
    study = tiny_study(**{"training.accelerator": "gpu", "training.devices": 2, "executor.slurm.gpus_per_job": 1})
    write_spec(tmp_path / "study.yaml", study)
    result = cli("validate", "study.yaml", cwd=tmp_path)
    assert result.code == 2 and "executor.slurm.gpus_per_job: 1 is fewer than training.devices (2)" in result.err
    none = tiny_study(**{"training.accelerator": "gpu", "training.devices": 2, "executor.slurm.gpus_per_job": 0})
    write_spec(tmp_path / "study.yaml", none)
    assert cli("validate", "study.yaml", cwd=tmp_path).code == 0, "0 asks for no GPUs (given through --sbatch)"


def test_launch_outside_a_dvc_project_says_what_to_do(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    with pytest.raises(LaunchError, match=r"is not a DVC project \(it has no .dvc folder\); run `git init && dvc "
                                          r"init` there, then `chemspec compile <study.yaml>`"):
        launch(Settings(kind="local", jobs=1, study="tiny"), tmp_path)
    (tmp_path / "dvc.yaml").unlink()
    (tmp_path / ".dvc").mkdir()
    with pytest.raises(LaunchError, match=r"holds no DVC pipeline \(dvc.yaml\); run `chemspec compile "
                                          r"<study.yaml>` there first"):
        launch(Settings(kind="local", jobs=1, study="tiny"), tmp_path)


def test_slurm_without_sbatch_points_to_dry_run(tmp_path, monkeypatch):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(LaunchError, match=r"sbatch and srun are not on PATH.*`--executor local` to run the cells on "
                                          r"this machine \(the study's executor.kind, or --executor, chose slurm\).*"
                                          r"--dry-run"):
        launch(SLURM, tmp_path)
    (tmp_path / "nowhere").mkdir()
    (tmp_path / "nowhere" / "sbatch").write_text("#!/bin/sh\n")
    (tmp_path / "nowhere" / "sbatch").chmod(0o755)
    with pytest.raises(LaunchError, match=r"^srun is not on PATH: run `chemspec launch --executor slurm` on a SLURM "
                                          r"login node"):
        launch(SLURM, tmp_path)  # submitit needs srun too, and said so only after the split had run
    assert not (tmp_path / ".chemspec").exists(), "refused before anything ran"


def test_a_second_launch_in_the_project_is_refused_naming_the_first(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / ".chemspec").mkdir()
    with one_launch(tmp_path / ".chemspec"):
        with pytest.raises(LaunchError, match=rf"another `chemspec launch` is running in this project "
                                              rf"\(pid {os.getpid()} on .*\); wait for it to end, or stop it"):
            launch(Settings(kind="local", jobs=1, study="tiny"), tmp_path)
        with pytest.raises(LaunchError, match=rf"a `chemspec launch` is running in this project \(pid {os.getpid()} "
                                              r"on .*\); while its dvc holds the project's lock, which cells are "
                                              r"stale cannot be read: dry-run when it has ended"):
            launch(Settings(kind="local", jobs=1, study="tiny"), tmp_path, dry_run=True)
    assert not (tmp_path / ".chemspec" / "launch").exists(), "refused before it ran or logged anything"
    assert launch(Settings(kind="local", jobs=1, study="tiny"), tmp_path, dry_run=True).waves == [], "none runs now"


def test_a_launch_starting_while_a_dry_run_looks_at_the_lock_waits_for_the_look(tmp_path):
    """A dry run holds the launch lock shared for a moment; a launch starting in that moment was refused as if
    another launch ran."""
    import fcntl
    import threading

    (tmp_path / "launch.lock").write_text("")
    with open(tmp_path / "launch.lock") as look:
        fcntl.flock(look, fcntl.LOCK_SH)
        threading.Timer(0.3, fcntl.flock, (look, fcntl.LOCK_UN)).start()
        with one_launch(tmp_path):
            assert f"pid {os.getpid()}" in (tmp_path / "launch.lock").read_text()


def test_stale_cells_are_listed_with_their_sizes_in_number_order():
    names = ["train@m0-12800", "train@m0-200", "train@m10-200", "train@m2-3200"]
    assert sorted(names, key=_in_number_order) == ["train@m0-200", "train@m0-12800", "train@m2-3200",
                                                   "train@m10-200"]


def test_launch_without_params_asks_to_compile(tmp_path, cli):
    result = cli("launch", "--dry-run", cwd=tmp_path)
    assert result.code == 1 and "chemspec compile" in result.err


def test_a_dvc_yaml_edited_by_hand_is_named_so(tmp_path, cli, git_env):
    """It was blamed on a change of the study or of chemspec, though neither had changed."""
    root = launch_project(tmp_path, executor={"kind": "slurm"})
    assert cli("compile", "study.yaml", cwd=root).code == 0
    pipeline = root / "dvc.yaml"
    pipeline.write_text(pipeline.read_text().replace("--params params.yaml", "--params  params.yaml"))
    result = cli("launch", "--dry-run", cwd=root)
    assert result.code == 2 and ("dvc.yaml is not what study.yaml compiles to, though params.yaml is: edited by hand "
                                 "since compile wrote it (or written by another chemspec version); launch runs the "
                                 "pipeline as last compiled") in result.err, result.err


def test_a_launch_after_the_study_was_edited_but_not_compiled_is_refused(tmp_path, cli, git_env):
    """launch runs dvc.yaml and params.yaml as last compiled: a partition edited in the study, not compiled, was
    ignored without a word, and so were edited cells."""
    executor = {"kind": "slurm", "slurm": {"partition": "short"}}
    root = launch_project(tmp_path, executor=executor)
    assert cli("compile", "study.yaml", cwd=root).code == 0
    assert cli("launch", "--dry-run", cwd=root).code == 0
    write_spec(root / "study.yaml", tiny_study(executor={"kind": "slurm", "slurm": {"partition": "long"}}))
    for args in (("--dry-run",), ("--executor", "local")):
        result = cli("launch", *args, cwd=root)
        assert result.code == 2 and "Traceback" not in result.err, result.err
        assert ("study.yaml compiles to other files now (params.yaml would differ: the study or chemspec changed "
                "since the last compile, or params.yaml was edited by hand); launch runs the pipeline as last "
                "compiled, executor section included: run `chemspec compile study.yaml` first"
                in result.err), result.err
    assert not (root / ".chemspec").exists() and not (root / "data").exists(), "nothing ran"
    (root / "study.yaml").write_text("study: [\n")
    result = cli("launch", "--dry-run", cwd=root)
    assert result.code == 2 and "study.yaml, which params.yaml was compiled from, does not validate now (the " \
                                "study, its data or chemspec changed since); launch runs the pipeline as last " \
                                "compiled, executor section included: run `chemspec compile study.yaml` first\n" \
                                in result.err, result.err
    write_spec(root / "study.yaml", tiny_study(executor={"kind": "slurm", "slurm": {"partition": "long"}}))
    assert cli("compile", "study.yaml", cwd=root).code == 0
    result = cli("launch", "--dry-run", cwd=root)
    assert result.code == 0 and "#SBATCH --partition=long" in result.out, result.err
    (root / "study.yaml").unlink()  # a study file moved away: the pipeline as compiled is all there is to run
    assert cli("launch", "--dry-run", cwd=root).code == 0
    (root / "notes").mkdir()
    below = cli("launch", "--dry-run", cwd=root / "notes")
    assert below.code == 1 and ("params.yaml not found; run `chemspec compile <study.yaml>` first, or, to use the "
                                "project at .. that this folder lies in, run from there or give --params "
                                "../params.yaml") in below.err, below.err


def test_a_jobs_dvc_runs_without_slurms_task_count_so_ddp_starts_its_own_ranks():
    """What the reviewer saw: with these variables Lightning takes the stage for SLURM's single task."""
    task = {"SLURM_NTASKS": "1", "SLURM_NPROCS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
            "SLURM_NODELIST": "localhost", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "chemspec-tiny", "HOME": "/h"}
    environment = stage_environment({"CUDA_VISIBLE_DEVICES": "0,1", "HOME": None}, base=task)
    assert environment == {"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODELIST": "localhost",
                           "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "chemspec-tiny", "PYTHONUNBUFFERED": "1",
                           "CUDA_VISIBLE_DEVICES": "0,1", "PATH": os.path.dirname(sys.executable)}
    with mock.patch.dict(os.environ, task, clear=True):
        assert SLURMEnvironment.detect()
    with mock.patch.dict(os.environ, environment, clear=True):
        assert not SLURMEnvironment.detect()


def test_a_jobs_dvc_finds_chemspec_without_the_launchers_path():
    """sbatch --export=NONE gives a job the login shell's PATH, on which dvc found no `chemspec` for the stages."""
    scripts = os.path.dirname(sys.executable)
    assert stage_environment({}, base={"PATH": "/usr/bin:/bin"})["PATH"] == f"{scripts}{os.pathsep}/usr/bin:/bin"
    ours = f"/usr/bin{os.pathsep}{scripts}"
    assert stage_environment({}, base={"PATH": ours})["PATH"] == ours, "an order the user chose stays"


FAKE_SACCT = """#!{python}
import json, sys
states = json.load(open({states!r}))
print("JobID|State|NodeList")
for job, state in states.items():
    print(f"{{job}}|{{state}}|node1")
"""
FAKE_SCANCEL = """#!{python}
import json, sys
with open({calls!r}, "a") as calls:
    calls.write(json.dumps(sys.argv[1:]) + "\\n")
states = json.load(open({states!r}))
assert sys.argv[1:] == ["--state=PENDING", "5151"], sys.argv
if {fails}:
    sys.exit("scancel: error: Access/permission denied")
json.dump({{job: "CANCELLED by 1000" if state == "PENDING" else state for job, state in states.items()}},
          open({states!r}, "w"))
"""


@pytest.mark.parametrize("refused", [False, True])
def test_a_failed_slurm_job_cancels_the_arrays_pending_tasks_and_the_running_ones_end(tmp_path, monkeypatch,
                                                                                      refused):
    """Fake sbatch, sacct and scancel: task 0 failed, 1 runs, 2 and 3 wait; the launch cancels 2 and 3
    (by state, so a task that has just started runs on) and waits for 1. A scancel that fails is tried once.
    submitit's grace for a result file on a slow shared filesystem (15 s a job) is not waited out here."""
    monkeypatch.setattr(Job, "_results_timeout_s", 0)
    bin_dir, folder, states, calls = tmp_path / "bin", tmp_path / "logs", tmp_path / "states.json", tmp_path / "calls"
    bin_dir.mkdir()
    states.write_text(json.dumps({"5151_0": "FAILED", "5151_1": "RUNNING", "5151_2": "PENDING", "5151_3": "PENDING"}))
    tools = {"srun": "#!/bin/sh\nexit 0\n", "sbatch": '#!/bin/sh\necho "Submitted batch job 5151"\n',
             "sacct": FAKE_SACCT.format(python=sys.executable, states=str(states)),
             "scancel": FAKE_SCANCEL.format(python=sys.executable, states=str(states), calls=str(calls),
                                            fails=refused)}
    for name, text in tools.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    folder.mkdir()
    cloudpickle_dump(("error", "Traceback ...\nRuntimeError: `dvc repro -s train@a` exited 1"),
                     JobPaths(folder, "5151_0", 0).result_pickle)
    settings = Settings(kind="slurm", jobs=2, study="tiny", time_min=5)
    said, outcomes = [], []
    fan_out = threading.Thread(target=lambda: outcomes.append(
        _fan_out(settings, folder, tmp_path, ["train@a", "train@b", "train@c", "train@d"], said.append)))
    fan_out.start()
    try:
        for _ in range(600):
            if calls.exists() or not fan_out.is_alive():
                break
            threading.Event().wait(0.1)
        assert calls.read_text().splitlines() == ['["--state=PENDING", "5151"]'], said
        assert fan_out.is_alive(), "the launch waits for the running task"
        threading.Event().wait(2.0)  # four rounds of the launch's loop
        record = {"stage": "train@b", "start": 1.0, "end": 3.0, "ran": None, "host": "node1"}
        cloudpickle_dump(("success", record), JobPaths(folder, "5151_1", 0).result_pickle)
        done = {"5151_1": "COMPLETED", **({"5151_2": "CANCELLED", "5151_3": "CANCELLED"} if refused else {})}
        states.write_text(json.dumps({**json.loads(states.read_text()), **done}))
    finally:
        fan_out.join(timeout=120)
    assert len(calls.read_text().splitlines()) == 1
    if refused:
        assert sum("could not cancel the array's pending tasks" in line for line in said) == 1
        return
    (outcome,) = outcomes
    assert [r["stage"] for r in outcome.records] == ["train@b"]
    assert len(outcome.failures) == 1 and outcome.failures[0].startswith("train@a: RuntimeError: `dvc repro")
    assert sorted(outcome.not_started) == ["train@c", "train@d"]
    assert any("cancelled the array's pending tasks (`scancel --state=PENDING 5151`)" in line for line in said)


def test_a_dvc_lock_cut_short_during_a_wave_is_put_back(tmp_path):
    lock = tmp_path / "dvc.lock"
    size = tmp_path / "pipelines" / "s" / "dvc.lock"
    size.parent.mkdir(parents=True)
    before = "schema: '2.0'\nstages:\n  split:\n    cmd: chemspec run split\n"
    lock.write_text(before)
    size.write_text(before.replace("split", "train@s-200"))
    said = []
    with guard_lock_files(tmp_path, said.append):
        lock.write_text(before + "  tpe@a:\n    cmd: chemspec run tpe --cell a\n")  # a job recorded its cell
        size.write_text("schema: '2.0'\nstages:\n  train@s-200:\n    cmd: [chemspec")  # a job killed mid-write
    assert "tpe@a" in lock.read_text(), "a dvc.lock that grew stays"
    assert size.read_text() == before.replace("split", "train@s-200")
    assert said == [f"  {Path('pipelines/s/dvc.lock')} was left cut short (a job was killed while dvc wrote it); "
                    "put back as it was before this wave: cells that finished since run again, or come from the "
                    "run cache"]
    said.clear()
    with guard_lock_files(tmp_path, said.append):
        size.write_text("schema: '2.0'\n")  # cut at a line's end: it parses, but its stage is gone
    assert "train@s-200" in size.read_text() and len(said) == 1


def test_a_dvc_lock_cut_short_is_put_back_as_last_seen_whole_keeping_the_cells_that_finished_before(tmp_path):
    lock = tmp_path / "dvc.lock"
    before = "schema: '2.0'\nstages:\n  split:\n    cmd: chemspec run split\n"
    lock.write_text(before)
    one = before + "  train@a:\n    cmd: chemspec run train --cell a\n"
    said = []
    with pytest.raises(KeyboardInterrupt, match="the launcher's Ctrl-C"):
        with guard_lock_files(tmp_path, said.append) as guard:
            lock.write_text(one)  # job a recorded its cell and ended
            guard.seen()
            lock.write_text("schema: '2.0'\nstages:\n  split:\n")  # job b killed while its dvc wrote
            guard.seen()  # a copy that lost a stage is not taken
            raise KeyboardInterrupt("the launcher's Ctrl-C")
    assert lock.read_text() == one, "job a's record survives the put-back"
    assert said == ["  dvc.lock was left cut short (a job was killed while dvc wrote it); put back as it was when the "
                    "launch last saw it whole: cells that finished since run again, or come from the run cache"]


def test_a_dvc_lock_that_changes_while_it_is_read_is_not_taken_as_whole(tmp_path, monkeypatch):
    """A dvc rewriting the file as the launcher reads it: the copy read may be cut inside its last entry
    and still parse, so a copy is taken only if a second read, a moment later, finds the same bytes."""
    lock = tmp_path / "dvc.lock"
    before = "schema: '2.0'\nstages:\n  split:\n    cmd: chemspec run split\n"
    lock.write_text(before)
    monkeypatch.setattr(LockGuard, "SETTLE_S", 0.5)
    with pytest.raises(KeyboardInterrupt, match="the launcher's Ctrl-C"):
        with guard_lock_files(tmp_path, lambda _: None) as guard:
            lock.write_text(before + "  train@a:\n    cmd: chemspec run tr")  # parses, yet cut short
            rewrite = threading.Timer(0.1, lock.write_text, [before + "  train@a:\n    outs: [x]\n"])
            rewrite.start()
            guard.seen()
            rewrite.join()
            lock.write_text("schema: '2.0'\n")  # then a killed write
            raise KeyboardInterrupt("the launcher's Ctrl-C")
    assert lock.read_text() == before, "neither changing copy was taken"


def test_a_dvc_lock_first_written_in_a_wave_and_cut_short_is_removed(tmp_path):
    written, grown = tmp_path / "pipelines" / "m" / "dvc.lock", tmp_path / "pipelines" / "s" / "dvc.lock"
    said = []
    with guard_lock_files(tmp_path, said.append):
        for path in (written, grown):
            path.parent.mkdir(parents=True)
        written.write_text("schema: '2.0'\nstages:\n  train@m-200:\n    cmd: [chemspec")  # killed mid-write
        grown.write_text("schema: '2.0'\nstages:\n  train@s-200:\n    cmd: chemspec run train\n")
    assert not written.exists() and grown.is_file()
    assert said == [f"  {Path('pipelines/m/dvc.lock')}, first written in this wave, was left cut short (a job was "
                    "killed while dvc wrote it); removed: the wave's cells recorded there run again, or come from "
                    "the run cache"]


def test_sigterm_stops_a_launch_in_the_main_thread_and_a_launch_in_another_thread_leaves_signals_alone():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match=r"launch stopped by SIGTERM: its running jobs were cancelled"):
        with stopped_by_signals():
            signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before
    outcomes = []

    def in_a_thread() -> None:
        with stopped_by_signals():
            outcomes.append(signal.getsignal(signal.SIGTERM) is before)

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert outcomes == [True], "only the main thread may set handlers; another one sets none and fails not"


def test_local_jobs_wait_passively_unless_the_caller_chose_and_keep_the_callers_gpus():
    from chemspec.launch_jobs import local_environment

    assert local_environment(2, {"CUDA_VISIBLE_DEVICES": "1"}) == {"CUDA_VISIBLE_DEVICES": "1",
                                                                    "OMP_WAIT_POLICY": "PASSIVE"}
    assert local_environment(2, {})["CUDA_VISIBLE_DEVICES"] is None, "unset stays unset in the job"
    assert local_environment(2, {"OMP_WAIT_POLICY": "ACTIVE"})["OMP_WAIT_POLICY"] == "ACTIVE"
    assert local_environment(1, {}) == {"CUDA_VISIBLE_DEVICES": None}, "one job shares its cores with none"


def test_a_failed_jobs_reason_keeps_the_processes_that_held_its_outputs(tmp_path):
    """dvc names who holds a busy output on the lines under its ERROR; the summary ended at "blocked by:"."""
    from types import SimpleNamespace

    from chemspec.launch_jobs import job_reason

    log = tmp_path / "job.err"
    log.write_text("Running stage 'train@xs-2000':\nERROR: failed to reproduce 'train@xs-2000': '/p/results/x/train/"
                   "xs-2000/metrics.json' is busy, it is being blocked by:\n  (PID 743): dvc repro\n\nIf there are no "
                   "processes with such PIDs, you can manually remove '.dvc/tmp/rwlock' and try again.\n")
    reason = job_reason(SimpleNamespace(paths=SimpleNamespace(stderr=log)), RuntimeError("job failed"))
    assert reason == ("ERROR: failed to reproduce 'train@xs-2000': '/p/results/x/train/xs-2000/metrics.json' is busy, "
                      "it is being blocked by: (PID 743): dvc repro (another dvc held this stage's outputs: rerun "
                      "`chemspec launch` once it has ended)")
    log.write_text("ERROR: failed to reproduce 'tpe@a': exited with 1\nsomething else\n  indented later\n")
    assert job_reason(SimpleNamespace(paths=SimpleNamespace(stderr=log)), RuntimeError("x")).endswith("exited with 1")


def test_a_failed_jobs_reason_is_the_stages_own_error_where_it_gave_one(tmp_path):
    """The summary gave dvc's "failed to reproduce ... exited with 1" and hid the stage's message in the log."""
    from types import SimpleNamespace

    from chemspec.launch_jobs import job_reason

    log = tmp_path / "job.err"
    own = ("error: train@xs-500: stopped by SIGTERM; checkpoint saved in results/tiny/.resume/train-xs-500; re-run "
           "`chemspec launch` to resume from it")
    log.write_text(f"{own}\nERROR: failed to reproduce 'train@xs-500': failed to run: chemspec run train, exited "
                   "with 1\n")
    assert job_reason(SimpleNamespace(paths=SimpleNamespace(stderr=log)), RuntimeError("x")) == own


def test_a_cell_stopped_under_a_launch_is_resumed_by_the_launch_not_by_dvc_repro(monkeypatch):
    """Inside a launch's job the stage told to re-run `dvc repro`, which a running launch refuses."""
    from types import SimpleNamespace

    from chemspec.launch_stop import LAUNCH_ENV
    from chemspec.runtime.train import stopped

    monkeypatch.delenv(LAUNCH_ENV, raising=False)
    by_term = SimpleNamespace(stopped_by="SIGTERM")
    assert str(stopped(by_term, "c: stopped")) == "c: stopped; re-run `dvc repro` to resume from it"
    monkeypatch.setenv(LAUNCH_ENV, "4242")
    assert str(stopped(by_term, "c: stopped")) == "c: stopped; re-run `chemspec launch` to resume from it"


def test_slurm_jobs_are_cancelled_by_one_scancel_of_their_arrays_which_is_named(tmp_path, monkeypatch):
    """Each task had its own scancel, waited for in turn: minutes on a grid of hundreds, broken off by a second
    Ctrl-C, and nothing said of what was cancelled."""
    from types import SimpleNamespace

    from chemspec.launch_stop import cancel_jobs

    calls = tmp_path / "calls"
    (tmp_path / "scancel").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (tmp_path / "scancel").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    said = []
    cancel_jobs("slurm", [SimpleNamespace(job_id=f"5151_{i}") for i in range(300)], said.append)
    assert calls.read_text() == "5151\n" and said == ["  cancelled the running jobs (`scancel 5151`)"]
    (tmp_path / "scancel").write_text('#!/bin/sh\necho "scancel: error: Access/permission denied" >&2; exit 1\n')
    cancel_jobs("slurm", [SimpleNamespace(job_id="77_0")], said.append)
    assert said[-1] == ("  could not cancel the running jobs (`scancel 77`: scancel: error: Access/permission "
                        "denied); cancel them yourself")


FAKE_SQUEUE = """#!/bin/sh
echo "$@" >> {calls}
{body}
"""


def test_a_launch_is_refused_while_an_earlier_launchs_slurm_array_still_runs(tmp_path, monkeypatch):
    """A launcher killed outright leaves its array running; DVC's lock entries of those jobs hold pids of other
    nodes, which the next dvc takes for dead, so a new launch trained the same cells a second time."""
    from chemspec.errors import LaunchError
    from chemspec.launch import LOGS, launch
    from chemspec.launch_jobs import ARRAYS, live_arrays

    calls, bin_dir = tmp_path / "calls", tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    root = tmp_path / "p"
    (root / ".dvc").mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / LOGS.parent).mkdir(parents=True)
    (root / LOGS.parent / ARRAYS).write_text("5151\n6000\n")

    def squeue(body: str) -> None:
        (bin_dir / "squeue").write_text(FAKE_SQUEUE.format(calls=calls, body=body))
        (bin_dir / "squeue").chmod(0o755)

    squeue("printf '5151\\n5151\\n'")
    with pytest.raises(LaunchError, match=r"jobs of an earlier launch in this project still run or wait on SLURM "
                                          r"\(array 5151 \(2 tasks\)\), though their launcher has ended; .* `scancel "
                                          r"5151`, then rerun"):
        launch(Settings(kind="local", jobs=1, study="tiny"), root)
    assert calls.read_text() == ("--noheader --array --format=%F --states=PENDING,RUNNING,SUSPENDED,CONFIGURING,"
                                 "REQUEUED,REQUEUE_HOLD,RESIZING --jobs=5151,6000\n")
    assert (root / LOGS.parent / ARRAYS).read_text() == "5151\n", "ended arrays are forgotten"
    squeue('echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1')
    assert live_arrays(root / LOGS.parent) == {} and (root / LOGS.parent / ARRAYS).read_text() == ""
    (bin_dir / "squeue").unlink()
    (root / LOGS.parent / ARRAYS).write_text("7000\n")
    assert live_arrays(root / LOGS.parent) == {}, "no squeue here: nothing to check"


@pytest.mark.parametrize("state,stopped", [("TIMEOUT", True), ("PREEMPTED", True), ("FAILED", False)])
def test_a_job_slurm_killed_before_it_returned_is_stopped_not_failed(tmp_path, monkeypatch, state, stopped):
    """Killed past KillWait (or preempted without grace), a job leaves no result: it was reported FAILED, though
    the next launch resumes its cell as it does one stopped by a signal."""
    monkeypatch.setattr(Job, "_results_timeout_s", 0)
    bin_dir, folder, states = tmp_path / "bin", tmp_path / "logs", tmp_path / "states.json"
    bin_dir.mkdir()
    folder.mkdir()
    job = {"TIMEOUT": "5152", "PREEMPTED": "5153", "FAILED": "5154"}[state]  # submitit caches states by job id
    states.write_text(json.dumps({job: state}))
    tools = {"srun": "#!/bin/sh\nexit 0\n", "sbatch": f'#!/bin/sh\necho "Submitted batch job {job}"\n',
             "sacct": FAKE_SACCT.format(python=sys.executable, states=str(states))}
    for name, text in tools.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    outcome = _fan_out(Settings(kind="slurm", jobs=1, study="tiny", time_min=5), folder, tmp_path, ["train@a"],
                       lambda _: None)
    assert outcome.stopped == ({"train@a": state} if stopped else {})
    assert len(outcome.failures) == (0 if stopped else 1)
