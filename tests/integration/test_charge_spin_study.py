"""A SpookyNet study over several charge and spin states end to end: xTB MD of methanol, methoxide and the
methyl radical through real `dvc repro`, and the same molecules refused at compile to a family that cannot
see the states."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import tool_env

pytestmark = pytest.mark.slow

STUDY = {
    "study": "ions", "seed": 0,
    "data": {"kind": "atoms", "source": {"generate": "md", "molecules": ["methanol", "C[O-]", "[CH3]"],
                                         "temperature_K": 500, "frames": 120, "stride": 10, "timestep_fs": 0.5,
                                         "equilibration_steps": 50},
             "sizes": [20, 40, 60], "validation": 30, "test": 30},
    "model": {"family": "spookynet", "widths": [8], "depths": [1], "cutoff": 5.0, "n_rbf": 8, "charge_spin": True},
    "training": {"max_epochs": 5, "precision": "32-true", "accelerator": "cpu"},
    "hpo": {"grid": {"learning_rate": [1.0e-3], "batch_size": [16]},
            "tpe": {"budget_fraction": 0.2, "estimator": "tse", "keep": 1, "model_size": "w8d1", "data_size": 60}},
    "fit": {"laws": ["power"]},
}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, env=tool_env())


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("ions")
    (root / "study.yaml").write_text(yaml.safe_dump(STUDY))
    for command in (("git", "init", "-q"), ("dvc", "init", "-q"), ("chemspec", "compile", "study.yaml"),
                    ("dvc", "repro")):
        done = run(*command, cwd=root)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return root


def test_generated_ions_and_radicals_keep_their_charge_and_multiplicity(project):
    with np.load(project / "data" / "ions" / "atoms.npz") as store:
        charge, multiplicity, offsets = store["charge"], store["multiplicity"], store["offsets"]
    sizes = np.diff(offsets)
    states = {(int(n), int(q), int(m)) for n, q, m in zip(sizes, charge, multiplicity)}
    assert states == {(6, 0, 1), (5, -1, 1), (4, 0, 2)}  # methanol, methoxide, methyl radical
    info = json.loads((project / "data" / "ions" / "data.json").read_text())
    assert info["electronic_states"] == {"charge -1 multiplicity 1": 40, "charge 0 multiplicity 1": 40,
                                         "charge 0 multiplicity 2": 40}


def test_every_cell_trains_with_the_embeddings_and_the_pipeline_ends_clean(project):
    for size in (20, 40, 60):
        metrics = json.loads((project / "results" / "ions" / "train" / f"w8d1-{size}" / "metrics.json").read_text())
        assert metrics["family"] == "spookynet" and metrics["status"] == "ok"
        assert np.isfinite(metrics["force_mae_meV_per_A"])
    assert "up to date" in run("dvc", "status", cwd=project).stdout


def test_painn_is_refused_the_mixed_states_at_compile_without_a_traceback(tmp_path):
    painn = {**STUDY, "model": {**STUDY["model"], "family": "painn"}}
    del painn["model"]["charge_spin"]
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(painn))
    done = run("chemspec", "compile", "study.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert ("the molecules are of 3 electronic states (charge -1 multiplicity 1: C[O-]; charge 0 multiplicity 1: "
            "methanol; charge 0 multiplicity 2: [CH3]), which look alike to model.family 'painn' without "
            "model.charge_spin") in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "dvc.yaml").exists()
