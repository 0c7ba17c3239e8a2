"""training.devices: one cell across two processes (Lightning DDP, gloo on CPU): rank 0 alone writes.

The two-process run starts as `python -m chemspec`, the form Lightning's launcher must re-run for rank 1
where no console script is installed (benchmarks/ddp_scaling.py on the GPU machine)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chemspec.archive.manifest import TIMING_KEYS
from chemspec.runtime.tpe import window_steps
from tests.conftest import tiny_study, tool_env, write_spec


def _chemspec(root: Path, devices: int, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    """The command's result; past 300 s, a failure with the stacks of every process it started (ranks
    and loader workers, through `chemspec run`'s SIGUSR2 handler), which are then killed."""
    command = ["chemspec"] if devices == 1 else [sys.executable, "-m", "chemspec"]
    env = tool_env() | ({"CHEMSPEC_FAULT": f"train@xs-200:{fault}"} if fault else {})
    with subprocess.Popen([*command, *args], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGUSR2)
            time.sleep(3)
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"{' '.join(args)} hung for 300 s; its processes' stacks:\n{err[-30000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _study(devices: int, workers: int = 0) -> dict:
    study = tiny_study(**{"training.devices": devices, "data.sizes": [200, 400], "training.num_workers": workers})
    study["model"]["sizes"] = {"xs": study["model"]["sizes"]["xs"]}
    return study


def _prepare(root: Path, devices: int) -> Path:
    root.mkdir()
    write_spec(root / "study.yaml", _study(devices))
    for args in (["compile", "study.yaml"], ["run", "data"], ["run", "split"],
                 ["run", "tpe", "--cell", "lr3e-3-bs32"], ["run", "tpe", "--cell", "lr1e-2-bs32"], ["run", "select"]):
        done = _chemspec(root, devices, *args)
        assert done.returncode == 0, done.stderr
    return root


def _copy(prepared: Path, to: Path, workers: int = 0) -> Path:
    """A copy of the prepared cell; with loader workers, recompiled (workers are no part of any identity,
    so the data, split and TPE selection stand)."""
    shutil.copytree(prepared, to)
    if workers:
        write_spec(to / "study.yaml", _study(2, workers))
        done = _chemspec(to, 2, "compile", "study.yaml")
        assert done.returncode == 0, done.stderr
    return to


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """Data, split, TPE and selection of the two-process cell, made once; each test trains a copy."""
    return _prepare(tmp_path_factory.mktemp("ddp") / "prepared", 2)


def _train(root: Path, devices: int) -> tuple[dict, str, dict]:
    done = _chemspec(root, devices, "run", "train", "--cell", "xs-200")
    assert done.returncode == 0, done.stderr
    results = root / "results" / "tiny"
    tpe = json.loads((results / "tpe" / "lr3e-3-bs32" / "estimate.json").read_text())
    return json.loads((results / "train" / "xs-200" / "metrics.json").read_text()), done.stdout, tpe


@pytest.fixture(scope="module")
def two_ranks(prepared, tmp_path_factory) -> tuple[Path, dict, str, dict]:
    """The cell trained whole on two processes: the subject of the first test, the reference of the rest."""
    root = _copy(prepared, tmp_path_factory.mktemp("ddp") / "two")
    return root, *_train(root, 2)


