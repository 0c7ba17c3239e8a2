"""Cross-section rules of a study that would otherwise cost hours of training for nothing: fit laws the grid
cannot fit, a TPE setting that means nothing under its scope, a TPE window that ends inside the warm-up."""

from __future__ import annotations

import pytest
import yaml

from chemspec.compiler import expand
from chemspec.errors import SpecError
from chemspec.runtime.fit import fits
from chemspec.specs import Study, load_study
from chemspec.words import count
from tests.conftest import QUICKSTART, REPO, tiny_study, write_spec

SIZES = {"xs": {"n_layer": 1, "n_embd": 16, "n_head": 2, "max_length": 64},
         "s": {"n_layer": 1, "n_embd": 32, "n_head": 2, "max_length": 64},
         "m": {"n_layer": 2, "n_embd": 32, "n_head": 2, "max_length": 64},
         "l": {"n_layer": 2, "n_embd": 64, "n_head": 2, "max_length": 64}}


def grid(tmp_path, models: int, data: int, laws: list[str] | None, **overrides) -> Study:
    """tiny_study() with the first `models` of SIZES and `data` data sizes; TPE on the smallest cells."""
    sizes = [200 * (i + 1) for i in range(data)]
    study = tiny_study(**{"model.sizes": dict(list(SIZES.items())[:models]), "data.sizes": sizes,
                          "data.source.max_molecules": sizes[-1] + 400, "hpo.tpe.data_size": sizes[0],
                          "hpo.tpe.model_size": "xs", **({"fit.laws": laws} if laws else {}), **overrides})
    return load_study(write_spec(tmp_path / "study.yaml", study))


def runtime_fits(study: Study, law: str) -> list[dict]:
    """What the fit stage makes of `law` on this grid, one converged cell per grid point, its loss following
    L = 1 + 40 N^-0.3 + 30 D^-0.4 with a little scatter (N: non-embedding parameters of the size's shape)."""
    rows = []
    for i, (name, size) in enumerate(study.model.sizes.items()):
        params = 12 * size.n_layer * size.n_embd**2
        for j, n in enumerate(study.data.sizes):
            loss = (1 + 40 * params**-0.3 + 30 * n**-0.4) * (1 + 0.003 * ((3 * i + 5 * j) % 7 - 3))
            rows.append({"model": name, "params": params, "data_size": n, "val_loss": loss, "status": "ok"})
    return fits(rows, [law], 0.95)[0]


@pytest.mark.parametrize("law,models,data,refused", [
    ("power", 2, 2, True), ("power", 2, 3, False), ("power", 3, 2, False), ("power", 1, 3, False),
    ("saturating", 3, 3, True), ("saturating", 3, 4, False), ("saturating", 4, 3, False),
    ("joint", 4, 2, True), ("joint", 2, 4, True), ("joint", 3, 3, False),
])
def test_a_named_law_is_refused_exactly_where_the_fit_stage_could_fit_nothing(tmp_path, law, models, data, refused):
    if not refused:
        study = grid(tmp_path, models, data, [law])
        assert any(row["status"] == "ok" for row in runtime_fits(study, law))
        return
    need = {"power": "each fit from at least 3 points, so it needs 3 data sizes, or 3 model sizes of at least 2 "
                     "distinct parameter counts",
            "saturating": "each fit from at least 4 points, so it needs 4 data sizes, or 4 model sizes of at least 3 "
                          "distinct parameter counts",
            "joint": "over the whole grid, so it needs 3 data sizes and 3 model sizes of distinct parameter count"}
    with pytest.raises(SpecError, match=rf"fit.laws: '{law}' .*{need[law]}; the grid has {count(data, 'data size')} "
                                        rf"and {count(models, 'model size')}, so every fit would end as 'cannot fit'; add "
                                        rf"sizes, or leave fit.laws out"):
        grid(tmp_path, models, data, [law])
    study = grid(tmp_path, models, data, None)  # the default laws: the fit stage says "cannot fit" for them
    assert all(row["status"] == "cannot fit" for row in runtime_fits(study, law))
    none = (f"fit.laws: the grid has {count(data, 'data size')} and {count(models, 'model size')}, too few for any "
            "law to fit (a power law needs 3 sizes on one axis), so the report will give no exponent; add sizes")
    assert (none in study.notes()) == (law == "power"), "said where no default law fits, as a note: it still trains"
    assert not any("too few for any law" in note for note in grid(tmp_path, 1, 1, None).notes()), "one cell: no grid"


