"""Generation metrics on small hand-checked sets, and FCD's sanity: ~0 against itself, large against nonsense,
a floor above 0 for real molecules at a finite count, and every cell scored at that one count."""

from __future__ import annotations

import csv
import gzip
import importlib.metadata
import random
import re

import numpy as np
import pytest
import selfies
from rdkit import Chem

from chemspec.errors import RunError
from chemspec.runtime.generation import (Reference, canonical, evaluate, fcd, internal_diversity, property_distances,
                                         reference, with_floor)
from chemspec.runtime.sample import to_smiles


def moses(n: int, skip: int = 0) -> list[str]:
    path = importlib.metadata.distribution("molsets").locate_file("moses/dataset/data/train.csv.gz")
    with gzip.open(path, "rt") as handle:
        rows = csv.reader(handle)
        next(rows)
        return [canonical(row[0])[0] for _, row in zip(range(n + skip), rows)][skip:]


def test_counts_on_a_hand_checked_set():
    samples = ["CCO", "OCC", "CCO", "c1ccccc1", "C1CC", "", "C", "CCN"]
    #           valid  =CCO   dup   valid      invalid  empty  1 atom  valid, in training
    result = evaluate(samples, training={"CCN", "CCCC"}, ref=reference(["CCO", "CCC", "c1ccccc1O"]), fcd_molecules=2)
    assert result["samples"] == 8
    assert result["validity"] == pytest.approx(6 / 8)       # CCO OCC CCO c1ccccc1 C CCN
    assert result["trivial"] == pytest.approx(2 / 8)        # the empty string and methane
    assert result["uniqueness"] == pytest.approx(4 / 6)     # CCO, c1ccccc1, C, CCN
    assert result["novelty"] == pytest.approx(3 / 4)        # CCN was in training
    assert 0 < result["internal_diversity"] <= 1
    assert set(result["wasserstein"]) == {"logp", "qed", "mw"}


def test_a_sample_that_never_ended_counts_as_invalid_not_as_an_empty_molecule():
    """Cut off at the length limit, a SELFIES prefix still decodes: 2-17 such samples in 300 were counted valid."""
    result = evaluate(["CCO", None, "", "CCCC"], training=set(), ref=reference(["CCO", "CCC"]), fcd_molecules=2)
    assert (result["samples"], result["unfinished"]) == (4, 1)
    assert result["validity"] == pytest.approx(2 / 4) and result["trivial"] == pytest.approx(1 / 4)


def test_the_report_says_how_molecules_were_sampled_and_what_counts_of_unfinished_ones():
    from chemspec.report import study_labels, unfinished_text

    spec = {"model": {"family": "chemgpt"}, "data": {"kind": "smiles", "representation": "selfies"},
            "generation": {"samples": 300, "temperature": 0.9, "top_k": 20, "top_p": 0.95}}
    assert study_labels(spec)["samples"] == ("Samples are SELFIES decoded to SMILES, 300 a cell at temperature 0.9, "
                                             "from the 20 likeliest tokens within top_p 0.95")
    spec["generation"] = {"samples": 1000, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
    assert study_labels(spec)["samples"].endswith(", 1,000 a cell at temperature 1, from all tokens")
    cells = [{"model": "xs", "data_size": 400, "generation": {"unfinished": 17, "samples": 300}},
             {"model": "s", "data_size": 400, "generation": {"unfinished": 2, "samples": 300}},
             {"model": "m", "data_size": 400, "generation": None}]
    assert unfinished_text(cells) == ("A sample that reached the length limit without [EOS] counts as invalid: 19 in "
                                      "all, at most 5.7% of a cell's (xs, 400).")
    assert unfinished_text([{**c, "generation": {"validity": 1.0}} for c in cells]) == "", "runs before said nothing"
    none = [{**c, "generation": {"unfinished": 0, "samples": 300}} for c in cells]
    assert unfinished_text(none) == "", "'0 in all, at most 0.0% of a cell's' said nothing worth a line"


def test_the_report_names_cells_whose_metrics_rest_on_fewer_valid_molecules_than_fcd_is_scored_on():
    from chemspec.report import few_valid_text

    def cell(model: str, validity: float | None, samples: int = 300) -> dict:
        return {"model": model, "data_size": 400,
                "generation": {"validity": validity, "samples": samples, "fcd_molecules": 50}}

    cells = [cell("xs", 3 / 300), cell("s", 0.1), cell("m", 1.0), cell("l", None, 0),
             {"model": "xl", "data_size": 400, "generation": None}]
    assert few_valid_text(cells) == ("In 2 cells, uniqueness, novelty, internal diversity and W₁ rest on fewer valid "
                                     "molecules than the 50 FCD is scored on: as few as 3 (xs, 400).")
    assert few_valid_text(cells[1:3]).startswith("In 1 cell, ") and few_valid_text(cells[2:]) == ""


def test_internal_diversity_counts_repeats_and_self_pairs_as_moses_does():
    result = evaluate(["CCO", "OCC", "C(O)C"], training=set(), ref=reference(["CCO", "CCC"]), fcd_molecules=2)
    assert result["uniqueness"] == pytest.approx(1 / 3)
    assert result["internal_diversity"] == pytest.approx(0.0)
    from rdkit import DataStructs
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)
    a, b = (generator.GetFingerprint(Chem.MolFromSmiles(s)) for s in ("CCO", "c1ccccc1"))
    pair = DataStructs.TanimotoSimilarity(a, b)
    assert internal_diversity(["CCO", "c1ccccc1"]) == pytest.approx(1 - (2 * pair + 2) / 4)
    assert internal_diversity(["CCO", "CCO", "c1ccccc1"]) == pytest.approx(1 - (4 * pair + 5) / 9)


