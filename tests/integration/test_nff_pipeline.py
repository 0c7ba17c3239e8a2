"""A force-field study end to end: generated xTB MD, PaiNN cells through real `dvc repro`, fits and report."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import REPO, tool_env

pytestmark = pytest.mark.slow


def sh(*args: str, cwd: Path) -> str:
    done = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, env=tool_env())
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """specs/quickstart-nff.yaml shrunk to CI size: fewer frames, epochs and capacities."""
    root = tmp_path_factory.mktemp("nff")
    study = yaml.safe_load((REPO / "specs" / "quickstart-nff.yaml").read_text())
    study["data"]["source"].update(frames=300, equilibration_steps=100)
    study["data"].update(sizes=[60, 120, 240], validation=30, test=30)
    study["model"].update(widths=[8, 16], depths=[2])
    study["training"]["max_epochs"] = 15
    study["hpo"]["tpe"].update(model_size="w8d2", data_size=120)
    study["fit"]["laws"] = ["power"]  # the joint law needs 3 model sizes
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    sh("git", "init", "-q", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    sh("chemspec", "compile", "study.yaml", cwd=root)
    sh("dvc", "repro", cwd=root)
    return root


def test_data_are_generated_md_with_counts(project):
    info = json.loads((project / "data" / "quickstart-nff" / "data.json").read_text())
    assert info["kind"] == "atoms" and info["count"] == 300
    assert info["counts"]["dropped_scf"] == 0


def test_force_mae_falls_with_data_size_for_each_capacity(project):
    report = json.loads(sh("chemspec", "report", "--json", cwd=project))
    for model in ("w8d2", "w16d2"):
        maes = [c["force_mae_meV_per_A"] for c in sorted(report["cells"], key=lambda c: c["data_size"])
                if c["model"] == model]
        assert len(maes) == 3 and maes == sorted(maes, reverse=True), f"{model}: {maes}"
    assert "test F MAE meV/Å test E MAE meV" in sh("chemspec", "report", cwd=project)


def test_a_trained_cell_as_an_ase_calculator_gives_the_test_errors_the_cell_reported(project):
    from ase import Atoms

    from chemspec.runtime.atoms import load_atoms
    from chemspec.runtime.calculator import ForceFieldCalculator
    from chemspec.runtime.split import read_rows

    cell = project / "results" / "quickstart-nff" / "train" / "w16d2-240"
    data = load_atoms(project / "data" / "quickstart-nff" / "atoms.npz")
    (test,) = read_rows(project / "data" / "quickstart-nff" / "splits", ("test",), len(data)).values()
    calculator = ForceFieldCalculator(cell / "model")
    errors, labels = [], []
    for s in test:
        numbers, positions, _, forces = data.structure(int(s))
        molecule = Atoms(numbers=numbers, positions=positions, calculator=calculator)
        errors.append(np.abs(molecule.get_forces() - forces).ravel())
        labels.append(np.abs(forces).ravel())
    metrics = json.loads((cell / "metrics.json").read_text())
    assert 1000 * np.concatenate(errors).mean() == pytest.approx(metrics["force_mae_meV_per_A"], rel=1e-3)
    zero_forces = metrics["baseline"]["force_mae_meV_per_A"]
    assert 1000 * np.concatenate(labels).mean() == pytest.approx(zero_forces, abs=1e-3)
    assert metrics["force_mae_meV_per_A"] < zero_forces


def test_force_field_cells_are_archived(project):
    assert "verified" in sh("chemspec", "archive", "verify", cwd=project)
    metrics = json.loads((project / "results" / "quickstart-nff" / "train" / "w16d2-240" / "metrics.json").read_text())
    assert metrics["family"] == "painn" and metrics["capacity"] == 32 and metrics["stop_reason"] in ("max_epochs", "min_lr")


def test_a_nan_loss_marks_a_force_field_cell_diverged_and_the_fits_leave_it_out(project):
    done = subprocess.run(["dvc", "repro", "-f", "-s", "train@w8d2-60"], cwd=project, capture_output=True, text=True,
                          env={**tool_env(), "CHEMSPEC_FAULT": "train@w8d2-60:nan@5"})
    assert done.returncode == 0, done.stderr
    metrics = json.loads((project / "results" / "quickstart-nff" / "train" / "w8d2-60" / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["divergence"]["step"] == 5 and metrics["val_loss"] is None
    sh("dvc", "repro", cwd=project)
    report = json.loads(sh("chemspec", "report", "--json", cwd=project))
    status = {(c["model"], c["data_size"]): c["status"] for c in report["cells"]}
    assert status.pop(("w8d2", 60)) == "diverged" and set(status.values()) == {"ok"}
    assert report["statistics"]["diverged"] == ["train@w8d2-60"]
    sh("dvc", "repro", "-f", "-s", "train@w8d2-60", cwd=project)
    sh("dvc", "repro", cwd=project)
