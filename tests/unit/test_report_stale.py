"""The report says when its results predate the study as compiled now (fit.json records its inputs)."""

from __future__ import annotations

import pytest

from chemspec.api.results import stale_note
from chemspec.compiler import expand, identity, upstream_identities
from chemspec.specs import load_study
from tests.conftest import tiny_study, write_spec


def _cells(tmp_path, **overrides):
    return expand(load_study(write_spec(tmp_path / "s.yaml", tiny_study(**overrides))))


def _fit_of(cells) -> dict:
    """fit.json's record of what it was computed from, as the fit stage writes it."""
    return {"identity": identity(cells.fit), "inputs": {key: identity(cells.train[key]) for key in cells.fit.metrics},
            "upstream": upstream_identities(cells)}


def test_results_of_the_compiled_study_are_not_stale(tmp_path):
    cells = _cells(tmp_path)
    assert stale_note(cells, _fit_of(cells), "params.yaml") is None


def test_a_changed_model_size_names_its_train_cells(tmp_path):
    fit = _fit_of(_cells(tmp_path))
    note = stale_note(_cells(tmp_path, **{"model.sizes.s.n_embd": 24}), fit, "params.yaml")
    assert note.startswith("these results predate params.yaml as compiled now: 3 train cells are new, changed or "
                           "gone (s-200, s-400, s-800); they are shown as they were computed. Run `dvc repro`")


def test_new_and_dropped_cells_and_fit_settings_are_named(tmp_path):
    fit = _fit_of(_cells(tmp_path))
    note = stale_note(_cells(tmp_path, **{"data.sizes": [200, 400, 1000], "fit.laws": ["power"]}), fit, "p.yaml")
    assert "6 train cells are new, changed or gone (m-1000, m-800, s-1000, ...); stages above them changed " \
           "(split); the fit settings changed; they are shown" in note


@pytest.mark.parametrize("override,above", [
    ({"data.source.max_molecules": 1400}, "data"), ({"data.validation": 150}, "split"),
    ({"hpo.tpe.budget_fraction": 0.25}, "2 TPE runs"), ({"hpo.grid.learning_rate": [3.0e-3, 2.0e-2]}, "select, 2 TPE runs"),
])
def test_a_change_above_the_train_cells_is_named_by_its_stage(tmp_path, override, above):
    """The train cells' own identities leave out their data, split and selection (DVC reruns them when those
    outputs change), so the fit records the identities of the cells above them too."""
    fit = _fit_of(_cells(tmp_path))
    note = stale_note(_cells(tmp_path, **override), fit, "params.yaml")
    assert note is not None and f"stages above them changed ({above})" in note, note


def test_fit_json_written_before_it_recorded_its_inputs_cannot_tell(tmp_path):
    assert stale_note(_cells(tmp_path, **{"model.sizes.s.n_embd": 24}), {"fits": []}, "params.yaml") is None