def test_nothing_valid_gives_none_not_a_crash():
    result = evaluate(["C1CC", "", "(("], training=set(), ref=reference(["CCO", "CCC"]), fcd_molecules=2)
    assert result["validity"] == 0
    assert result["uniqueness"] is None and result["novelty"] is None and result["fcd"] is None
    assert result["wasserstein"] is None
    assert "need at least 2" in result["notes"]["fcd"] and result["internal_diversity"] is None


def test_property_distance_of_a_set_to_itself_is_zero():
    smiles = ["CCO", "c1ccccc1", "CC(=O)O", "CCN(CC)CC"]
    assert all(v == pytest.approx(0.0, abs=1e-12) for v in property_distances(smiles, reference(smiles)).values())
    shifted = property_distances([s + "CCCC" for s in smiles], reference(smiles))
    assert shifted["mw"] == pytest.approx(4 * 14.027, rel=1e-3)


def _shuffled(smiles: str, rng: random.Random) -> str:
    """The molecule's SELFIES symbols in random order: the same atoms, decoded into a scrambled graph."""
    symbols = re.findall(r"\[[^\]]*\]", selfies.encoder(smiles))
    rng.shuffle(symbols)
    return selfies.decoder("".join(symbols))


def test_fcd_is_zero_against_itself_and_large_against_shuffled_atoms():
    molecules, other = moses(500), moses(500, skip=500)
    rng = random.Random(0)
    shuffled = [_shuffled(s, rng) for s in other]
    statistics = reference(molecules)
    assert fcd(molecules, statistics) == pytest.approx(0.0, abs=1e-3)
    same_distribution = fcd(other, statistics)  # > 0 only by the finite-sample bias (about 1/n)
    nonsense = fcd(shuffled, statistics)
    assert nonsense > 2.5 * same_distribution
    assert nonsense - same_distribution > 15


def test_selfies_decode_and_undecodable_text():
    assert Chem.CanonSmiles(to_smiles("[C][C][O]", "selfies")) == "CCO"
    assert to_smiles("", "selfies") == ""
    assert to_smiles("CCO", "smiles") == "CCO"


def test_a_saved_reference_scores_as_the_one_computed(tmp_path):
    molecules, other = moses(200), moses(200, skip=200)
    computed = reference(molecules)
    computed.save(tmp_path / "reference.npz")
    loaded = Reference.load(tmp_path / "reference.npz")
    assert loaded.count == 200
    assert evaluate(other, set(), loaded, fcd_molecules=150) == evaluate(other, set(), computed, fcd_molecules=150)


def test_a_test_set_of_one_molecule_gives_no_fcd_and_says_why(tmp_path):
    one = reference(["CCO"])
    one.save(tmp_path / "reference.npz")
    result = evaluate(["CCO", "CCN", "c1ccccc1"], set(), Reference.load(tmp_path / "reference.npz"), fcd_molecules=2)
    assert result["fcd"] is None and result["notes"]["fcd"] == "the test set holds 1 molecules; need at least 2"
    assert result["wasserstein"] is not None


def test_a_damaged_reference_names_the_file(tmp_path):
    from chemspec.errors import InputError

    (tmp_path / "reference.npz").write_bytes(b"<<<<<<< HEAD\n")
    with pytest.raises(InputError, match=r"reference.npz is not a readable .npz archive .*dvc checkout"):
        Reference.load(tmp_path / "reference.npz")
    np.savez(tmp_path / "reference.npz", count=np.array(3))
    with pytest.raises(InputError, match=r"reference.npz has no 'property_logp', 'property_qed', 'property_mw'"):
        Reference.load(tmp_path / "reference.npz")


@pytest.fixture(scope="module")
def split_moses():
    """500 test molecules and 900 others, shuffled (MOSES's rows are not), with the floor at 150 molecules."""
    molecules = moses(1400)
    random.Random(0).shuffle(molecules)
    test, outside = molecules[:500], molecules[500:]
    return outside, with_floor(reference(test), outside, 150, seed=0)


def test_the_floor_is_the_fcd_of_real_molecules_above_0_and_below_a_bad_sample(split_moses, tmp_path):
    outside, ref = split_moses
    floor = ref.floor_summary()
    assert floor["draws"] == 3 and floor["molecules"] == 150
    assert floor["value"] > 1 and floor["std"] < 0.1 * floor["value"]  # a real bias, measured tightly
    rng = random.Random(0)
    bad = fcd([_shuffled(s, rng) for s in outside[:150]], ref)
    assert bad > 2 * floor["value"]
    ref.save(tmp_path / "reference.npz")
    assert Reference.load(tmp_path / "reference.npz").floor_summary() == floor
    with pytest.raises(RunError, match=r"needs 150 molecules outside the test set, but there are 100"):
        with_floor(ref, outside[:100], 150, seed=0)


def test_every_cell_is_scored_on_the_same_count_whatever_its_validity(split_moses):
    outside, ref = split_moses
    valid, half_valid = outside[:300], outside[300:450] + ["C1CC"] * 150  # 300 and 150 valid of one distribution
    a, b = (evaluate(cell, set(), ref, fcd_molecules=150) for cell in (valid, half_valid))
    assert a["fcd_molecules"] == b["fcd_molecules"] == 150 and a["fcd_floor"] == ref.floor_summary()
    assert abs(a["fcd"] - b["fcd"]) < 1  # the same distribution scores the same at one count
    assert fcd(outside[300:450], ref) - fcd(valid, ref) > 3  # on all valid samples, validity moved the bias
    short = evaluate(half_valid, set(), ref, fcd_molecules=200)
    assert short["fcd"] is None and "150 valid molecules; need at least 200" in short["notes"]["fcd"]