def test_sizes_of_one_parameter_count_are_one_point_of_the_parameter_axis(tmp_path):
    heads = {**SIZES, "l": {**SIZES["m"], "n_head": 4}}  # m and l differ only in heads: one parameter count
    with pytest.raises(SpecError, match=r"fit.laws: 'joint' fits L\(N, D\) over the whole grid, so it needs 3 data "
                                        r"sizes and 3 model sizes of distinct parameter count; the grid has 3 data "
                                        r"sizes and 3 model sizes, 2 of distinct parameter count.*drop "
                                        r"'joint' from fit.laws"):
        grid(tmp_path, 3, 3, ["power", "joint"], **{"model.sizes": {k: heads[k] for k in ("xs", "m", "l")}})


def test_replicate_seeds_and_kept_ranks_add_no_points(tmp_path):
    more = {"fit.replicate_seeds": 3, "fit.replicate_cells": ["xs-200", "s-400"], "hpo.tpe.keep": 2,
            "hpo.tpe.scope": "model_size", "hpo.tpe.model_size": None}
    with pytest.raises(SpecError, match=r"fit.laws: 'power' .*the grid has 2 data sizes and 2 model sizes"):
        grid(tmp_path, 2, 2, ["power"], **more)


def test_a_tpe_model_size_under_the_model_size_scope_is_refused(tmp_path):
    with pytest.raises(SpecError, match=r"hpo.tpe.model_size: 'xs' chooses nothing under hpo.tpe.scope model_size, "
                                        r"where every model size runs its own TPE search; remove hpo.tpe.model_size, "
                                        r"or set hpo.tpe.scope to study to search on xs alone"):
        grid(tmp_path, 3, 3, None, **{"hpo.tpe.scope": "model_size"})
    assert grid(tmp_path, 3, 3, None, **{"hpo.tpe.scope": "model_size", "hpo.tpe.model_size": None}).hpo.tpe.scope \
        == "model_size"
    assert grid(tmp_path, 3, 3, None, **{"hpo.tpe.scope": "study"}).tpe_model_size() == "xs"


@pytest.mark.parametrize("warmup,devices,refused", [(47, 1, True), (46, 1, False), (24, 2, True), (23, 2, False)])
def test_a_tpe_window_that_ends_inside_the_warmup_is_refused(tmp_path, warmup, devices, refused):
    """Quickstart's TPE cells: 3,000 molecules at batch 64 is 47 steps an epoch (24 a rank on 2), 5 epochs, of
    which hpo.tpe.budget_fraction 0.2 trains 47 steps (24)."""
    text = (QUICKSTART.read_text().replace("warmup_steps: 20", f"warmup_steps: {warmup}")
            .replace("  accelerator: cpu\n", f"  accelerator: cpu\n  devices: {devices}\n"))
    (tmp_path / "q.yaml").write_text(text)
    if not refused:
        assert load_study(tmp_path / "q.yaml").training.scheduler.warmup_steps == warmup
        return
    window, total = {1: (47, 235), 2: (24, 120)}[devices]
    with pytest.raises(SpecError, match=rf"hpo.tpe.budget_fraction: 0.2 stops the TPE runs \(data size 3000, "
                                        rf"batch_size 64\) after {window} of their {total} optimiser steps, within "
                                        rf"training.scheduler.warmup_steps \({warmup}\), so TPE would rank the "
                                        rf"configurations on warm-up losses alone; lower warmup_steps below {window}, "
                                        rf"or raise budget_fraction to at least 0.21"):
        load_study(tmp_path / "q.yaml")


def test_a_tpe_window_inside_the_warmup_is_accepted_with_one_configuration_to_rank(tmp_path):
    text = QUICKSTART.read_text().replace("warmup_steps: 20", "warmup_steps: 47").replace(
        "learning_rate: [1.0e-3, 3.0e-3]", "learning_rate: [3.0e-3]")
    (tmp_path / "q.yaml").write_text(text)
    assert len(load_study(tmp_path / "q.yaml").hpo.grid.configs()) == 1


