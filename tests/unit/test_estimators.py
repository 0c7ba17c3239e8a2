"""TPE estimators against hand-computed values, and the select stage's ranking and reasons."""

from __future__ import annotations

import json

import pytest

from chemspec.compiler.cells import SelectCell, choice_file
from chemspec.errors import InputError, RunError
from chemspec.runtime.io import finite_json
from chemspec.runtime.tpe import estimate, read_loss_log, run_select, tse, tse_e, tse_ema, window_steps
from chemspec.runtime.train import loss_csv

LOG = [[4.0, 2.0], [2.0, 1.0, 0.0], [1.0]]  # per-epoch means 3, 1, 1


def test_tse_sums_per_epoch_means():
    assert tse(LOG) == pytest.approx(5.0)


def test_tse_window_counts_only_its_epochs():
    assert tse(LOG, window=2) == pytest.approx(4.0)
    assert tse(LOG, window=1) == pytest.approx(3.0)


def test_tse_is_comparable_across_batch_sizes():
    # The same per-epoch losses seen in 2 or 8 steps per epoch give the same estimate.
    assert tse([[2.0, 2.0], [1.0, 1.0]]) == tse([[2.0] * 8, [1.0] * 8]) == pytest.approx(3.0)


def test_a_window_a_step_into_the_next_epoch_counts_that_step_as_its_share_of_an_epoch():
    # 13 steps an epoch at batch 32, 4 at batch 128: the same window ends one step into epoch 1 for
    # the first; that step must not weigh as a whole epoch against the second's single epoch.
    small, large = [[2.0] * 13, [2.7]], [[2.6] * 4]
    assert tse(small, steps_per_epoch=13) == pytest.approx(2.0 + 2.7 / 13)
    assert tse(small, steps_per_epoch=13) < tse(large, steps_per_epoch=4)
    assert tse(small) > tse(large), "counted whole, the one step reverses the ranking"
    assert tse_ema(small, 0.5, steps_per_epoch=13) == pytest.approx((0.5 * 2.0 + 2.7 / 13) / (0.5 + 1 / 13))


def test_tse_e_takes_the_rest_of_a_partial_last_epochs_weight_from_the_epoch_before():
    """Its last epoch alone, one step of 59, would score that one step as if it were the whole estimate."""
    crossed, whole = [[1.0] * 59, [0.9]], [[1.0] * 30]
    assert tse_e(crossed, 1, steps_per_epoch=59) == pytest.approx((58 * 1.0 + 0.9) / 59)
    assert tse_e(whole, 1, steps_per_epoch=30) == pytest.approx(1.0)
    assert tse_e([[2.0] * 13, [2.7]], 2, steps_per_epoch=13) == pytest.approx(2.0 + 2.7 / 13)


def test_a_span_keeps_rounding_to_whole_steps_from_favouring_a_batch_size():
    """A 20% window of one epoch is 117 of 586 steps at batch 256 and 59 of 293 at batch 512: equal losses
    must give equal estimates, which the shares alone (0.1997 against 0.2014 of an epoch) would not."""
    at_256, at_512 = [[1.0] * 117], [[1.0] * 59]
    assert tse(at_256, steps_per_epoch=586) != pytest.approx(tse(at_512, steps_per_epoch=293), rel=1e-3)
    for kind in ("tse", "tse_e"):
        spec = {"estimator": kind, "last_epochs": 1}
        assert estimate(at_256, [], spec, 586, 0.2) == estimate(at_512, [], spec, 293, 0.2) == pytest.approx(0.2)
    assert estimate([[2.0] * 13, [2.7]], [], {"estimator": "tse"}, 13, 1.05) == \
        pytest.approx((13 * 2.0 + 2.7) / 14 * 1.05)


def test_whole_epochs_count_whole_with_or_without_the_epoch_length():
    assert tse(LOG) == tse([[4.0, 2.0], [1.5, 0.5], [1.0, 1.0]], steps_per_epoch=2) == pytest.approx(5.0)


def test_tse_e_sums_the_last_epochs_of_the_window():
    assert tse_e(LOG, 2) == pytest.approx(2.0)
    assert tse_e(LOG, 1) == pytest.approx(1.0)


def test_tse_ema_is_normalised_by_its_weights():
    # weights 0.25, 0.5, 1 on means 3, 1, 1: (0.75 + 0.5 + 1) / 1.75
    assert tse_ema(LOG, 0.5) == pytest.approx(2.25 / 1.75)
    assert tse_ema([[2.0], [2.0]], 0.3) == pytest.approx(2.0)


