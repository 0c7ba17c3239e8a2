"""Power-law fits: recovery of known exponents, honest intervals, and 'cannot fit' instead of numbers."""

from __future__ import annotations

import re

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


def test_every_fit_row_records_its_residual_degrees_of_freedom():
    """n − p, which `chemspec diff` needs to test a change in an exponent (p = 2, 3 and 5)."""
    rng = np.random.default_rng(1)
    rows = [{"model": m, "params": p, "data_size": n, "status": "ok",
             "val_loss": (1.5 + 40 * p ** -0.3 + 300 * n ** -0.4) * np.exp(rng.normal(0, 0.01))}
            for m, p in (("xs", 1e4), ("s", 1e5), ("m", 1e6), ("l", 1e7)) for n in (1e3, 1e4, 1e5, 1e6)]
    flat, _ = fits(rows, ["power", "saturating", "joint"], 0.95)
    assert {(f["law"], f["status"], f["dof"]) for f in flat} == {("power", "ok", 2), ("saturating", "ok", 1),
                                                                  ("joint", "ok", 11)}


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


def _metrics(folder, runs: dict[str, tuple[float | None, float]], status: str = "ok") -> dict[str, str]:
    """metrics.json files of train runs {key: (val_loss, wall_time_s)}, as the train stage writes them."""
    import json

    paths = {}
    for key, (loss, wall) in runs.items():
        model, size = key.split("-")[:2]
        path = folder / f"{key}.json"
        path.write_text(json.dumps({"cell": f"train@{key}", "model": model, "params": {"xs": 10, "s": 100}[model],
                                    "data_size": int(size), "val_loss": loss, "hparams": {"key": key}, "epochs": 1,
                                    "wall_time_s": wall, "status": status}))
        paths[key] = str(path)
    return paths


def test_seed_noise_measures_the_spread_of_replicated_cells(tmp_path):
    from chemspec.runtime.fit import cells_table, read_runs, seed_noise

    runs, replicates = read_runs(_metrics(tmp_path, {"xs-100": (1.0, 1.0), "xs-100-seed1": (1.1, 1.0),
                                                     "xs-100-seed2": (0.9, 1.0), "xs-200": (0.8, 1.0)}))
    assert [r["val_loss"] for r in cells_table(runs)] == [1.0, 0.8]
    noise = seed_noise(replicates, runs)
    assert noise["seeds_per_cell"] == {"xs-100": 3}
    assert noise["std_log_loss"]["xs-100"] == pytest.approx(np.std(np.log([1.0, 1.1, 0.9]), ddof=1))


def test_with_two_kept_ranks_the_seed_noise_compares_the_seeds_with_the_run_they_repeat(tmp_path):
    """Replicate seeds copy rank 1; the table may show rank 2 (other hyperparameters) when it validated lower."""
    from chemspec.runtime.fit import cells_table, read_runs, seed_noise

    runs, replicates = read_runs(_metrics(tmp_path, {"xs-100-r1": (1.0, 1.0), "xs-100-r2": (0.9, 1.0),
                                                     "xs-100-seed1": (1.001, 1.0)}))
    assert [r["cell"] for r in cells_table(runs)] == ["train@xs-100-r2"]
    noise = seed_noise(replicates, runs)
    assert noise["std_log_loss"]["xs-100"] == pytest.approx(np.std(np.log([1.0, 1.001]), ddof=1))


def test_a_cell_names_the_kept_configurations_that_diverged_where_another_stands_in(tmp_path):
    from chemspec.report import _status_text
    from chemspec.runtime.fit import cells_table, read_runs

    runs, _ = read_runs({**_metrics(tmp_path, {"xs-100-r1": (1.0, 1.0), "xs-200-r1": (0.8, 1.0),
                                               "xs-200-r2": (0.7, 1.0)}),
                         **_metrics(tmp_path, {"xs-100-r2": (None, 1.0)}, status="diverged")})
    rows = cells_table(runs)
    assert [(r["cell"], r.get("ranks_left_out")) for r in rows] == [
        ("train@xs-100-r1", {"train@xs-100-r2": "diverged"}), ("train@xs-200-r2", None)]
    assert _status_text(rows[0]) == "ok (another kept configuration: train@xs-100-r2 diverged)"