def test_a_warmup_longer_than_the_tpe_cells_whole_run_is_not_told_to_raise_the_budget(tmp_path):
    """TPE on the 1,000-molecule cells: 80 steps in all, which no budget_fraction can take past 80 warm-up steps."""
    text = QUICKSTART.read_text().replace("warmup_steps: 20", "warmup_steps: 80").replace("data_size: 3000",
                                                                                         "data_size: 1000")
    (tmp_path / "q.yaml").write_text(text)
    with pytest.raises(SpecError, match=r"(?s)2 errors.*training.scheduler.warmup_steps: 80 is at least the whole "
                                        r"run.*hpo.tpe.budget_fraction: 0.2 stops the TPE runs \(data size 1000, "
                                        r"batch_size 64\) after 16 of their 80 optimiser steps.*lower warmup_steps "
                                        r"below 16$"):
        load_study(tmp_path / "q.yaml")


def test_a_warmup_fraction_warms_each_run_over_its_share_and_is_refused_where_it_outlasts_the_tpe_window(tmp_path):
    """warmup_steps counts steps, so the TPE window of a larger batch size held more warm-up (science review)."""
    from chemspec.runtime.chemgpt import lr_lambda

    def study(scheduler: str) -> Study:
        (tmp_path / "q.yaml").write_text(QUICKSTART.read_text().replace("warmup_steps: 20", scheduler))
        return load_study(tmp_path / "q.yaml")

    scheduler = study("warmup_fraction: 0.1").training.scheduler
    assert (scheduler.warmup(235), scheduler.warmup(80), scheduler.warmup(5)) == (23, 8, 0)
    factor = lr_lambda(scheduler, 80, 1e-3)
    assert [factor(step) for step in (0, 7, 8, 79)] == pytest.approx([1 / 8, 1.0, 1.0, 1.0])
    with pytest.raises(SpecError, match=r"training.scheduler: warmup_steps and warmup_fraction both set the warm-up; "
                                        r"keep one"):
        study("warmup_steps: 20, warmup_fraction: 0.1")
    with pytest.raises(SpecError, match=r"hpo.tpe.budget_fraction: 0.2 stops the TPE runs \(data size 3000, batch_size "
                                        r"64\) after 47 of their 235 optimiser steps, within "
                                        r"training.scheduler.warmup_fraction 0.2 \(47 steps\), so TPE would rank the "
                                        r"configurations on warm-up losses alone; lower warmup_fraction below "
                                        r"budget_fraction, or raise budget_fraction above 0.2"):
        study("warmup_fraction: 0.2")
    assert study("warmup_fraction: 0.19").training.scheduler.warmup(235) == 44
    assert study("warmup_fraction: 0.19").notes() == []


def test_warmup_steps_that_fill_one_batch_sizes_tpe_window_more_than_anothers_are_noted(tmp_path):
    """At 3,000 molecules, 5 epochs and budget_fraction 0.2, a TPE run is 94 steps at batch 32 and 24 at 128."""
    text = QUICKSTART.read_text().replace("batch_size: [64]", "batch_size: [32, 128]")
    (tmp_path / "q.yaml").write_text(text)
    assert load_study(tmp_path / "q.yaml").notes() == [
        "training.scheduler.warmup_steps: 20 steps are 21% of a TPE run at batch_size 32 and 83% at batch_size 128, "
        "so TPE ranks the larger batch on more warm-up loss; warmup_fraction (a share of each run) warms every "
        "configuration up alike"]
    (tmp_path / "q.yaml").write_text(text.replace("warmup_steps: 20", "warmup_fraction: 0.05"))
    assert load_study(tmp_path / "q.yaml").notes() == []


def test_a_bootstrap_on_a_grid_too_small_for_it_is_refused(tmp_path):
    with pytest.raises(SpecError, match=r"fit.bootstrap: 200 resamples of the joint fit need a grid of at least 12 "
                                        r"cells; this one has 9, so it would end as 'cannot bootstrap'; set "
                                        r"fit.bootstrap to 0, or add data or model sizes"):
        grid(tmp_path, 3, 3, None, **{"fit.bootstrap": 200})
    assert grid(tmp_path, 4, 3, None, **{"fit.bootstrap": 200}).fit.bootstrap == 200


def test_estimator_options_that_calibration_reads_are_accepted_beside_another_estimator(tmp_path):
    """calibrate scores all four estimators with the spec's last_epochs and ema_decay."""
    text = QUICKSTART.read_text().replace("estimator: tse,", "estimator: tse, last_epochs: 1, ema_decay: 0.5, "
                                                             "calibrate: true,")
    (tmp_path / "q.yaml").write_text(text)
    assert load_study(tmp_path / "q.yaml").hpo.tpe.ema_decay == 0.5


