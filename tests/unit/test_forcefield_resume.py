"""Force fields stopped by SIGTERM resume from their checkpoint and end bitwise as an uninterrupted run.

Seven ethanols at batch size 2 make epochs of 4 steps, the last batch short; a learning rate of 3e-2
with plateau patience 0 makes the schedule cut the rate in the fifth epoch, so a resumed run that lost
the schedule's state ends elsewhere. Results are compared as metrics.json would hold them.
"""

from __future__ import annotations

import json
import re
import signal
import warnings

import pytest
import torch

from chemspec.archive.manifest import TIMING_KEYS
from chemspec.errors import Interrupted, RunError
from chemspec.runtime.forcefield_train import train_forcefield
from chemspec.runtime.io import to_json
from chemspec.runtime.resume import CHECKPOINT, EpochSampler, Resume
from tests.unit.test_forcefield import CUTOFF, ethanols

DATA = ethanols(7)
HP = {"learning_rate": 3e-2, "batch_size": 2}
PLATEAU = {"factor": 0.5, "patience": 0, "min_lr": 1e-6}
pytestmark = pytest.mark.usefixtures("one_thread")
STOPPED = r"schnet cell stopped by SIGTERM after {} steps; checkpoint saved in .*; re-run `dvc repro` to resume from it"


def train(resume_dir=None, data=DATA, **changes) -> tuple[bytes, dict, float]:
    """(metrics as JSON without timings, weights, final learning rate) of a 6-epoch SchNet run."""
    settings = {"hparams": HP, "epochs": 6, "seed": 1, "scheduler": PLATEAU, **changes}
    metrics, module = train_forcefield("schnet", 8, 1, CUTOFF, 8, data, data, data, resume_dir=resume_dir,
                                       **settings)
    timeless = {k: v for k, v in metrics.items() if k not in TIMING_KEYS}
    return to_json(timeless), module.state_dict(), module.trainer.optimizers[0].param_groups[0]["lr"]


def assert_same(run, reference) -> None:
    assert run[0] == reference[0]
    torch.testing.assert_close(run[1], reference[1], rtol=0, atol=0, equal_nan=True)
    assert run[2] == reference[2]


def stop(folder, step: int, **changes) -> None:
    with pytest.raises(RunError, match=STOPPED.format(step)):
        train(folder, fault=("term", step), **changes)
    assert (folder / CHECKPOINT).is_file()


@pytest.fixture(scope="module")
def reference():
    run = train()
    assert run[2] == HP["learning_rate"] / 2, "the plateau schedule must cut the rate once, after step 13"
    return run


@pytest.mark.parametrize("steps,where", [([13], "epoch 4, after batch 1 of it"), ([8], "epoch 3, from its start"),
                                         ([9, 14], "epoch 4, after batch 2 of it")],
                         ids=["mid-epoch", "at an epoch's end", "twice"])
def test_sigterm_then_a_rerun_ends_bitwise_as_the_uninterrupted_run(tmp_path, reference, steps, where, capsys):
    """Mid-epoch the resumed epoch takes the batches it would have; at an epoch's last batch the stop
    waits for validation and the plateau step; a resumed run can be stopped and resumed again. The rerun
    says where it continues from, and Lightning's warning that a mid-epoch resume is unreliable (true of
    its own loaders, not of this sampler) is not shown."""
    for step in steps:
        stop(tmp_path / "resume", step)
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_same(train(tmp_path / "resume"), reference)
    assert not [w for w in caught if "resuming from a checkpoint" in str(w.message)]
    assert re.search(rf"resume: continuing from .*{CHECKPOINT}, {where}\n", capsys.readouterr().err)


def test_ctrl_c_stops_as_sigterm_does_with_a_checkpoint_exit_130_and_the_rerun_ends_bitwise(tmp_path, reference,
                                                                                             capsys):
    """A Ctrl-C lost the epoch in progress, and each interrupted launch job with it."""
    with pytest.raises(Interrupted, match=STOPPED.format(13).replace("SIGTERM", "SIGINT")):
        train(tmp_path / "resume", fault=("int", 13))
    assert "interrupt: stopping at the end of this training batch" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "after training a Ctrl-C acts as ever"
    assert_same(train(tmp_path / "resume"), reference)