def test_the_fit_stage_charges_every_kept_rank_to_the_training_cost(tmp_path):
    """keep: 2 trains two configurations a cell; the table shows one, but both cost compute."""
    import json

    from chemspec.compiler.cells import FitCell
    from chemspec.runtime.fit import run_fit

    runs = {f"{model}-{n}-r{rank}": (1.0 / n + rank * 1e-4, 100.0) for model in ("xs", "s") for n in (100, 200)
            for rank in (1, 2)}
    configs = [{"name": f"c{i}", "hparams": {}, "estimate": 1.0 + i, "cost_s": 20.0, "status": "ok", "rank": i + 1,
                "kept": i < 2, "reason": "kept"} for i in range(6)]
    selected = tmp_path / "selected.json"
    selected.write_text(json.dumps({"estimator": "tse", "keep": 2, "margin": None, "kept": {"*": [{}, {}]},
                                    "configs": configs, "tpe_cost_s": 120.0}))
    cell = FitCell(study="s", family="chemgpt", laws=["power"], confidence=0.9, bootstrap=0,
                   metrics=_metrics(tmp_path, runs), generation={}, selected=str(selected), out_dir=str(tmp_path / "fit"))
    spent = run_fit(cell)["cost"]
    assert len(json.loads((tmp_path / "fit" / "cells.json").read_text())) == 4
    assert spent["train_s"] == 800.0 and spent["spent_s"] == 920.0
    assert spent["exhaustive_s"] == 2400.0 and spent["saving"] == pytest.approx(1 - 920 / 2400, abs=1e-4)


def test_a_fit_stage_that_fails_midway_leaves_the_previous_tables_and_plots_together(tmp_path, monkeypatch):
    from chemspec.compiler.cells import FitCell
    from chemspec.runtime import plots
    from chemspec.runtime.fit import run_fit

    def cell(loss: float) -> FitCell:
        runs = {f"{m}-{n}": (loss * 10 / n, 1.0) for m in ("xs", "s") for n in (100, 200, 300)}
        return FitCell(study="s", family="chemgpt", laws=["power"], confidence=0.9, bootstrap=0,
                       metrics=_metrics(tmp_path, runs), generation={}, selected=str(tmp_path / "none.json"), out_dir=str(tmp_path / "fit"))

    run_fit(cell(1.0))
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "fit").rglob("*") if p.is_file()}

    def broken(*args):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(plots, "write_plots", broken)
    with pytest.raises(RuntimeError, match="plotting failed"):
        run_fit(cell(2.0))
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "fit").rglob("*") if p.is_file()}
    assert after == before and {p.name for p in before} >= {"cells.json", "fit.json", "scaling.png"}


def test_a_run_that_ended_with_a_non_finite_validation_loss_is_left_out_not_the_whole_fit(tmp_path):
    from chemspec.runtime.fit import cells_table, fits, read_runs

    runs, _ = read_runs(_metrics(tmp_path, {f"{m}-{n}": (float("nan") if (m, n) == ("s", 300) else 1 + 10 / n, 1.0)
                                            for m in ("xs", "s") for n in (100, 200, 300, 400)}))
    rows = cells_table(runs)
    failed = [r for r in rows if r["status"] != "ok"]
    assert [(r["cell"], r["status"], r["reason"]) for r in failed] == [
        ("train@s-300", "failed", "its validation loss is nan, not a finite number")]
    flat, _ = fits(rows, ["power"], 0.9)
    assert {(f["group"], f["status"], f["n"]) for f in flat if f["axis"] == "data"} == {("xs", "ok", 4), ("s", "ok", 3)}
    archived = [{**r, "status": "ok"} for r in rows]  # as cells.json held it before such rows were marked failed
    assert fits(archived, ["power"], 0.9)[0] == flat


