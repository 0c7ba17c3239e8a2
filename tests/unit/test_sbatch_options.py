"""sbatch options of `chemspec launch`: the rules they follow from the study (executor.slurm.sbatch) and from
--sbatch, how they reach the job scripts, and sbatch --test-only before anything runs."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml

from chemspec.errors import UsageError
from chemspec.launch import launch
from chemspec.launch_jobs import SRUN_CPUS, Settings, for_wave, sbatch_script
from chemspec.specs.sbatch import check_sbatch
from tests.conftest import launch_project, tiny_study, write_spec


def test_a_job_script_sbatch_refuses_stops_the_launch_before_any_stage_runs(tmp_path, cli, git_env, monkeypatch):
    """A bad partition once surfaced only after data and split had run on the login node."""
    bin_dir, asked = tmp_path / "bin", tmp_path / "asked.txt"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho "$@" >> {asked}\ngrep -q "partition=gpu" "$2" && {{ echo '
                                    '"sbatch: error: invalid partition specified: gpu" >&2; exit 1; }\n'
                                    'echo "sbatch: Job 7 to start at 2026-12-06T14:00:00"\n')
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "project").mkdir()
    root = launch_project(tmp_path / "project", executor={"kind": "slurm", "slurm": {"partition": "gpu"}})
    assert cli("compile", "study.yaml", cwd=root).code == 0
    result = cli("launch", cwd=root)
    assert result.code == 1 and "Traceback" not in result.err, result.err
    assert "sbatch --test-only refused the script of the tpe jobs" in result.err
    assert "so nothing ran: sbatch: error: invalid partition specified: gpu\ncheck executor.slurm (partition" \
           in result.err, result.err
    assert result.err.count("invalid partition specified") == 1, "sbatch's words once"
    assert not (root / "data").exists(), "the data stage did not run"
    assert all(line.startswith("--test-only ") for line in asked.read_text().splitlines()), "nothing was queued"
    tpe = len(yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["tpe"]["foreach"])
    assert tpe > 1 and f"#SBATCH --array=0-{tpe - 1}%" in next(root.glob(".chemspec/launch/*/test-only-tpe.sh")
                                                               ).read_text(), "the wave's whole array is checked"


def test_bad_sbatch_options_are_refused(tmp_path, cli):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    bad = Settings(kind="slurm", jobs=1, study="tiny", sbatch={"--qos": "high"})
    with pytest.raises(UsageError, match=r"not sbatch long options; write them as e.g. qos=high"):
        launch(bad, tmp_path, dry_run=True)
    result = cli("launch", "--sbatch", "=high", cwd=tmp_path)
    assert result.code == 2 and "write KEY=VALUE" in result.err
    smuggled = Settings(kind="slurm", jobs=1, study="tiny", sbatch={"qos": "high\nrm -rf /tmp/x"})
    with pytest.raises(UsageError, match=r"values of \['qos'\] hold a line break"):
        launch(smuggled, tmp_path, dry_run=True)
    for time in ("abc", "1:2:3:4", "2-", "90m", True):
        untimed = Settings(kind="slurm", jobs=1, study="tiny", sbatch={"time": time})
        with pytest.raises(UsageError, match=rf"--sbatch time={'' if time is True else time} is not a SLURM time "
                                             r"\(minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS\); fix it, or "
                                             r"set executor.slurm.time_min in the study"):
            launch(untimed, tmp_path, dry_run=True)
    for time in ("120", "30:00", "1:30:00", "2-12", "2-12:30", "2-12:30:00", "UNLIMITED"):
        check_sbatch({"time": time})


def test_gpus_asked_for_twice_are_refused_and_a_gres_alone_is_taken(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    twice = Settings(kind="slurm", jobs=1, study="tiny", gpus_per_job=2, sbatch={"gres": "gpu:a100:4"})
    with pytest.raises(UsageError, match=r"--sbatch gres=gpu:a100:4 asks for GPUs beside the 2 that "
                                          r"executor.slurm.gpus_per_job \(or training.devices\) asks for"):
        launch(twice, tmp_path, dry_run=True)
    check_sbatch({"gres": "gpu:a100:4"}, gpus_per_job=0)
    check_sbatch({"gres": "nvme:1"}, gpus_per_job=2)


def test_sbatch_options_replace_submitits_own_and_bare_keys_are_flags(tmp_path):
    """submitit writes its own keys with underscores; a user's hyphenated key must replace its line."""
    mine = Settings(kind="slurm", jobs=2, study="tiny", gpus_per_job=2, time_min=90,
                    sbatch={"gpus-per-node": "4", "job-name": "mine", "time": "120", "exclusive": True})
    lines = sbatch_script(mine, tmp_path, count=3).splitlines()
    for option, value in (("gpus-per-node", "4"), ("job-name", "mine"), ("time", "120")):
        assert [line for line in lines if line.startswith(f"#SBATCH --{option}=")] == [f"#SBATCH --{option}={value}"]
    assert "#SBATCH --exclusive" in lines and "#SBATCH --no-requeue" in lines


