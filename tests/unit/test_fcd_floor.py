"""FCD's floor in the fits, the spec and the identities: the FCD law is fitted to the excess over the floor
measured at the count every cell is scored on; that count is validated and in the sample cells' identity."""

from __future__ import annotations

import numpy as np
import pytest

from chemspec.compiler import expand, identity
from chemspec.errors import RunError, SpecError
from chemspec.runtime.fit import power_law
from chemspec.runtime.quality import attach, excess_fit, fits
from chemspec.runtime.io import write_json
from chemspec.specs import load_study
from tests.conftest import tiny_study, write_spec

SIZES = [1e3, 3e3, 1e4, 3e4, 1e5]
FLOOR, ALPHA = 2.6, 0.45


def _fcd(noise: float = 0.02) -> list[float]:
    """FCD = floor + 300·x^−α, the excess with a 2% multiplicative noise."""
    jitter = np.exp(np.random.default_rng(0).normal(0, noise, len(SIZES)))
    return [FLOOR + 300 * x ** -ALPHA * j for x, j in zip(SIZES, jitter)]


def test_the_excess_fit_recovers_the_exponent_that_a_plain_power_law_on_fcd_misses():
    fcd = _fcd()
    fit = excess_fit(SIZES, fcd, FLOOR, 900, 0.95)
    assert fit["status"] == "ok" and fit["exponent"] == pytest.approx(ALPHA, abs=0.03)
    assert fit["ci"][0] <= ALPHA <= fit["ci"][1]
    assert fit["quantity"] == "excess FCD over the 900-sample floor of 2.6" and fit["fcd"] == fcd
    assert fit["y"] == pytest.approx([v - FLOOR for v in fcd])
    raw = power_law(SIZES, fcd, 0.95)  # flattened by the floor: its interval lies well below the truth
    assert raw["ci"][1] < ALPHA - 0.1


def test_a_cell_at_the_floor_makes_its_group_unfittable_and_says_why():
    fcd = _fcd()[:4] + [FLOOR - 0.1]
    fit = excess_fit(SIZES, fcd, FLOOR, 900, 0.95)
    assert fit["status"] == "cannot fit" and "exponent" not in fit
    assert "FCD [2.5] at or below the floor (2.6)" in fit["reason"] and "generation.fcd_molecules" in fit["reason"]


def test_cells_within_the_floors_noise_have_no_excess_to_fit():
    """A reviewer's run: a floor of 87.9 ± 15 at 2 molecules, cells within a fraction of that spread of it,
    which a plain test against the floor's mean fitted to an exponent of 2.35."""
    fcd = [90.0, 88.5, 88.0]
    assert excess_fit([200, 400, 800], fcd, 87.92, 2, 0.95)["status"] == "ok", "the spread unknown: as before"
    fit = excess_fit([200, 400, 800], fcd, 87.92, 2, 0.95, spread=15.0)
    assert fit["status"] == "cannot fit" and "exponent" not in fit
    assert fit["reason"].startswith("FCD [90.0, 88.5, 88.0] within the floor's noise (87.9 ± 15): no excess")


def test_fits_take_the_floors_spread_from_the_cells():
    rows = [_row(x, FLOOR + 0.05) for x in SIZES[:3]]
    for row in rows:
        row["generation"]["fcd_floor_std"] = 0.1
    (fit,) = [f for f in fits(rows, 0.95) if f["axis"] == "data"]
    assert fit["status"] == "cannot fit" and "within the floor's noise (2.6 ± 0.1)" in fit["reason"]


def _row(size: float, fcd: float | None, floor: float = FLOOR) -> dict:
    return {"cell": f"train@xs-{int(size)}", "status": "ok", "model": "xs", "params": 1000, "data_size": int(size),
            "generation": {"fcd": fcd, "fcd_floor": floor, "fcd_molecules": 900}}


def test_fits_leave_out_cells_without_fcd_at_the_common_count_and_label_the_rest():
    rows = [_row(x, v) for x, v in zip(SIZES, _fcd())] + [_row(3e5, None)]  # too few valid molecules
    data = [f for f in fits(rows, 0.95) if f["axis"] == "data"]
    assert len(data) == 1 and data[0]["metric"] == "fcd_excess" and data[0]["x"] == SIZES
    assert data[0]["exponent"] == pytest.approx(ALPHA, abs=0.03) and data[0]["floor"] == FLOOR
    assert data[0]["left_out"] == ["xs-300000"], "a fit on the survivors says which cells it lost"
    from chemspec.report import _fcd_quantity
    assert _fcd_quantity(data[0]) == (f"excess FCD over the 900-sample floor of {FLOOR:.3g} (left out, with fewer "
                                      "than 900 valid molecules to score: xs-300000)")
    with pytest.raises(RunError, match=r"scored against different FCD floors"):
        fits(rows[:4] + [_row(1e5, 5.0, floor=3.0)], 0.95)


def test_attach_carries_each_cells_floor_and_count(tmp_path):
    record = {"status": "ok", "validity": 1.0, "trivial": 0.0, "uniqueness": 1.0, "novelty": 1.0,
              "internal_diversity": 0.9, "fcd": 12.0, "wasserstein": None, "fcd_molecules": 900,
              "fcd_floor": {"value": FLOOR, "std": 0.03, "draws": 3, "molecules": 900}}
    write_json(tmp_path / "generation.json", record)
    (row,) = attach([_row(1e3, None)], {"xs-1000": str(tmp_path / "generation.json")})
    assert row["generation"]["fcd_floor"] == FLOOR and row["generation"]["fcd_molecules"] == 900


def _cells(tmp_path, **generation):
    return expand(load_study(write_spec(tmp_path / "s.yaml", tiny_study(generation={"samples": 100, **generation}))))


@pytest.mark.parametrize("change,sample_moves,reference_moves", [
    ({"fcd_molecules": 90}, False, False),  # the default, nine tenths of samples, spelled out
    ({"fcd_molecules": 80}, True, True),
    ({"batch_size": 50}, True, False),      # other molecules are sampled; the floor is the same
])
def test_the_fcd_count_moves_sample_and_reference_identities_and_no_train_cell(tmp_path, change, sample_moves,
                                                                              reference_moves):
    base, other = _cells(tmp_path), _cells(tmp_path, **change)
    assert base.sample["xs-200"].fcd_molecules == 90 and base.reference.fcd_molecules == 90
    assert (identity(other.sample["xs-200"]) != identity(base.sample["xs-200"])) is sample_moves
    assert (identity(other.reference) != identity(base.reference)) is reference_moves
    assert [identity(c) for c in other.train.values()] == [identity(c) for c in base.train.values()]


@pytest.mark.parametrize("generation,message", [
    ({"samples": 100, "fcd_molecules": 101}, r"generation.fcd_molecules: 101 is more than generation.samples \(100\)"),
    ({"samples": 2000, "fcd_molecules": 1500},
     r"generation.fcd_molecules: FCD's floor is measured on 1500 real molecules .* holds only 1000 for certain"),
])
def test_an_fcd_count_no_cell_or_floor_could_reach_is_refused(tmp_path, generation, message):
    with pytest.raises(SpecError, match=message):
        load_study(write_spec(tmp_path / "s.yaml", tiny_study(generation=generation)))