@pytest.mark.parametrize(("edit", "said"), [
    ({"val_loss": -1.0}, "status 'ok' with 'val_loss' -1.0, not a positive number"),
    ({"val_loss": "0.5"}, "'val_loss' is \"0.5\", not a number or null"),
    ({"params": "many"}, "'params' is \"many\", not a whole number"),
    ({"params": 0}, "status 'ok' with 'params' 0, not a whole number above 0"),
    ({"wall_time_s": "x"}, "'wall_time_s' is \"x\", not a number"),
    ({"status": "oom"}, "'status' is \"oom\", none of ok, diverged, failed, gated"),
])
def test_an_edited_metrics_file_is_named_with_its_key_before_anything_is_fitted(tmp_path, edit, said):
    import json

    from chemspec.errors import InputError
    from chemspec.runtime.fit import read_runs

    paths = _metrics(tmp_path, {"xs-100": (1.0, 1.0), "xs-200": (0.9, 1.0)})
    path = tmp_path / "xs-200.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    with pytest.raises(InputError, match=re.escape(f"{path}: {said}; restore it (`dvc checkout {path}`")):
        read_runs(paths)
    nan = tmp_path / "xs-100.json"
    nan.write_text(json.dumps({**json.loads(nan.read_text()), "val_loss": float("inf")}))
    mended = {k: 1.0 for k in edit if k not in ("params", "status")}
    path.write_text(json.dumps({**json.loads(path.read_text()), **mended, "params": 10, "status": "ok"}))
    assert read_runs(paths)[0]["xs-100"]["status"] == "failed", "a loss that is not finite fails the cell"


def test_a_rank_select_did_not_keep_is_read_as_gated_and_left_out(tmp_path):
    """hpo.tpe.margin (or a configuration that diverged in TPE) leaves ranks untrained: train writes them so."""
    import json

    from chemspec.runtime.fit import cells_table, read_runs

    paths = _metrics(tmp_path, {"xs-100": (1.0, 1.0)})
    gated = tmp_path / "xs-100-r2.json"
    gated.write_text(json.dumps({"cell": "train@xs-100-r2", "model": "xs", "data_size": 100, "hparams": None,
                                 "epochs": 0, "params": 0, "val_loss": None, "wall_time_s": 0.0, "status": "gated",
                                 "reason": "rank 2 was not kept by select"}))
    runs, _ = read_runs({**paths, "xs-100-r2": str(gated)})
    assert runs["xs-100-r2"]["status"] == "gated"
    assert [(r["cell"], r["status"]) for r in cells_table(runs)] == [("train@xs-100", "ok")]


def test_bootstrap_resamples_whose_exponent_sits_on_a_bound_open_the_interval_instead_of_vanishing():
    """A noisy 4 x 3 grid: about a tenth of the resamples put α at EXPONENT_MAX; dropping them gave a
    closed [0.09, 1.87] where the profile interval is open."""
    from chemspec.runtime.fit import bootstrap, finite_json
    from chemspec.runtime.laws import joint_law

    rng = np.random.default_rng(7)
    n, d = np.repeat(np.logspace(5, 6.5, 4), 3), np.tile(np.logspace(4, 5, 3), 4)
    y = (0.5 + 5 * n ** -0.17 + 5 * d ** -0.15) * np.exp(rng.normal(0, 0.05, len(n)))
    assert joint_law(list(n), list(d), list(y), 0.95)["ci_alpha_profile"][1] == float("inf")
    rows = [{"params": float(a), "data_size": float(b), "val_loss": float(v), "status": "ok"} for a, b, v in zip(n, d, y)]
    result = bootstrap(rows, 100, 0.95)
    assert result["status"] == "ok" and result["on_bound"] >= 5
    assert result["ci_alpha"][0] > 0 and result["ci_alpha"][1] == float("inf")
    assert finite_json(result)["ci_alpha"][1] is None
    assert result["ci_beta"][1] < 5
