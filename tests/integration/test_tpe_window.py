"""TPE runs stop at their share of the full run's steps, mid-epoch if need be, and validate where they stop."""

from __future__ import annotations

import math

import pytest

from chemspec import api
from tests.conftest import tiny_study, write_spec


@pytest.mark.parametrize("fraction", [0.3, 0.5])
def test_a_tpe_run_stops_at_its_share_of_the_full_runs_steps(tmp_path, monkeypatch, fraction):
    monkeypatch.chdir(tmp_path)
    study = tiny_study(**{"hpo.tpe.budget_fraction": fraction, "hpo.tpe.estimator": "val",
                          "hpo.grid.learning_rate": [3.0e-3]})
    api.compile(write_spec(tmp_path / "s.yaml", study))
    api.run("data")
    api.run("split")
    (key,) = api.load_cells("params.yaml").tpe
    result = api.run("tpe", "params.yaml", key)
    per_epoch = math.ceil(400 / 32)
    assert result["steps"] == round(fraction * 2 * per_epoch)
    assert result["window"] == fraction and result["epochs"] == 2
    assert result["epochs_trained"] == pytest.approx(result["steps"] / per_epoch, abs=1e-4)
    assert len(result["val_history"]) == 1
    assert "estimate" not in result, "select estimates, so another estimator trains no TPE cell again"
    assert api.run("select")["configs"][0]["estimate"] == pytest.approx(result["val_history"][-1])