def test_val_estimator_takes_the_last_validation_loss():
    assert estimate(LOG, [3.0, 2.5], {"estimator": "val"}) == 2.5


def test_unknown_estimator_is_refused():
    with pytest.raises(RunError, match="hpo.tpe.estimator 'magic' is unknown"):
        estimate(LOG, [1.0], {"estimator": "magic"})


def test_loss_log_round_trips_through_csv_by_column_name(tmp_path):
    path = tmp_path / "loss.csv"
    path.write_bytes(loss_csv(LOG))
    assert path.read_text().splitlines()[0] == "epoch,step,loss"
    assert read_loss_log(path) == LOG
    swapped = tmp_path / "swapped.csv"
    swapped.write_text("loss,epoch,step\n4.0,0,0\n2.0,0,1\n1.0,1,2\n")
    assert read_loss_log(swapped) == [[4.0, 2.0], [1.0]]


def _tpe(tmp_path, name: str, value: float | list[list[float]], lr: float, status: str = "ok",
         val: float = 1.0) -> str:
    """A TPE run's folder: its result and a loss log whose tse is `value` (one epoch), or the log `value`."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "estimate.json").write_text(json.dumps({
        "hparams": {"learning_rate": lr, "batch_size": 32}, "val_history": [val], "wall_time_s": 2.0,
        "status": status}))
    (folder / "loss.csv").write_bytes(loss_csv(value if isinstance(value, list) else [[value]]))
    return str(folder)


def _select(tmp_path, dirs: dict[str, str], keep: int = 1, groups: dict | None = None, margin: float | None = None,
            estimator: str = "tse", out: str = "selected.json") -> dict:
    groups = groups or {"*": sorted(dirs)}
    results = str(tmp_path / "results")
    return run_select(SelectCell(
        keep=keep, margin=margin, estimator={"estimator": estimator, "last_epochs": 1, "ema_decay": 0.9},
        tpe_dirs=dirs, groups=groups, out=str(tmp_path / out),
        choices={g: [choice_file(results, g, rank) for rank in range(1, keep + 1)] for g in groups}))


def test_select_keeps_the_lowest_estimates_and_says_why(tmp_path):
    dirs = {"a": _tpe(tmp_path, "a", 3.0, 1e-3), "b": _tpe(tmp_path, "b", 2.0, 3e-3),
            "c": _tpe(tmp_path, "c", float("nan"), 1e-1)}
    result = _select(tmp_path, dirs)
    assert result["kept"] == {"*": [{"learning_rate": 3e-3, "batch_size": 32}]}
    reasons = {c["name"]: (c["rank"], c["kept"], c["reason"]) for c in result["configs"]}
    assert reasons["b"] == (1, True, "rank 1 of 2 by tse")
    assert reasons["a"][:2] == (2, False) and "hpo.tpe.keep" in reasons["a"][2]
    assert reasons["c"] == (None, False, "diverged during TPE")
    assert result["tpe_cost_s"] == 6.0
    written = json.loads((tmp_path / "selected.json").read_text())
    assert written == finite_json(result) and next(c for c in written["configs"] if c["name"] == "c")["estimate"] is None
    assert json.loads((tmp_path / "results" / "selected" / "r1.json").read_text()) == {
        "group": "*", "rank": 1, "hparams": {"learning_rate": 3e-3, "batch_size": 32}}


def test_select_estimates_from_the_loss_logs_and_another_estimator_keeping_the_same_choice_rewrites_nothing(
        tmp_path):
    """The train cells depend on their choice file alone: an estimator that ranks otherwise but keeps the same
    configuration leaves it byte for byte (so DVC retrains nothing); one that keeps another changes it."""
    dirs = {"a": _tpe(tmp_path, "a", [[4.0], [1.0]], 1e-3, val=5.0), "b": _tpe(tmp_path, "b", [[2.0], [2.0]], 3e-3,
                                                                               val=2.5)}
    choice = tmp_path / "results" / "selected" / "r1.json"
    chosen = {}
    for name in ("tse", "val", "tse_e"):
        result = _select(tmp_path, dirs, estimator=name, out=f"{name}.json")
        chosen[name] = choice.read_bytes()
        assert {c["name"]: c["estimate"] for c in result["configs"]} == {
            "tse": {"a": 5.0, "b": 4.0}, "val": {"a": 5.0, "b": 2.5}, "tse_e": {"a": 1.0, "b": 2.0}}[name]
    assert chosen["tse"] == chosen["val"] != chosen["tse_e"]
    assert json.loads(chosen["tse_e"])["hparams"]["learning_rate"] == 1e-3


def test_select_without_tpe_results_says_what_to_run(tmp_path):
    with pytest.raises(RunError, match="run `dvc repro` so that tpe@a runs first"):
        _select(tmp_path, {"a": str(tmp_path / "a")})


@pytest.mark.parametrize("text,message", [
    ("epoch,step\n0,0\n", r"a/loss.csv is not a loss log \(columns epoch, step, loss\).*line 2.*restore it"),
    ("epoch,step,loss\n", r"a/loss.csv holds no training step; run tpe@a again \(`dvc repro -f -s tpe@a`\)"),
])
def test_a_damaged_loss_log_is_named_with_the_fix_not_ranked(tmp_path, text, message):
    dirs = {"a": _tpe(tmp_path, "a", 3.0, 1e-3), "b": _tpe(tmp_path, "b", 2.0, 3e-3)}
    (tmp_path / "a" / "loss.csv").write_text(text)
    with pytest.raises(InputError, match=message):
        _select(tmp_path, dirs)


def test_margin_drops_configurations_far_from_the_best(tmp_path):
    dirs = {"a": _tpe(tmp_path, "a", 2.0, 1e-3), "b": _tpe(tmp_path, "b", 2.05, 3e-3), "c": _tpe(tmp_path, "c", 3.0, 1e-2)}
    result = _select(tmp_path, dirs, keep=3, margin=0.05)
    assert [hp["learning_rate"] for hp in result["kept"]["*"]] == [1e-3, 3e-3]
    dropped = next(c for c in result["configs"] if c["name"] == "c")
    assert not dropped["kept"] and "hpo.tpe.margin" in dropped["reason"]
    assert json.loads((tmp_path / "results" / "selected" / "r3.json").read_text())["hparams"] is None


def test_each_model_size_group_is_ranked_on_its_own(tmp_path):
    dirs = {"xs-a": _tpe(tmp_path, "xs-a", 2.0, 1e-3), "xs-b": _tpe(tmp_path, "xs-b", 3.0, 3e-3),
            "s-a": _tpe(tmp_path, "s-a", 3.0, 1e-3), "s-b": _tpe(tmp_path, "s-b", 2.0, 3e-3)}
    result = _select(tmp_path, dirs, groups={"xs": ["xs-a", "xs-b"], "s": ["s-a", "s-b"]})
    assert result["kept"] == {"xs": [{"learning_rate": 1e-3, "batch_size": 32}],
                              "s": [{"learning_rate": 3e-3, "batch_size": 32}]}
    assert json.loads((tmp_path / "results" / "selected" / "s-r1.json").read_text())["hparams"][
        "learning_rate"] == 3e-3


def _calibration_cell(tmp_path, runs: dict[str, tuple[float, str, float]], keep: int, full_diverged: tuple = (),
                      groups: dict[str, list[str]] | None = None, margin: float | None = None):
    """TPE and calibrate folders of configurations {name: (converged loss, TPE status, TPE loss)}: TPE
    runs cost 20 s, full runs 100 s; the full runs of `full_diverged` diverged."""
    from chemspec.compiler.cells import CalibrationCell

    dirs = {"tpe": {}, "full": {}}
    for name, (converged, status, short_loss) in runs.items():
        for kind, wall, loss in (("tpe", 20.0, short_loss), ("full", 100.0, converged)):
            folder = tmp_path / kind / name
            folder.mkdir(parents=True)
            (folder / "estimate.json").write_text(json.dumps({
                "hparams": {"name": name}, "val_loss": loss, "val_history": [loss], "wall_time_s": wall,
                "status": status if kind == "tpe" else "diverged" if name in full_diverged else "ok"}))
            (folder / "loss.csv").write_bytes(loss_csv([[loss, loss]]))
            dirs[kind][name] = str(folder)
    return CalibrationCell(tpe_dirs=dirs["tpe"], full_dirs=dirs["full"], groups=groups or {"*": sorted(runs)},
                           budget_fraction=0.2, estimator={"estimator": "tse", "last_epochs": 1, "ema_decay": 0.9},
                           keep=keep, margin=margin, out_dir=str(tmp_path / "calibration"))


def test_each_model_sizes_search_is_scored_and_kept_apart(tmp_path):
    """Under scope model_size the sizes' losses differ by far more than their configurations': pooled, the
    xs configurations would look badly ranked; scored apart, each search ranks its own perfectly."""
    from chemspec.runtime.calibration import run_calibration

    runs = {"xs-a": (3.0, "ok", 4.0), "xs-b": (3.1, "ok", 4.1), "xs-c": (3.2, "ok", 4.2),
            "s-a": (1.2, "ok", 2.0), "s-b": (1.1, "ok", 2.1), "s-c": (1.0, "ok", 2.3)}  # s's search misranks
    groups = {"xs": ["xs-a", "xs-b", "xs-c"], "s": ["s-a", "s-b", "s-c"]}
    run_calibration(_calibration_cell(tmp_path, runs, keep=1, groups=groups))
    result = json.loads((tmp_path / "calibration" / "calibration.json").read_text())
    assert sorted(result["scores"]) == sorted(f"{e} ({g})" for e in ("tse", "tse_e", "tse_ema", "val") for g in groups)
    xs, small = result["scores"]["tse (xs)"], result["scores"]["tse (s)"]
    assert xs["n"] == 3 and xs["spearman"] == pytest.approx(1.0) and xs["regret"] == pytest.approx(0.0)
    assert small["spearman"] == pytest.approx(-1.0) and small["regret"] == pytest.approx(0.2)
    assert result["cost"]["kept"] == ["s-a", "xs-a"], "the best of each search, as select keeps them"
    assert result["cost"]["tpe_then_best_s"] == 6 * 20.0 + 2 * 100.0


def test_the_calibration_cost_keeps_what_the_margin_lets_select_keep(tmp_path):
    from chemspec.runtime.calibration import run_calibration

    runs = {"a": (1.0, "ok", 2.0), "b": (1.1, "ok", 2.5), "c": (1.2, "ok", 2.6)}
    run_calibration(_calibration_cell(tmp_path, runs, keep=2, margin=0.05))
    cost = json.loads((tmp_path / "calibration" / "calibration.json").read_text())["cost"]
    assert cost["kept"] == ["a"] and cost["tpe_then_best_s"] == 3 * 20.0 + 100.0


def test_calibration_charges_every_configuration_it_ran_and_the_full_runs_tpe_would_keep(tmp_path):
    """Two usable configurations cannot be scored, yet TPE still picks one and pays for its full run;
    the diverged configuration's TPE and full runs cost compute on both sides."""
    from chemspec.runtime.calibration import run_calibration

    cell = _calibration_cell(tmp_path, {"a": (1.0, "ok", 2.0), "b": (1.2, "ok", 2.5),
                                        "c": (1.1, "diverged", 9.0)}, keep=1)
    run_calibration(cell)
    result = json.loads((tmp_path / "calibration" / "calibration.json").read_text())
    assert result["scores"]["tse"]["status"] == "cannot score"
    assert result["cost"] == {"tpe_s": 60.0, "exhaustive_s": 300.0, "kept": ["a"], "tpe_then_best_s": 160.0,
                              "saving": pytest.approx(1 - 160 / 300, abs=1e-4)}