def test_two_processes_share_one_cell_and_rank_zero_reports_it(tmp_path, two_ranks):
    one, _, one_tpe = _train(_prepare(tmp_path / "one", 1), 1)
    _, two, printed, two_tpe = two_ranks
    assert printed.count("train@xs-200:") == 1, printed
    assert two["device"].startswith("2x cpu") and one["device"].startswith("cpu")
    epochs, batch = 2, 32
    assert one["steps"] == epochs * math.ceil(200 / batch)
    assert two["steps"] == epochs * math.ceil(100 / batch), "each rank trains on half the rows"
    assert two["tokens_seen"] == one["tokens_seen"], "the ranks together see every row once an epoch"
    assert two["status"] == "ok" and two["val_loss"] > 0 and two["test_loss"] > 0
    assert one["train_tokens_per_s"] > 0 and two["train_tokens_per_s"] > 0, "steady-state rate, summed over ranks"
    assert one["flops_per_token"] == two["flops_per_token"] > 6 * one["params"]
    assert one["mfu_datasheet"] is None and one["peak_gpu_memory_mb"] is None, "no GPU, no MFU"

    def window(world: int, tpe: dict) -> int:  # the TPE window is a share of each rank's own steps
        return window_steps(tpe["window"], tpe["epochs"] * math.ceil(math.ceil(tpe["data_size"] / world) / 32))

    assert window(1, one_tpe) != window(2, two_tpe)
    assert (one_tpe["steps"], two_tpe["steps"]) == (window(1, one_tpe), window(2, two_tpe))


def _outputs(root: Path) -> tuple[dict, bytes, bytes]:
    folder = root / "results" / "tiny" / "train" / "xs-200"
    metrics = json.loads((folder / "metrics.json").read_text())
    return ({k: v for k, v in metrics.items() if k not in TIMING_KEYS}, (folder / "loss.csv").read_bytes(),
            (folder / "model" / "model.safetensors").read_bytes())


@pytest.mark.parametrize(("offset", "workers", "fault"), [(1, 0, "term"), (-2, 0, "term"), (1, 2, "term-all"),
                                                          (1, 2, "int-all")],
                         ids=["mid-epoch", "at-an-epoch-start", "mid-epoch-every-process-with-loader-workers",
                              "ctrl-c-to-every-process-with-loader-workers"])
def test_a_preempted_two_process_cell_resumes_on_both_ranks_and_ends_as_if_never_stopped(tmp_path, prepared, two_ranks,
                                                                                         offset, workers, fault):
    reference = _outputs(two_ranks[0])
    root = _copy(prepared, tmp_path / "stopped", workers)
    # Ranks agree on a stop a few steps after the signal (runtime.preempt): a signal in the first
    # epoch's second-to-last step stops the ranks at the second epoch's first step.
    step = reference[0]["steps"] // 2 + offset
    stopped = _chemspec(root, 2, "run", "train", "--cell", "xs-200", fault=f"{fault}@{step}")
    ctrl_c = fault.startswith("int")
    assert stopped.returncode == (130 if ctrl_c else 1), stopped.stderr
    assert f"stopped by {'SIGINT' if ctrl_c else 'SIGTERM'}; checkpoint saved" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    if fault.endswith("-all"):
        assert stopped.stderr.count("to this one and 2 loader workers") == 2, "one message a rank"
    assert (root / "results" / "tiny" / ".resume" / "train-xs-200" / "last.ckpt").is_file()
    assert not (root / "results" / "tiny" / "train" / "xs-200" / "metrics.json").exists()
    resumed = _chemspec(root, 2, "run", "train", "--cell", "xs-200")
    assert resumed.returncode == 0, resumed.stderr
    metrics, losses, weights = _outputs(root)
    assert metrics == reference[0]
    assert losses == reference[1] and weights == reference[2]


def test_a_loss_that_turns_nan_on_one_rank_stops_both_ranks_at_the_same_step(tmp_path, prepared):
    """Rank 1's loss is NaN at the last step of the first epoch and rank 0's only from the next one (the
    all-reduced gradients carry it over): rank 1 alone would stop there, and rank 0 wait for it in the
    next step's gradient all-reduce. The ranks agree on the first bad step instead."""
    root = _copy(prepared, tmp_path / "nan")
    done = _chemspec(root, 2, "run", "train", "--cell", "xs-200", fault="nan-rank1@3")
    assert done.returncode == 0, done.stderr
    metrics = json.loads((root / "results" / "tiny" / "train" / "xs-200" / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["divergence"]["step"] == 3
    assert metrics["divergence"]["last_finite_loss"] > 0