def test_calibration_of_a_grid_of_one_configuration_is_refused(tmp_path):
    with pytest.raises(SpecError, match=r"hpo.tpe.calibrate: scores how TPE ranks the configurations of hpo.grid, "
                                        r"and it holds one \(which trains without a TPE run\); give hpo.grid more "
                                        r"values, or remove calibrate"):
        grid(tmp_path, 1, 1, None, **{"hpo.grid.learning_rate": [3.0e-3], "hpo.tpe.calibrate": True})


@pytest.mark.parametrize("family, given, cutoff, n_rbf", [
    ("spookynet", {}, 10 * 0.52917721067, 16),  # the reference's 10 bohr
    ("painn", {}, 5.0, 20),
    ("spookynet", {"cutoff": 4.0, "n_rbf": 8}, 4.0, 8),
])
def test_an_unset_cutoff_and_radial_basis_take_the_familys_defaults_into_every_cell(tmp_path, family, given, cutoff,
                                                                                    n_rbf):
    spec = yaml.safe_load((REPO / "specs" / "quickstart-nff.yaml").read_text())
    spec["model"] = {"family": family, "widths": spec["model"]["widths"], "depths": spec["model"]["depths"], **given}
    write_spec(tmp_path / "study.yaml", spec)
    cells = expand(load_study(tmp_path / "study.yaml"))
    assert {(cell.size["cutoff"], cell.size["n_rbf"]) for cell in cells.train.values()} == {(cutoff, n_rbf)}


@pytest.mark.parametrize("scheduler,message", [
    ("{name: constant, warmup_steps: 20, patience: 5}",
     r"training.scheduler.patience: the constant schedule does not read it \(the plateau schedule does\); "
     r"remove it"),
    ("{name: constant, min_lr: 1.0e-2}",
     r"training.scheduler.min_lr: the constant schedule does not read it \(the cosine and plateau schedules do\)"),
    ("{name: cosine, factor: 0.1}", r"training.scheduler.factor: the cosine schedule does not read it"),
    ("{name: plateau, warmup_steps: 5}",
     r"^1 error in study spec:\n[^\n]*training.scheduler.warmup_steps: the plateau schedule does not read it "
     r"\(the constant and cosine schedules do\); remove it, or set another name$"),
    ("{name: cosine, min_lr: 1.0e-3}", r"hpo.grid.learning_rate: \[0.001\] at or below training.scheduler.min_lr "
                                       r"\(0.001\), which the cosine schedule never lowers; lower min_lr below 0.001"),
    ("{name: plateau, min_lr: 5.0e-3}", r"hpo.grid.learning_rate: \[0.001, 0.003\] at or below "
                                        r"training.scheduler.min_lr \(0.005\), which the plateau schedule never"),
], ids=["constant-patience", "constant-min_lr", "cosine-factor", "plateau-warmup", "cosine-floor", "plateau-floor"])
def test_a_chemgpt_schedule_refuses_what_it_would_not_read_or_never_lower(tmp_path, scheduler, message):
    """Each field is in every cell's identity: one the schedule ignores would retrain the grid to the same
    result. A learning rate at min_lr stays where it is under cosine and plateau alike."""
    text = QUICKSTART.read_text().replace("scheduler: {name: constant, warmup_steps: 20}", f"scheduler: {scheduler}")
    (tmp_path / "q.yaml").write_text(text)
    with pytest.raises(SpecError, match=message):
        load_study(tmp_path / "q.yaml")


def test_a_chemgpt_schedule_that_names_only_what_it_reads_or_defaults_is_accepted(tmp_path):
    for scheduler in ("{name: cosine, warmup_steps: 20, min_lr: 1.0e-6}", "{name: plateau, patience: 2, factor: 0.3}",
                      "{name: plateau, warmup_steps: 0}", "{name: constant, warmup_steps: 20, min_lr: 1.0e-7}"):
        (tmp_path / "q.yaml").write_text(QUICKSTART.read_text().replace(
            "scheduler: {name: constant, warmup_steps: 20}", f"scheduler: {scheduler}"))
        assert load_study(tmp_path / "q.yaml").training.scheduler.name in scheduler
