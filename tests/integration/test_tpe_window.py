"""TPE runs stop at their share of the full run's steps, mid-epoch if need be, and validate where they stop."""

from __future__ import annotations

import math

import pytest

from chemspec import api
from tests.conftest import tiny_study, write_spec


@pytest.mark.parametrize("fraction", [0.3, 0.5])
def test_a_tpe_run_stops_at_its_share_of_the_full_runs_steps(tmp_path, monkeypatch, fraction):
    monkeypatch.chdir(tmp_path)
    study = tiny_study(**{"hpo.tpe.budget_fraction": fraction, "hpo.tpe.estimator": "val"})
    api.compile(write_spec(tmp_path / "s.yaml", study))
    api.run("data")
    api.run("split")
    results = {key: api.run("tpe", "params.yaml", key) for key in api.load_cells("params.yaml").tpe}
    result = results["lr3e-3-bs32"]
    per_epoch = math.ceil(400 / 32)
    assert result["steps"] == round(fraction * 2 * per_epoch)
    assert result["window"] == fraction and result["epochs"] == 2
    assert result["epochs_trained"] == pytest.approx(result["steps"] / per_epoch, abs=1e-4)
    assert len(result["val_history"]) == 1
    assert "estimate" not in result, "select estimates, so another estimator trains no TPE cell again"
    for row in api.run("select")["configs"]:
        assert row["estimate"] == pytest.approx(results[row["name"]]["val_history"][-1])