def test_job_scripts_run_the_setup_lines_and_give_srun_the_jobs_cpus(tmp_path):
    """Since SLURM 22.05 srun does not pass the job's --cpus-per-task on: the cell and its loaders got one CPU."""
    setup = ("module load cuda/12.4", "source ~/venvs/chem/bin/activate")
    script = sbatch_script(Settings(kind="slurm", jobs=1, study="tiny", setup=setup), tmp_path, count=2)
    lines = script.splitlines()
    cpus = lines.index(SRUN_CPUS)
    assert lines[cpus + 1:cpus + 3] == list(setup) and cpus < lines.index("export SUBMITIT_EXECUTOR=slurm")
    done = subprocess.run(["bash", "-c", f"{SRUN_CPUS}; echo \"${{SRUN_CPUS_PER_TASK-unset}}\""], text=True,
                          capture_output=True, env={"SLURM_CPUS_PER_TASK": "8"})
    assert done.stdout == "8\n"
    done = subprocess.run(["bash", "-c", f"{SRUN_CPUS}; echo \"${{SRUN_CPUS_PER_TASK-unset}}\""], text=True,
                          capture_output=True, env={})
    assert done.stdout == "unset\n", "no empty count where the job asked for no CPUs"


def test_bare_sbatch_keys_reach_the_launch_as_flags(tmp_path, cli, git_env):
    root = launch_project(tmp_path, executor={"kind": "slurm"})
    assert cli("compile", "study.yaml", cwd=root).code == 0
    result = cli("launch", "--dry-run", "--sbatch", "exclusive", "--sbatch", "qos=high", cwd=root)
    assert result.code == 0, result.err
    assert "#SBATCH --exclusive" in result.out and "#SBATCH --qos=high" in result.out


def test_sbatch_options_of_the_study_reach_every_job_and_the_command_line_replaces_them(tmp_path, cli, git_env):
    """Options every launch needs (qos, memory, CPUs) live in the study, not in flags repeated at each launch."""
    slurm = {"partition": "gpu", "sbatch": {"qos": "high", "cpus-per-task": 8, "mem": "64G", "exclusive": True},
             "setup": ["module load cuda/12.4"]}
    root = launch_project(tmp_path, executor={"kind": "slurm", "slurm": slurm})
    assert cli("compile", "study.yaml", cwd=root).code == 0
    result = cli("launch", "--dry-run", "--sbatch", "qos=low", cwd=root)
    assert result.code == 0, result.err
    for line in ("#SBATCH --qos=low", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64G", "#SBATCH --exclusive",
                 "module load cuda/12.4"):
        assert line in result.out, result.out
    assert "#SBATCH --qos=high" not in result.out
    assert "sbatch" in (root / "params.yaml").read_text()
    gres = {"kind": "slurm", "slurm": {"gpus_per_job": 1, "sbatch": {"gres": "gpu:1"}}}
    write_spec(root / "study.yaml", tiny_study(executor=gres))
    result = cli("compile", "study.yaml", cwd=root)
    assert result.code == 2 and "executor.slurm.sbatch.gres: gpu:1 asks for GPUs beside the 1 that " in result.err
    twice = {"kind": "slurm", "slurm": {"partition": "short", "sbatch": {"partition": "long"}}}
    write_spec(root / "study.yaml", tiny_study(executor=twice))
    result = cli("compile", "study.yaml", cwd=root)
    assert result.code == 2 and ("executor.slurm.sbatch.partition: set it as executor.slurm.partition, which the "
                                 "study has a key for") in result.err, result.err
    write_spec(root / "study.yaml", tiny_study(executor={"kind": "slurm"}))
    assert cli("compile", "study.yaml", cwd=root).code == 0
    params = (root / "params.yaml").read_text()
    assert "sbatch" not in params and "setup" not in params, "params files without options read as before"


