"""A training cell killed at random steps, or preempted with SIGTERM, resumes and ends bitwise equal."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from chemspec.archive import Store
from chemspec.archive.manifest import TIMING_KEYS
from tests.conftest import tiny_study, tool_env, write_spec

pytestmark = pytest.mark.slow
CELL = "s-400"
# Validation in 3 batches of 256, so that a stop at an epoch's end can land inside validation.
STUDY = {"training.max_epochs": 4, "data.validation": 600, "data.source.max_molecules": 1700}


def sh(*args: str, cwd: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = tool_env()
    if fault:
        env["CHEMSPEC_FAULT"] = f"train@{CELL}:{fault}"
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, env=env,
                          preexec_fn=_sigint_as_in_a_terminal)


def _sigint_as_in_a_terminal() -> None:
    """A runner started in the background (`nohup … &`) passes SIGINT on ignored, and Python then
    ignores Ctrl-C; a terminal's foreground job, whose Ctrl-C the `int` fault stands for, does not."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def train(root: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    return sh("chemspec", "run", "train", "--params", "params.yaml", "--cell", CELL, cwd=root, fault=fault)


def outputs(root: Path) -> dict:
    folder = root / "results" / "tiny" / "train" / CELL
    metrics = json.loads((folder / "metrics.json").read_text())
    return {"metrics": {k: v for k, v in metrics.items() if k not in TIMING_KEYS},
            "loss": (folder / "loss.csv").read_bytes(),
            "weights": (folder / "model" / "model.safetensors").read_bytes()}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    assert sh("git", "init", "-q", cwd=root).returncode == 0
    assert sh("dvc", "init", "-q", cwd=root).returncode == 0
    write_spec(root / "study.yaml", tiny_study(**STUDY))
    assert sh("chemspec", "compile", "study.yaml", cwd=root).returncode == 0
    done = sh("dvc", "repro", "select", cwd=root)
    assert done.returncode == 0, done.stderr
    first = train(root)
    assert first.returncode == 0, first.stderr
    return root, outputs(root)


def _clear(root: Path) -> None:
    shutil.rmtree(root / "results" / "tiny" / "train" / CELL, ignore_errors=True)


def test_sigkill_at_three_random_steps_then_resume_matches(project):
    root, reference = project
    steps = reference["metrics"]["steps"]
    _clear(root)
    for step in sorted(random.Random(7).sample(range(1, steps - 1), 3)):
        killed = train(root, fault=f"kill@{step}")
        assert killed.returncode == -signal.SIGKILL
        assert not (root / "results" / "tiny" / "train" / CELL / "metrics.json").exists()
    done = train(root)
    assert done.returncode == 0, done.stderr
    assert outputs(root) == reference
    assert not (root / "results" / "tiny" / ".resume" / f"train-{CELL}").exists()


def test_sigterm_leaves_a_checkpoint_mid_epoch_and_resume_matches(project):
    root, reference = project
    _clear(root)
    step = reference["metrics"]["steps"] // 4 + 3
    stopped = train(root, fault=f"term@{step}")
    assert stopped.returncode == 1
    assert "stopped by SIGTERM; checkpoint saved" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert (root / "results" / "tiny" / ".resume" / f"train-{CELL}" / "last.ckpt").is_file()
    done = train(root)
    assert done.returncode == 0, done.stderr
    assert outputs(root) == reference


@pytest.mark.parametrize("where", ["mid-epoch", "epoch end", "twice in one epoch"])
def test_sigterm_to_every_process_of_a_step_with_loader_workers_then_resume_matches(project, where):
    """SLURM preemption signals the loader workers too: they leave the stop to their parent, and the
    resumed run, whose workers fetch before Lightning sets the epoch, still trains the right batches.
    At an epoch's end the stop waits for validation to finish; a resumed run can be stopped again."""
    root, reference = project
    per_epoch = reference["metrics"]["steps"] // 4
    steps = {"mid-epoch": [per_epoch + 3], "epoch end": [per_epoch],
             "twice in one epoch": [per_epoch + 3, per_epoch + 6]}[where]
    _clear(root)
    params = (root / "params.yaml").read_text()
    write_spec(root / "study.yaml", tiny_study(**STUDY, **{"training.num_workers": 2}))
    assert sh("chemspec", "compile", "study.yaml", cwd=root).returncode == 0
    try:
        for step in steps:
            stopped = train(root, fault=f"term-all@{step}")
            assert stopped.returncode == 1, stopped.stderr
            assert "to this one and 2 loader workers" in stopped.stderr
            assert "stopped by SIGTERM; checkpoint saved" in stopped.stderr
            assert (root / "results" / "tiny" / ".resume" / f"train-{CELL}" / "last.ckpt").is_file()
        done = train(root)
        assert done.returncode == 0, done.stderr
        assert outputs(root) == reference
    finally:
        (root / "params.yaml").write_text(params)