def test_calibration_with_keep_two_pays_for_two_full_runs(tmp_path):
    from chemspec.runtime.calibration import run_calibration

    cell = _calibration_cell(tmp_path, {name: (1.0 + i / 10, "ok", 2.0 + i / 10) for i, name in enumerate("abcd")},
                             keep=2)
    run_calibration(cell)
    cost = json.loads((tmp_path / "calibration" / "calibration.json").read_text())["cost"]
    assert cost["kept"] == ["a", "b"] and cost["tpe_then_best_s"] == 80.0 + 200.0 and cost["exhaustive_s"] == 400.0


def test_a_diverged_first_pick_adds_to_why_an_estimator_could_not_be_scored(tmp_path):
    from chemspec.runtime.calibration import run_calibration

    runs = {"a": (1.0, "ok", 1.5), "b": (1.1, "ok", 2.5), "c": (1.2, "ok", 2.6)}
    run_calibration(_calibration_cell(tmp_path, runs, keep=1, full_diverged=("a",)))
    tse = json.loads((tmp_path / "calibration" / "calibration.json").read_text())["scores"]["tse"]
    assert tse["reason"] == ("needs at least 3 configurations with distinct values; its first pick, a, diverged in "
                             "full training")


def test_calibration_keeps_what_tpe_would_keep_even_if_its_full_run_diverged(tmp_path):
    """Select sees only the TPE run, so it keeps the best estimate and pays for that full run."""
    from chemspec.runtime.calibration import run_calibration

    cell = _calibration_cell(tmp_path, {"a": (1.0, "ok", 1.5), "b": (1.2, "ok", 2.5), "c": (1.1, "ok", 2.6)}, keep=1,
                             full_diverged=("a",))
    run_calibration(cell)
    result = json.loads((tmp_path / "calibration" / "calibration.json").read_text())
    assert result["cost"]["kept"] == ["a"] and result["cost"]["tpe_then_best_s"] == 160.0
    assert [r["status"] for r in result["configs"]] == ["diverged", "ok", "ok"]
    assert result["scores"]["tse"]["n"] == 2