@pytest.mark.parametrize(("options", "message"), [
    ({"array": "0-3"}, r"executor\.slurm\.sbatch\.array: chemspec launch sets --array of every job itself"),
    ({"mem": ""}, r"executor\.slurm\.sbatch: sbatch options \['mem'\] have an empty value, which sbatch refuses: "
                  r"write executor\.slurm\.sbatch\.mem: VALUE"),
    ({"requeue": False}, r"executor\.slurm\.sbatch\.requeue: false is no value sbatch takes; give a flag as `true`"),
    ({"time-min": "1:00:00:00"}, r"executor\.slurm\.sbatch\.time-min: 1:00:00:00 is not a SLURM time"),
    ({"gres": True}, r"executor\.slurm\.sbatch\.gres: needs a value, .*write executor\.slurm\.sbatch\.gres: VALUE"),
], ids=["managed", "empty", "false", "time", "valued-flag"])
def test_sbatch_options_of_the_study_are_checked_at_validate_naming_their_key(tmp_path, cli, options, message):
    spec = write_spec(tmp_path / "study.yaml", tiny_study(executor={"kind": "slurm", "slurm": {"sbatch": options}}))
    result = cli("validate", str(spec))
    assert result.code == 2 and "Traceback" not in result.err, result.err
    assert re.search(r"study\.yaml:\d+:\d+: " + message, result.err), result.err


@pytest.mark.parametrize(("options", "message"), [
    ({"array": "0-3"}, r"--sbatch array: chemspec launch sets --array of every job itself \(one array task per"),
    ({"output": "x.log"}, r"--sbatch output: chemspec launch sets --output .*\(each job's log"),
    ({"open-mode": "truncate"}, r"--sbatch open-mode: chemspec launch sets"),
    ({"signal": "USR1@60"}, r"--sbatch signal: chemspec launch sets --signal .*SIGUSR2 90 s before"),
    ({"ntasks-per-node": "2"}, r"--sbatch ntasks-per-node: .*a cell's DDP ranks start inside it"),
    ({"exclusive": ""}, r"options \['exclusive'\] have an empty value, which sbatch refuses: .*--sbatch exclusive\)"),
    ({"requeue": True},
     r"--sbatch requeue: chemspec launch sets --no-requeue of every job itself \(a stopped cell's job ends"),
    ({"gpus": "4"}, r"--sbatch gpus=4 asks for GPUs beside the 1 that executor.slurm.gpus_per_job .*drop gpus"),
    ({"gpus-per-task": "1"}, r"--sbatch gpus-per-task=1 asks for GPUs beside the 1 .*drop gpus-per-task, or set"),
    ({"gres": True}, r"--sbatch gres needs a value, which sbatch would refuse to go without: write "
                     r"--sbatch gres=VALUE"),
    ({"cpus-per-task": "-3"}, r"--sbatch cpus-per-task=-3 is not a count of CPUs; give a whole number above 0"),
    ({"ntasks-per-gpu": "1"}, r"--sbatch ntasks-per-gpu: chemspec launch sets --ntasks-per-gpu .*DDP ranks start"),
    ({"test-only": True}, r"--sbatch test-only: chemspec launch sets --test-only of every job itself \(sbatch "),
    ({"hold": True}, r"--sbatch hold: .*a held array would keep the launch waiting"),
    ({"time": "1:30"}, r"--sbatch time=1:30 reads in sbatch as 1 min 30 s, not 1 h 30 min; write 01:30:00 for 1 h "
                       r"30 min, or 00:01:30 for what sbatch reads"),
    ({"gpus-per-node": "two"}, r"--sbatch gpus-per-node=two is not a GPU count \(\[type:\]count, as a100:2\)"),
], ids=["array", "output", "open-mode", "signal", "ntasks", "empty", "requeue", "gpus", "gpus-per-task", "valued-flag",
         "cpus", "ntasks-per-gpu", "test-only", "hold", "time-mm-ss", "gpus-per-node"])
def test_sbatch_options_launch_manages_or_that_sbatch_refuses_are_refused(tmp_path, options, message):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    with pytest.raises(UsageError, match=message):
        launch(Settings(kind="slurm", jobs=1, study="tiny", gpus_per_job=1, sbatch=options), tmp_path, dry_run=True)


def test_gpus_asked_for_cells_that_run_on_the_cpu_are_refused_at_validate(tmp_path, cli):
    executor = {"kind": "slurm", "slurm": {"gpus_per_job": 2}}
    spec = write_spec(tmp_path / "study.yaml", tiny_study(executor=executor))  # tiny_study trains on the CPU
    result = cli("validate", str(spec))
    assert result.code == 2 and ("executor.slurm.gpus_per_job: 2 GPUs a job for cells that run on the CPU "
                                 "(training.accelerator: cpu), which would hold them idle") in result.err, result.err
    executor["slurm"]["gpus_per_job"] = 0
    assert cli("validate", str(write_spec(tmp_path / "study.yaml", tiny_study(executor=executor)))).code == 0


