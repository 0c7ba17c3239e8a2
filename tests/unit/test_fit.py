"""Power-law fits: recovery of known exponents, honest intervals, and 'cannot fit' instead of numbers."""

from __future__ import annotations

import numpy as np
import pytest

from chemspec.runtime.fit import fits, power_law, statistics


def test_exact_power_law_is_recovered():
    x = [1e3, 3e3, 1e4, 3e4]
    y = [5.0 * v ** -0.3 for v in x]
    fit = power_law(x, y, 0.95)
    assert fit["status"] == "ok"
    assert fit["exponent"] == pytest.approx(0.3, abs=1e-9)
    assert fit["prefactor"] == pytest.approx(5.0, rel=1e-9)
    assert fit["r2"] == pytest.approx(1.0)


def test_interval_covers_the_truth_under_noise():
    rng = np.random.default_rng(0)
    x = np.array([1e3, 3e3, 1e4, 3e4, 1e5])
    covered = 0
    for _ in range(200):
        y = 2.0 * x ** -0.25 * np.exp(rng.normal(0, 0.03, len(x)))
        low, high = power_law(list(x), list(y), 0.95)["ci"]
        covered += low <= 0.25 <= high
    assert covered >= 180


@pytest.mark.parametrize("x,y,reason", [
    ([1e3], [1.0], "1 point"),
    ([1e3, 1e4], [1.0, 0.5], "2 points"),
    ([1e3, 1e4, 1e5], [1.0, 1.0, 1.0], "losses are constant"),
    ([1e3, 1e4, 1e5], [1.0, float("nan"), 0.5], "finite and positive"),
    ([1e3, 1e4, 1e5], [1.0, -0.2, 0.5], "finite and positive"),
    ([1e3, 1e3, 1e3], [1.0, 0.9, 0.8], "one x value"),
])
def test_degenerate_inputs_cannot_be_fitted(x, y, reason):
    fit = power_law(x, y, 0.95)
    assert fit["status"] == "cannot fit"
    assert reason in fit["reason"]
    assert "exponent" not in fit


def test_fits_cover_both_axes_and_skip_diverged_cells():
    rows = [{"model": m, "params": p, "data_size": n, "val_loss": 10 * p ** -0.1 * n ** -0.2, "status": "ok"}
            for m, p in (("xs", 1e4), ("s", 1e5), ("m", 1e6)) for n in (1e3, 1e4, 1e5)]
    rows.append({"model": "m", "params": 1e6, "data_size": 1e6, "val_loss": float("nan"), "status": "diverged"})
    result, joint = fits(rows, ["power"], 0.95)
    assert joint is None
    by = {(f["axis"], f["group"]): f for f in result}
    assert by[("data", "xs")]["exponent"] == pytest.approx(0.2)
    assert by[("params", "1000.0")]["exponent"] == pytest.approx(0.1)
    assert ("params", "1000000.0") not in by


def test_joint_law_is_reported_as_alpha_and_beta_rows():
    rows = [{"model": m, "params": p, "data_size": n, "val_loss": 1.5 + 40 * p ** -0.3 + 300 * n ** -0.4,
             "status": "ok"} for m, p in (("xs", 1e4), ("s", 1e5), ("m", 1e6)) for n in (1e3, 1e4, 1e5)]
    flat, joint = fits(rows, ["joint"], 0.95)
    assert joint["status"] == "ok"
    alpha, beta = flat
    assert (alpha["axis"], alpha["law"]) == ("params", "joint") and alpha["exponent"] == pytest.approx(0.3, rel=1e-3)
    assert (beta["axis"], beta["law"]) == ("data", "joint") and beta["exponent"] == pytest.approx(0.4, rel=1e-3)


def test_statistics_report_rank_correlations_and_monotonicity():
    rows = [{"cell": f"{m}-{n}", "model": m, "params": p, "data_size": n, "val_loss": 10 * p ** -0.1 * n ** -0.2,
             "wall_time_s": p / 1e4, "status": "ok"} for m, p in (("xs", 1e4), ("s", 1e5), ("m", 1e6))
            for n in (1e3, 1e4)]
    rows[0] = {**rows[0], "val_loss": 0.1}
    stats = statistics(rows)
    assert stats["spearman"]["10000.0"]["rho_params"] == pytest.approx(-1.0)
    assert stats["spearman"]["10000.0"]["rho_time"] == pytest.approx(-1.0)
    assert stats["loss_falls_with_data"] == {"xs": False, "s": True, "m": True}


def test_bootstrap_cross_checks_the_joint_fit_on_large_grids():
    from chemspec.runtime.fit import bootstrap

    rng = np.random.default_rng(1)
    rows = [{"params": p, "data_size": n, "status": "ok",
             "val_loss": (1.5 + 40 * p ** -0.3 + 300 * n ** -0.4) * float(np.exp(rng.normal(0, 0.01)))}
            for p in (1e4, 3e4, 1e5, 3e5) for n in (1e3, 3e3, 1e4, 3e4)]
    result = bootstrap(rows, 200, 0.95)
    assert result["status"] == "ok" and result["fitted"] >= 100
    assert result["ci_alpha"][0] < 0.3 < result["ci_alpha"][1]
    assert bootstrap(rows[:9], 200, 0.95) == {"status": "cannot bootstrap",
                                              "reason": "9 cells; a bootstrap over cells needs at least 12"}
    assert bootstrap(rows, 0, 0.95) is None


def test_seed_noise_measures_the_spread_of_replicated_cells(tmp_path):
    import json

    from chemspec.runtime.fit import cells_table, seed_noise

    metrics = {}
    for key, seed, loss in (("xs-100", 0, 1.0), ("xs-100-seed1", 1, 1.1), ("xs-100-seed2", 2, 0.9),
                            ("xs-200", 0, 0.8)):
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps({"cell": f"train@{key}", "model": "xs", "params": 10, "data_size": int(key[3:6]),
                                    "seed": seed, "val_loss": loss, "hparams": {}, "epochs": 1, "wall_time_s": 1.0}))
        metrics[key] = str(path)
    rows = cells_table(metrics)
    assert [r["val_loss"] for r in rows] == [1.0, 0.8]
    noise = seed_noise(metrics, rows)
    assert noise["seeds_per_cell"] == {"xs-100": 3}
    assert noise["std_log_loss"]["xs-100"] == pytest.approx(np.std(np.log([1.0, 1.1, 0.9]), ddof=1))