def test_an_estimator_whose_first_pick_diverged_in_full_training_claims_no_regret(tmp_path):
    """Scored over the configurations that converged alone, it would rank them perfectly and claim 0."""
    from chemspec.report import calibration_rows
    from chemspec.runtime.calibration import run_calibration

    runs = {"a": (1.0, "ok", 1.5), "b": (1.1, "ok", 2.5), "c": (1.2, "ok", 2.6), "d": (1.3, "ok", 2.7)}
    run_calibration(_calibration_cell(tmp_path, runs, keep=1, full_diverged=("a",)))
    result = json.loads((tmp_path / "calibration" / "calibration.json").read_text())
    tse = result["scores"]["tse"]
    assert tse["spearman"] == pytest.approx(1.0) and tse["regret"] is None and tse["chosen_diverged"] == "a"
    assert tse["chosen"] is None
    row = next(r for r in calibration_rows(result) if r["estimator"] == "tse")
    assert row["note"] == "its first pick, a, diverged in full training"


def test_calibration_refuses_an_empty_tpe_log_as_select_does(tmp_path):
    """Ranked, an empty log's sum (0) would make that configuration every estimator's first pick."""
    from chemspec.runtime.calibration import run_calibration

    cell = _calibration_cell(tmp_path, {"a": (1.0, "ok", 1.5), "b": (1.1, "ok", 2.5), "c": (1.2, "ok", 2.6)}, keep=1)
    (tmp_path / "tpe" / "c" / "loss.csv").write_text("epoch,step,loss\n")
    with pytest.raises(InputError, match=r"tpe/c/loss.csv holds no training step; run tpe@c again"):
        run_calibration(cell)
    assert not (tmp_path / "calibration").exists()