@pytest.mark.parametrize(("slurm", "message"), [
    ({"time_min": "02:00:00"}, r"executor\.slurm\.time_min: counts minutes; write 120 for '02:00:00'"),
    ({"time_min": "1-12"}, r"executor\.slurm\.time_min: counts minutes; write 2160 for '1-12'"),
    ({"setup": ["module load cuda", ""]},
     r"executor\.slurm\.setup\.1: '' is no shell line; give a list of commands, one an entry"),
    ({"setup": ["module load cuda\nsource x"]},
     r"executor\.slurm\.setup\.0: 'module load cuda\\nsource x' is no shell line"),
    ({"sbatch": {"gpus": 2}}, r"executor\.slurm\.sbatch\.gpus: 2 asks for GPUs beside the 2 that "),
    ({"stage_time_min": {"tpe": "0:30:00"}}, r"executor\.slurm\.stage_time_min\.tpe: counts minutes; write 30 for"),
    ({"stage_time_min": "02:00:00"}, r"executor\.slurm\.stage_time_min: should be a section of keys"),
], ids=["hh:mm:ss", "days", "empty-line", "two-lines", "gpus", "stage", "stage-not-a-mapping"])
def test_slurm_settings_a_cluster_user_gets_wrong_are_named_at_validate(tmp_path, cli, slurm, message):
    study = tiny_study(executor={"kind": "slurm", "slurm": slurm})
    study["training"] = {"max_epochs": 2, "accelerator": "gpu", "devices": 2}
    result = cli("validate", str(write_spec(tmp_path / "study.yaml", study)))
    assert result.code == 2 and "Traceback" not in result.err, result.err
    assert re.search(r"study\.yaml:\d+:\d+: " + message, result.err), result.err


def test_a_command_line_gpus_per_node_below_the_cells_devices_is_refused(tmp_path, cli, git_env):
    root = launch_project(tmp_path, executor={"kind": "slurm"})
    study = yaml.safe_load((root / "study.yaml").read_text())
    study["training"].update(accelerator="gpu", devices=2)
    write_spec(root / "study.yaml", study)
    assert cli("compile", "study.yaml", cwd=root).code == 0
    result = cli("launch", "--dry-run", "--sbatch", "gpus-per-node=1", cwd=root)
    assert result.code == 2 and ("--sbatch gpus-per-node=1 is fewer than training.devices (2): a cell's job needs a "
                                 "GPU per device; give 2, or leave it out") in result.err, result.err
    result = cli("launch", "--dry-run", "--sbatch", "gpus-per-node=a100:1", cwd=root)
    assert result.code == 2 and "--sbatch gpus-per-node=a100:1 is fewer than training.devices (2)" in result.err
    result = cli("launch", "--dry-run", "--sbatch", "gpus-per-node=4", cwd=root)
    assert result.code == 0 and "#SBATCH --gpus-per-node=4" in result.out, result.err


def test_a_partition_list_with_an_empty_entry_is_refused_at_validate(tmp_path, cli):
    spec = write_spec(tmp_path / "study.yaml", tiny_study(executor={"kind": "slurm", "slurm": {"partition": "gpu,"}}))
    result = cli("validate", str(spec))
    assert result.code == 2 and ("executor.slurm.partition: 'gpu,' names an empty partition; separate partitions by "
                                 "single commas, none at either end") in result.err, result.err
    spec = write_spec(tmp_path / "study.yaml", tiny_study(executor={"kind": "slurm", "slurm": {"partition": "a,b"}}))
    assert cli("validate", str(spec)).code == 0


def test_each_waves_jobs_get_their_stages_time_limit(tmp_path, cli, git_env):
    """TPE runs train a fifth of the budget and sampling is short, yet every job asked for the training cells' limit,
    which a cluster's backfill schedules later."""
    slurm = {"time_min": 600, "stage_time_min": {"tpe": 120, "sample": 30}}
    settings = Settings(kind="slurm", jobs=2, study="tiny", time_min=600, stage_time_min=slurm["stage_time_min"])
    times = {groups: for_wave(settings, groups).time_min for groups in (("tpe",), ("train", "calibrate"), ("sample",))}
    assert times == {("tpe",): 120, ("train", "calibrate"): 600, ("sample",): 30}
    root = launch_project(tmp_path, executor={"kind": "slurm", "slurm": slurm})
    assert cli("compile", "study.yaml", cwd=root).code == 0
    result = cli("launch", "--dry-run", cwd=root)
    assert result.code == 0, result.err
    times = [line.strip() for line in result.out.splitlines() if "#SBATCH --time=" in line]
    assert times == ["#SBATCH --time=120", "#SBATCH --time=600"], "the tpe wave's, then the train wave's"
    assert "stage_time_min" in (root / "params.yaml").read_text()
    write_spec(root / "study.yaml", tiny_study(executor={"kind": "slurm", "slurm": {"stage_time_min": {"trian": 30}}}))
    result = cli("validate", "study.yaml", cwd=root)
    assert result.code == 2 and "executor.slurm.stage_time_min" in result.err and "'tpe', 'train' or 'sample'" \
        in result.err, result.err