def test_a_second_ctrl_c_stops_at_once(tmp_path):
    resume = Resume(tmp_path, EpochSampler(4, seed=0), 2, 1, {})
    before = signal.signal(signal.SIGINT, resume._interrupt)
    try:
        resume._ctrl_c = before
        resume._interrupt(signal.SIGINT, None)
        assert resume.stopped_by == "SIGINT" and resume._stop_requested
        with pytest.raises(KeyboardInterrupt, match=r"^$"):  # bare, as Python's own Ctrl-C handler raises it
            resume._interrupt(signal.SIGINT, None)
        assert signal.getsignal(signal.SIGINT) is before
    finally:
        signal.signal(signal.SIGINT, before)


def test_the_folder_of_resume_checkpoints_is_ignored_by_git(tmp_path, git_env):
    import subprocess

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    stop(tmp_path / ".resume" / "train-w8d1-100", 9)
    assert (tmp_path / ".resume" / "train-w8d1-100" / ".gitignore").read_text().splitlines()[-1] == "*"
    ignored = subprocess.run(["git", "check-ignore", f".resume/train-w8d1-100/{CHECKPOINT}"], cwd=tmp_path)
    assert ignored.returncode == 0
    assert subprocess.run(["git", "status", "--porcelain"], cwd=tmp_path, capture_output=True, text=True).stdout == ""


def test_a_damaged_checkpoint_is_moved_aside_and_the_cell_starts_over(tmp_path, reference, capsys):
    folder = tmp_path / "resume"
    stop(folder, 9)
    whole = (folder / CHECKPOINT).read_bytes()
    (folder / CHECKPOINT).write_bytes(whole[:len(whole) // 2])
    run = train(folder)
    assert "cannot be read" in capsys.readouterr().err
    assert (tmp_path / "resume.damaged" / CHECKPOINT).read_bytes() == whole[:len(whole) // 2]
    assert_same(run, reference)


@pytest.mark.parametrize("change", [{"hparams": {**HP, "learning_rate": 2e-2}}, {"seed": 2},
                                    {"data": ethanols(7, seed=5)}, {"epochs": 7}],
                         ids=["learning rate", "seed", "data", "epochs"])
def test_a_checkpoint_written_for_other_settings_or_data_is_not_resumed(tmp_path, capsys, change):
    stop(tmp_path / "resume", 9)
    run = train(tmp_path / "resume", **change)
    assert "was written for another configuration of this cell" in capsys.readouterr().err
    assert_same(run, train(**change))


@pytest.mark.parametrize("stopping", [
    {"fault": ("nan", 5)},
    {"hparams": {**HP, "learning_rate": 1e-9}, "scheduler": {"factor": 0.1, "patience": 0, "min_lr": 1e-10}}],
    ids=["diverged", "min_lr"])
def test_a_run_killed_after_its_last_checkpoint_resumes_to_the_same_stop(tmp_path, stopping):
    """The epoch-end checkpoint of a run that diverged or reached min_lr holds why it stopped: a rerun
    (the cell killed before it wrote its results) trains no further step and reports the same."""
    first = train(tmp_path / "resume", **stopping)
    assert (tmp_path / "resume" / CHECKPOINT).is_file()
    assert b'"stop_reason": "max_epochs"' not in first[0]
    assert_same(train(tmp_path / "resume", **{k: v for k, v in stopping.items() if k != "fault"}), first)


@pytest.mark.parametrize("changes", [{"window": 0.45}, {"window": 0.45, "fault": ("nan", 9)}], ids=["ok", "diverged"])
def test_a_tpe_window_rerun_from_its_last_checkpoint_keeps_its_last_part_epoch(tmp_path, changes):
    """A window that ends inside an epoch checkpoints before that epoch's losses are filed; a rerun (the
    cell killed in its final validation) must still count them, and still see a NaN among them."""
    first = train(tmp_path / "resume", **changes)
    assert (tmp_path / "resume" / CHECKPOINT).is_file()
    record = json.loads(first[0])
    assert [len(epoch) for epoch in record["step_losses"]] == ([4, 4, 1] if "fault" in changes else [4, 4, 3])
    assert record["status"] == ("diverged" if "fault" in changes else "ok")
    assert_same(train(tmp_path / "resume", **{k: v for k, v in changes.items() if k != "fault"}), first)