def test_a_tpe_window_rounds_as_pythons_round_does_and_keeps_at_least_one():
    assert [window_steps(0.5, total) for total in (13, 15, 16)] == [6, 8, 8]
    assert window_steps(0.2, 12) == 2 and window_steps(0.01, 10) == 1
    assert window_steps(1.0, 12) == -1, "a whole run: no step limit"


def test_select_keeps_each_searchs_only_configuration_without_a_tpe_run(tmp_path):
    hparams = {"learning_rate": 3e-3, "batch_size": 32}
    unranked = {f"{size}-lr3e-3-bs32": hparams for size in ("xs", "s")}
    results = str(tmp_path / "results")
    groups = {size: [f"{size}-lr3e-3-bs32"] for size in ("xs", "s")}
    result = run_select(SelectCell(
        keep=1, margin=None, estimator={"estimator": "tse", "last_epochs": 1, "ema_decay": 0.9}, tpe_dirs={},
        unranked=unranked, groups=groups, out=str(tmp_path / "selected.json"),
        choices={g: [choice_file(results, g, 1)] for g in groups}))
    assert result["kept"] == {"s": [hparams], "xs": [hparams]} and result["tpe_cost_s"] == 0
    assert [(c["name"], c["rank"], c["unranked"]) for c in result["configs"]] == [
        ("s-lr3e-3-bs32", 1, True), ("xs-lr3e-3-bs32", 1, True)]
    for size in ("xs", "s"):
        assert json.loads((tmp_path / "results" / "selected" / f"{size}-r1.json").read_text()) == {
            "group": size, "rank": 1, "hparams": hparams}