@pytest.mark.parametrize("workers", [0, 2])
def test_ctrl_c_checkpoints_mid_epoch_exits_130_and_resume_matches(project, workers):
    """A Ctrl-C lost the epoch in progress (a paper-scale ChemGPT cell is one epoch): it now stops as SIGTERM
    does, at the end of a training batch with a checkpoint of it, loader workers and all."""
    root, reference = project
    _clear(root)
    params = (root / "params.yaml").read_text()
    write_spec(root / "study.yaml", tiny_study(**STUDY, **{"training.num_workers": workers}))
    assert sh("chemspec", "compile", "study.yaml", cwd=root).returncode == 0
    try:
        stopped = train(root, fault=f"int-all@{reference['metrics']['steps'] // 4 + 3}")
        assert stopped.returncode == 130, stopped.stderr
        assert f"to this one and {workers} loader workers" in stopped.stderr
        assert "interrupt: stopping at the end of this training batch with a checkpoint of it" in stopped.stderr
        assert f"{CELL}: stopped by SIGINT; checkpoint saved" in stopped.stderr
        assert "Traceback" not in stopped.stderr
        assert not (root / "results" / "tiny" / "train" / CELL / "metrics.json").exists()
        done = train(root)
        assert done.returncode == 0, done.stderr
        assert "after batch" in done.stderr, "resumed inside the epoch, not from its start"
        assert outputs(root) == reference
    finally:
        (root / "params.yaml").write_text(params)


def test_another_seed_is_not_resumed_and_archives_under_other_hashes(project):
    root, reference = project
    _clear(root)
    assert train(root, fault="term@5").returncode == 1
    params = (root / "params.yaml").read_text()
    write_spec(root / "study.yaml", tiny_study(**STUDY, seed=3))
    assert sh("chemspec", "compile", "study.yaml", cwd=root).returncode == 0
    try:
        assert train(root).returncode == 0
        other = outputs(root)["metrics"]
        assert other["identity"] != reference["metrics"]["identity"]
        assert other["val_loss"] != reference["metrics"]["val_loss"]
        archived = {k: v for k, v in other.items() if k not in TIMING_KEYS}
        same_seed = {k: v for k, v in reference["metrics"].items() if k not in TIMING_KEYS}
        assert Store(root / "objs").put_json(archived) != Store(root / "objs").put_json(same_seed)
    finally:
        (root / "params.yaml").write_text(params)


def test_a_checkpoint_written_before_the_split_changed_is_not_resumed(project):
    """The cell's identity names its data by size only; the resume tag holds the rows' hashes."""
    root, _ = project
    _clear(root)
    assert train(root, fault="term@5").returncode == 1

    def split_with(validation: int) -> None:
        write_spec(root / "study.yaml", tiny_study(**{**STUDY, "data.validation": validation}))
        assert sh("chemspec", "compile", "study.yaml", cwd=root).returncode == 0
        assert sh("dvc", "repro", "split", cwd=root).returncode == 0
    split_with(500)
    try:
        done = train(root)
        assert done.returncode == 0, done.stderr
        assert "was written for another configuration of this cell (other data or split" in done.stderr
    finally:
        split_with(STUDY["data.validation"])
        _clear(root)


def test_a_plateau_schedule_resumed_after_sigterm_cuts_the_rate_where_the_uninterrupted_run_did(tmp_path):
    """The stop falls in the epoch at whose end the uninterrupted run first cut the rate. Which epoch that is
    depends on the CPU's rounding (the sixth on one machine, the eighth on another at a rate of 0.2), so it
    is read off the uninterrupted run; a rate this high makes the validation loss rise within 8 epochs."""
    plateau = {**STUDY, "training.max_epochs": 8, "training.scheduler": {"name": "plateau", "patience": 0},
               "hpo.grid": {"learning_rate": [0.6], "batch_size": [32]}}
    assert sh("git", "init", "-q", cwd=tmp_path).returncode == 0
    assert sh("dvc", "init", "-q", cwd=tmp_path).returncode == 0
    write_spec(tmp_path / "study.yaml", tiny_study(**plateau))
    assert sh("chemspec", "compile", "study.yaml", cwd=tmp_path).returncode == 0
    assert sh("dvc", "repro", "select", cwd=tmp_path).returncode == 0
    assert train(tmp_path).returncode == 0
    reference = outputs(tmp_path)
    rates = reference["metrics"]["lr_history"]
    cut = next((epoch for epoch, rate in enumerate(rates) if rate < 0.6), None)
    assert cut is not None and len(rates) == 8, f"the schedule must cut the rate within the run: {rates}"
    _clear(tmp_path)
    stopped = train(tmp_path, fault=f"term@{13 * cut + 6}")  # 13 steps an epoch: the middle of epoch `cut`
    assert stopped.returncode != 0 and "stopped by SIGTERM" in stopped.stderr
    done = train(tmp_path)
    assert done.returncode == 0, done.stderr
    assert outputs(tmp_path) == reference


def test_a_stage_whose_dvc_is_killed_alone_checkpoints_and_stops_and_the_next_repro_resumes(project):
    """`kill <dvc pid>` leaves dvc's stage running, unrecorded; a `dvc repro` started then would train the
    same cell beside it. The stage notices its dvc is gone and stops as on SIGTERM, with a checkpoint."""
    import psutil

    root, reference = project
    _clear(root)
    killed = sh("dvc", "repro", "-s", f"train@{CELL}", cwd=root, fault="kill-dvc@3")
    assert killed.returncode == -signal.SIGKILL
    stage = [p for p in psutil.process_iter(["cmdline", "cwd"])
             if p.info["cwd"] == str(root) and "--cell" in (p.info["cmdline"] or []) and CELL in p.info["cmdline"]]
    psutil.wait_procs(stage, timeout=120)
    assert all(not p.is_running() for p in stage), "the orphaned stage stopped by itself"
    assert (root / "results" / "tiny" / ".resume" / f"train-{CELL}" / "last.ckpt").is_file()
    assert not (root / "results" / "tiny" / "train" / CELL / "metrics.json").exists()
    done = sh("dvc", "repro", "-s", f"train@{CELL}", cwd=root)
    assert done.returncode == 0, done.stderr
    assert outputs(root) == reference
