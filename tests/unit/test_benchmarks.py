"""The CPU benchmarks run as BENCHMARKS.md states them, at toy sizes: a script that drifts from the code it
measures (an argument made required, a function renamed) fails here, not for the next person to rerun it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def bench(tmp_path, script: str, *args: str, out: bool = True) -> dict:
    """The JSON result that `script` writes to --out (or, where it takes none, prints)."""
    path = tmp_path / f"{script}.json"
    env = {**os.environ, "TMPDIR": str(tmp_path), "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}"
           f"{os.environ['PATH']}"}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args, *(["--out", str(path)] if out
                                                                                       else [])],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(path.read_text() if out else done.stdout)


def test_reference_stats_scores_its_stand_in_samples(tmp_path):
    result = bench(tmp_path, "reference_stats.py", "--molecules", "64", "--samples", "32", "--device", "cpu")
    assert result["finite"] and result["fcd"] >= 0 and result["samples"] == 32, result


@pytest.mark.slow
def test_noop_repro_runs_nothing_on_a_finished_project_and_removes_it(tmp_path):
    result = bench(tmp_path, "noop_repro.py", "--models", "2", "--data-sizes", "2", "--keep", "1", "--repeats", "1")
    assert result["train_cells"] == 4 and len(result["noop_repro_s"]) == 1 and "project" not in result, result
    assert not list(tmp_path.glob("chemspec-noop-*"))


def test_extxyz_read_times_both_readers_on_both_files(tmp_path):
    result = bench(tmp_path, "extxyz_read.py", "--frames", "20", "--repeats", "1", out=False)
    assert all(value > 0 for value in result.values() if isinstance(value, float)), result


def test_painn_throughput_runs_schnetpack_and_chemspec_on_a_generated_set(tmp_path):
    made = bench(tmp_path, "md_sets.py", "--set", "quickstart-nff", "--frames", "60", "--out", "atoms.npz", out=False)
    assert made["structures"] == 60, made
    result = bench(tmp_path, "painn_throughput.py", "--device", "cpu", "--data", made["path"], "--epochs", "2",
                   "--width", "16", "--depth", "1", "--workers", "0", "--variants", "peer,fp32")
    assert result["data"]["structures"] == 60 and {"schnetpack", "chemspec_fp32"} <= result["variants"].keys()


def test_chemgpt_throughput_trains_the_trainer_and_chemspec_to_one_held_out_loss_on_a_cpu(tmp_path):
    """In float32 on a CPU the three paths train the same model on the same batches: BENCHMARKS.md's CPU
    held-out check, at toy size."""
    result = bench(tmp_path, "chemgpt_throughput.py", "--molecules", "600", "--held-out", "100", "--sizes", "t:1x16x2",
                   "--steps", "6", "--warmup", "2", "--paths", "hf,chemspec,chemspec_packed", "--workers", "1")
    paths = result["sizes"]["t"]["paths"]
    assert paths.keys() == {"hf", "chemspec", "chemspec_packed"} and all(p["tokens_per_s"] > 0 for p in paths.values())
    losses = [p["val_loss"] for p in paths.values()]
    assert max(losses) - min(losses) < 1e-5, losses


def test_data_checks_times_the_unit_force_work_and_composition_checks(tmp_path):
    result = bench(tmp_path, "data_checks.py", "--structures", "200", "--repeats", "1")
    assert result["structures"] == 200 and result["force_work_s"] > 0 and result["plausible_units_s"] > 0, result
    assert result["split_elements_and_compositions_s"] > 0 and result["order_notes_s"] > 0, result
