"""The canonical atoms store (deterministic bytes and hash, whole structures in subsets) and per-element
reference energies fitted on training structures only."""

from __future__ import annotations

import re

import numpy as np
import pytest

from chemspec.errors import RunError
from chemspec.runtime.atoms import AtomsData, content_hash, fit_reference_energies, load_atoms, save_atoms
from chemspec.runtime.atoms_files import load_file



def synthetic(structures: int, seed: int, refs: dict[int, float]) -> AtomsData:
    """Random molecules whose energy is exactly the sum of per-element energies, plus a small noise."""
    rng = np.random.default_rng(seed)
    elements = np.array(sorted(refs))
    sizes = rng.integers(2, 12, structures)
    numbers = rng.choice(elements, sizes.sum())
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    energy = np.array([sum(refs[int(z)] for z in numbers[a:b]) for a, b in zip(offsets[:-1], offsets[1:])])
    atoms = len(numbers)
    return AtomsData(numbers, rng.normal(size=(atoms, 3)), rng.normal(size=(atoms, 3)),
                     energy + rng.normal(scale=1e-3, size=structures), offsets)


def residual(data: AtomsData, refs: dict[int, float]) -> np.ndarray:
    """Energies less the sum of their atoms' reference energies."""
    owner = np.repeat(np.arange(len(data)), data.sizes())
    return data.energy - np.bincount(owner, weights=[refs[int(z)] for z in data.numbers], minlength=len(data))


def test_reference_energies_are_recovered_from_training_structures_only():
    refs = {1: -13.6, 6: -1029.9, 7: -1485.3, 8: -2042.6}
    data = synthetic(60, 0, refs)
    poisoned = AtomsData(data.numbers, data.positions, data.forces,
                         np.where(np.arange(60) >= 40, 1e6, data.energy), data.offsets)
    fitted = fit_reference_energies(poisoned, np.arange(40))
    assert fitted.keys() == refs.keys()
    for z, value in refs.items():
        assert fitted[z] == pytest.approx(value, abs=2e-3)
    assert np.abs(residual(data, fitted)).max() < 1e-2


def test_ani1x_energies_after_subtraction_have_a_much_smaller_spread(shared):
    data, _ = load_file(shared / "ani" / "ani1x_n5.hdf5", "ani1x", "Hartree", "Angstrom")
    refs = fit_reference_energies(data, np.arange(len(data)))
    assert set(refs) == {1, 6, 7, 8}
    before, after = data.energy.std(), residual(data, refs).std()
    assert before > 500 and after < 0.01 * before


def test_store_round_trips_with_deterministic_bytes_and_hash(shared, tmp_path):
    data, _ = load_file(shared / "ani" / "ani1x_n5.hdf5", "ani1x", "Hartree", "Angstrom")
    save_atoms(tmp_path / "a.npz", data)
    save_atoms(tmp_path / "b.npz", load_atoms(tmp_path / "a.npz"))
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert list(np.load(tmp_path / "a.npz").files) == ["numbers", "positions", "forces", "energy", "offsets"]
    assert [np.load(tmp_path / "a.npz")[k].dtype.str for k in ("numbers", "positions", "energy")] == ["|u1", "<f4", "<f8"]
    loaded = load_atoms(tmp_path / "b.npz")
    assert content_hash(loaded) == content_hash(data.stored())
    np.testing.assert_allclose(loaded.forces, data.forces, rtol=1e-7, atol=0)
    np.testing.assert_array_equal(loaded.energy, data.energy)
    changed = AtomsData(data.numbers, data.positions, data.forces, data.energy + np.eye(1, 8, 7)[0] * 1e-9,
                        data.offsets)
    assert content_hash(changed) != content_hash(data)


def test_subset_keeps_each_structure_whole_and_in_the_given_order():
    data = synthetic(10, 2, {1: -13.6, 8: -2042.6})
    part = data.subset([7, 2, 7])
    assert len(part) == 3 and part.offsets[-1] == len(part.numbers)
    for s, original in enumerate([7, 2, 7]):
        for got, want in zip(part.structure(s), data.structure(original)):
            np.testing.assert_array_equal(got, want)


def test_repeats_are_structures_equal_in_atoms_positions_and_state_to_an_earlier_one():
    data = synthetic(6, 2, {1: -13.6, 8: -2042.6})
    doubled = data.subset([0, 1, 2, 0, 3, 1, 0, 4, 5])
    assert doubled.repeats() == [(3, 0), (5, 1), (6, 0)]
    states = {"charge": np.array([0, 0, 0, 1, 0, 0, 0, 0, 0]), "multiplicity": np.array([1, 1, 1, 2, 1, 1, 1, 1, 1])}
    charged = AtomsData(doubled.numbers, doubled.positions, doubled.forces, doubled.energy, doubled.offsets, **states)
    assert charged.repeats() == [(5, 1), (6, 0)], "a cation at a neutral's geometry is another structure"
    assert data.repeats() == []


def test_inconsistent_store_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="offsets"):
        AtomsData(np.array([1, 1]), np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(2), np.array([0, 1, 1]))
    np.savez(tmp_path / "store.npz", numbers=np.array([1]), positions=np.zeros((1, 3)))
    store = tmp_path / "store.npz"
    restore = re.escape(f"; restore it (`dvc checkout {store}` or `git checkout -- {store}`) or rerun the stage that "
                        "writes it")
    with pytest.raises(RunError, match=re.escape(f"{store} has no 'forces', 'energy', 'offsets'") + restore):
        load_atoms(store)
    store.write_bytes(store.read_bytes()[:200])
    with pytest.raises(RunError, match=re.escape(f"{store} is not a readable .npz archive (") + ".*" + restore):
        load_atoms(store)
