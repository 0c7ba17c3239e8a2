"""The data and split stages on real molecules: cleaning counts, a tokenizer transformers loads, nested splits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from chemspec.compiler.cells import DataCell, SplitCell
from chemspec.errors import RunError
from chemspec.runtime.molecules import BOS, EOS, PAD, read_smiles, run_data
from chemspec.runtime import split as split_module
from chemspec.runtime.split import run_split

SMILES = ["CCO", "OCC", "c1ccccc1", "not-a-molecule", "CC(=O)O", "C1CC", "CCN(CC)CC", "O=C=O", "CCCCCCCCCCCC"]


def data_cell(tmp_path, **source) -> DataCell:
    tmp_path.mkdir(exist_ok=True)
    mols = tmp_path / "mols.txt"
    mols.write_text("\n".join(SMILES) + "\n")
    return DataCell(study="t", seed=0, kind="smiles", source={"file": str(mols), **source}, representation="selfies",
                    max_length=12, out_dir=str(tmp_path / "data"))


def test_invalid_duplicate_and_long_molecules_are_counted(tmp_path):
    info = run_data(data_cell(tmp_path))
    assert info["counts"] == {"read": 9, "blank": 0, "invalid_smiles": 2, "duplicates": 1, "unencodable": 0,
                              "too_long": 1}
    assert info["count"] == 5
    saved = json.loads((tmp_path / "data" / "data.json").read_text())
    assert saved["counts"] == info["counts"] and len(saved["sha256"]["tokens.npy"]) == 64


def test_tokens_start_with_bos_end_with_eos_and_match_the_saved_tokenizer(tmp_path):
    run_data(data_cell(tmp_path))
    tokens = np.load(tmp_path / "data" / "tokens.npy")
    rows = (tmp_path / "data" / "molecules.csv").read_text().splitlines()[1:]
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "data" / "tokenizer")
    for row, line in zip(tokens, rows):
        selfies = line.split(",")[1]
        ids = [int(t) for t in row if t != PAD]
        assert ids[0] == BOS and ids[-1] == EOS
        assert tokenizer(selfies)["input_ids"] == ids


def test_worker_processes_give_the_same_bytes_as_one_process(tmp_path, monkeypatch):
    one = run_data(data_cell(tmp_path / "one"))
    monkeypatch.setattr("chemspec.runtime.molecules.CHUNK", 2)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    many = run_data(data_cell(tmp_path / "many"))
    assert many["counts"] == one["counts"] and many["sha256"] == one["sha256"]


def test_max_molecules_reads_a_seeded_sample_of_the_whole_file(tmp_path):
    info = run_data(data_cell(tmp_path, max_molecules=3, sample="seeded"))
    assert info["counts"]["read"] == 3
    source = {"file": str(tmp_path / "mols.txt")}
    first = read_smiles(source, 3, 0)
    assert first == read_smiles(source, 3, 0) and first != SMILES[:3] and first == [s for s in SMILES if s in first]
    assert {tuple(read_smiles(source, 3, seed)) for seed in range(5)} != {tuple(first)}


def test_max_molecules_above_the_files_rows_reads_them_all_and_says_so(tmp_path, capsys):
    info = run_data(data_cell(tmp_path, max_molecules=50, sample="seeded"))
    assert info["counts"]["read"] == len(SMILES)
    assert (f"note: data.source.max_molecules (50) is more than the 9 molecules of data.source.file "
            f"{tmp_path / 'mols.txt'}, so all of them are read; lower it to draw a sample") in capsys.readouterr().err
    run_data(data_cell(tmp_path, max_molecules=9, sample="seeded"))
    assert "max_molecules" not in capsys.readouterr().err


def test_a_moses_sample_has_the_whole_sets_share_of_sulfur_which_its_head_has_not():
    """MOSES's rows are not shuffled: its first 10,000 molecules hold a third more sulfur than all 1.58M."""
    def sulfur(smiles: list[str]) -> float:
        return sum("S" in s or "s" in s for s in smiles) / len(smiles)

    everything = read_smiles({"package": "moses"}, None, 0)
    assert sulfur(everything[:10_000]) > sulfur(everything) + 0.08
    sample = read_smiles({"package": "moses"}, 10_000, 0)
    assert abs(sulfur(sample) - sulfur(everything)) < 0.02
    assert sample == read_smiles({"package": "moses"}, 10_000, 0)


def test_csv_rows_with_an_empty_smiles_cell_are_read_and_counted_as_blank(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("smiles,n\nCCO,1\n,7\n\nc1ccccc1,2\n")
    cell = DataCell(study="t", seed=0, kind="smiles", source={"file": str(csv), "column": "smiles"},
                    representation="selfies", max_length=12, out_dir=str(tmp_path / "data"))
    info = run_data(cell)
    assert info["counts"]["read"] == 3 and info["counts"]["blank"] == 1 and info["count"] == 2


def file_cell(tmp_path, text: str, max_length: int = 12) -> DataCell:
    """The data cell of a SMILES file holding `text`, one molecule a line."""
    (tmp_path / "mols.txt").write_text(text)
    return DataCell(study="t", seed=0, kind="smiles", source={"file": str(tmp_path / "mols.txt")},
                    representation="selfies", max_length=max_length, out_dir=str(tmp_path / "data"))


def test_a_file_of_only_broken_smiles_is_a_clear_error(tmp_path):
    cell = file_cell(tmp_path, "xx\nyy\n")
    with pytest.raises(RunError, match=r"2 of the 2 molecules read are no SMILES RDKit reads \(the first: 'xx', "
                                       r"'yy'\), so the file is not what it seems"):
        run_data(cell)
    assert not (tmp_path / "data" / "tokens.npy").exists()


def test_a_file_mostly_of_no_smiles_is_refused_naming_the_first_lines_rdkit_could_not_read(tmp_path):
    """SELFIES without rings or branches read as chains of radicals: the rest were dropped, the few trained on."""
    cell = file_cell(tmp_path, "[C][C][O]\n[C][=C][Branch1][C][O]\n[N][C][=O]\n[C][Ring1][=Branch1]\nCCO\n")
    with pytest.raises(RunError, match=r"3 of the 5 molecules read are no SMILES RDKit reads \(the first: "
                                       r"'\[C\]\[=C\]\[Branch1\]\[C\]\[O\]', '\[N\]\[C\]\[=O\]', "
                                       r"'\[C\]\[Ring1\]\[=Branch1\]'\), so the file is not what it seems: a file of "
                                       r"SELFIES"):
        run_data(cell)
    assert not (tmp_path / "data").exists()


def test_molecules_left_out_as_no_smiles_or_too_long_are_named(tmp_path, capsys):
    """Dropped silently, 44% of a ZINC sample too long for max_length skewed a study to small molecules."""
    cell = file_cell(tmp_path, "CCO\nCCN\nCCC\nCCCl\nCO\nCN\nCC\nxx\nc1ccccc1CCCCCCCCCC\nCCCCCCCCCCCCCCCC\n",
                     max_length=8)
    assert run_data(cell)["count"] == 7
    err = capsys.readouterr().err
    assert "note: 1 of the 10 molecules read are no SMILES RDKit reads and are left out (the first: 'xx')" in err
    cell = file_cell(tmp_path, "CCO\nCCN\nCCC\nC1CC(\nC1CC(\nC1CC(\nxx\nCO\n", max_length=8)
    run_data(cell)
    assert "(the first: 'C1CC(', 'xx')" in capsys.readouterr().err, "each broken line once"
    assert ("note: 2 of the 10 molecules read (20%) are longer than max_length (8 tokens, [BOS] and [EOS] included) "
            "and are left out, so the study trains and tests on the shorter ones; raise "
            "model.sizes.<name>.max_length") in err, err


def test_molecules_selfies_cannot_encode_are_named_with_the_way_to_keep_them(tmp_path, capsys):
    """Polymer repeat units and hypervalent iodine were dropped with a count in data.json alone."""
    cell = file_cell(tmp_path, "CCO\nCCN\nCCC\n*CC*\nO=I(=O)c1ccccc1\n")
    assert run_data(cell)["counts"]["unencodable"] == 2
    assert ("note: 2 of the 5 molecules read have no SELFIES and are left out (the first: '*CC*', 'O=I(=O)c1ccccc1'); "
            "the selfies package refuses wildcard atoms (*) and valences beyond its rules (hypervalent iodine, say); "
            "data.representation: smiles keeps them") in capsys.readouterr().err
    cell = file_cell(tmp_path, "*CC*\n*CCO*\n")
    with pytest.raises(RunError, match=r"no valid molecules among the 2 read from .*\(2 not encodable\); SELFIES "
                                       r"encodes none of them \(the first: '\*CC\*', '\*CCO\*'\): the selfies "
                                       r"package refuses wildcard atoms"):
        run_data(cell)


def test_salts_and_mixtures_kept_are_counted_in_a_note(tmp_path, capsys):
    run_data(file_cell(tmp_path, "CCO\nCC(=O)[O-].[Na+]\nCCN(CC)CC.Cl\nCCN\n", max_length=40))
    assert ("note: 2 of the 4 molecules kept are several fragments (salts, mixtures, solvates: '.' in their SMILES)"
            in capsys.readouterr().err)
    run_data(file_cell(tmp_path, "CCO\nCCN\n"))
    assert "fragments" not in capsys.readouterr().err


def test_molecules_all_too_long_name_max_length_not_the_file(tmp_path):
    cell = file_cell(tmp_path, "CCCCCCCCCCCCCCCC\nc1ccccc1CCCCCCCCCC\nxx\n", max_length=8)
    with pytest.raises(RunError, match=r"no valid molecules among the 3 read from .*mols\.txt \(1 no SMILES, 2 longer "
                                       r"than max_length"
                                       r"\); most are longer than max_length \(8 "
                                       r"tokens, \[BOS\] and \[EOS\] included\): raise model.sizes.<name>.max_length"):
        run_data(cell)
    assert not (tmp_path / "data" / "tokens.npy").exists()


def test_a_missing_csv_column_names_the_header(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("smi\nCCO\n")
    cell = DataCell(study="t", seed=0, kind="smiles", source={"file": str(csv), "column": "smiles"},
                    representation="selfies", max_length=12, out_dir=str(tmp_path / "data"))
    with pytest.raises(RunError, match="no column 'smiles'; the header has \\['smi'\\]"):
        run_data(cell)


def test_a_csv_with_a_byte_order_mark_and_a_blank_first_line_reads_as_validation_reads_it(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_bytes("\ufeff\nsmiles,name\nCCO,ethanol\nc1ccccc1,benzene\n".encode())
    cell = DataCell(study="t", seed=0, kind="smiles", source={"file": str(csv), "column": "smiles"},
                    representation="selfies", max_length=12, out_dir=str(tmp_path / "data"))
    assert run_data(cell)["count"] == 2


def _split(tmp_path, sizes, seed=0, kind="smiles") -> SplitCell:
    data = tmp_path / "d"
    data.mkdir(exist_ok=True)
    (data / "data.json").write_text(f'{{"kind": "{kind}", "count": 100}}')
    return SplitCell(seed=seed, sizes=sizes, validation=10, test=10, data_dir=str(data),
                     out_dir=str(tmp_path / f"s{seed}-{len(sizes)}"))


def test_split_is_nested_disjoint_and_stable_when_sizes_grow(tmp_path):
    run_split(_split(tmp_path, [20, 40]))
    out = tmp_path / "s0-2"
    small, large = np.load(out / "train-20.npy"), np.load(out / "train-40.npy")
    val, test = np.load(out / "val.npy"), np.load(out / "test.npy")
    assert set(small) <= set(large)
    assert not (set(large) & set(val)) and not (set(large) & set(test)) and not (set(val) & set(test))
    run_split(_split(tmp_path, [20, 40, 80]))
    grown = tmp_path / "s0-3"
    for name in ("train-20.npy", "train-40.npy", "val.npy", "test.npy"):
        assert (grown / name).read_bytes() == (out / name).read_bytes()


def test_a_split_that_fails_midway_leaves_the_old_one_whole(tmp_path, monkeypatch):
    cell = _split(tmp_path, [20, 40])
    run_split(cell)
    before = {p.name: p.read_bytes() for p in Path(cell.out_dir).iterdir()}
    saved = split_module._save

    def failing(path, array):
        if path.name == "train-40.npy":
            raise OSError(28, "No space left on device")
        return saved(path, array)
    monkeypatch.setattr(split_module, "_save", failing)
    with pytest.raises(OSError, match="No space left"):
        run_split(cell.model_copy(update={"seed": 1}))
    assert {p.name: p.read_bytes() for p in Path(cell.out_dir).iterdir()} == before


def test_split_depends_on_the_seed(tmp_path):
    run_split(_split(tmp_path, [20], seed=0))
    run_split(_split(tmp_path, [20], seed=1))
    assert not np.array_equal(np.load(tmp_path / "s0-1" / "val.npy"), np.load(tmp_path / "s1-1" / "val.npy"))


def test_split_larger_than_the_data_says_how_many_are_valid_and_what_cleaning_left_out(tmp_path):
    with pytest.raises(RunError, match="110 molecules needed .* only 100 are valid after cleaning"):
        run_split(_split(tmp_path, [90]))
    counts = {"read": 300, "blank": 0, "invalid_smiles": 0, "unencodable": 0, "duplicates": 200, "too_long": 0}
    cell = _split(tmp_path, [90])
    (tmp_path / "d" / "data.json").write_text(json.dumps({"kind": "smiles", "count": 100, "counts": counts}))
    with pytest.raises(RunError, match=r"only 100 of the 300 read \(left out: 200 duplicates\) are valid after "):
        run_split(cell)
    with pytest.raises(RunError, match="110 structures needed .* only 100 are valid .*read more structures"):
        run_split(_split(tmp_path, [90], kind="atoms"))


@pytest.mark.parametrize("trained", [False, True], ids=["held-out-only", "in-the-smallest-training-set"])
def test_an_element_that_only_held_out_structures_hold_is_refused_at_the_split(tmp_path, trained):
    """Train and TPE cells refused it, after the data, split and TPE stages had run."""
    from chemspec.runtime.atoms import AtomsData, save_atoms

    order = np.random.default_rng(0).permutation(100)
    chlorides = set(order[:2]) | ({order[20]} if trained else set())  # in validation, and first of the pool
    molecules = [([1, 17], [[0, 0, 0], [1.27, 0, 0]]) if s in chlorides else ([8, 1, 1], np.eye(3)) for s in range(100)]
    numbers = np.concatenate([z for z, _ in molecules])
    save_atoms(tmp_path / "d" / "atoms.npz", AtomsData(
        numbers, np.concatenate([r for _, r in molecules]), np.zeros((len(numbers), 3)), np.zeros(100),
        np.concatenate([[0], np.cumsum([len(z) for z, _ in molecules])])))
    cell = _split(tmp_path, [4, 60], kind="atoms")
    if trained:
        assert run_split(cell)["sizes"] == [4, 60]
        return
    with pytest.raises(RunError, match=r"data.sizes: the smallest training set \(4 structures\) holds no Cl, which the "
                                       r"validation split holds: a model trained on it would never see them"):
        run_split(cell)
    assert not Path(cell.out_dir).exists()
    (tmp_path / "d" / "atoms.npz").unlink()  # a node that fetched the split's one dependency, data.json, alone
    assert run_split(cell)["sizes"] == [4, 60]


@pytest.mark.parametrize("smallest", ["ethanol", "ethanol-and-water", "ethanol-forces-only"])
def test_a_held_out_composition_that_the_smallest_training_set_cannot_give_a_reference_energy_is_refused(
        tmp_path, capsys, smallest):
    """Ethanol alone fixes 2·e_C + 6·e_H + e_O, not methanol's e_C + 4·e_H + e_O: with the minimum-norm reference
    energies an ANI-1x study of 2 training structures scored thousands of eV off. Ethanol and water fix it; a
    loss of forces alone does not read it, so there it is a note."""
    from chemspec.runtime.atoms import AtomsData, save_atoms

    shapes = {"water": [8, 1, 1], "methanol": [6, 8, 1, 1, 1, 1], "ethanol": [6, 6, 8, 1, 1, 1, 1, 1, 1]}
    order = np.random.default_rng(0).permutation(100)
    kinds = ["ethanol"] * 100
    kinds[order[0]] = "methanol"  # in validation
    if smallest == "ethanol-and-water":
        kinds[order[21]] = "water"  # the second of the smallest training set
    molecules = [shapes[kind] for kind in kinds]
    numbers = np.concatenate(molecules)
    save_atoms(tmp_path / "d" / "atoms.npz", AtomsData(
        numbers, np.zeros((len(numbers), 3)), np.zeros((len(numbers), 3)), np.zeros(100),
        np.concatenate([[0], np.cumsum([len(z) for z in molecules])])))
    cell = _split(tmp_path, [3, 9], kind="atoms").model_copy(update={"energies": smallest != "ethanol-forces-only"})
    problem = (r"data.sizes: the smallest training set's compositions \(3 structures\) fix only 1 combination of "
               r"the 3 elements' reference energies: the validation split's CH4O is none of them")
    if smallest != "ethanol":
        assert run_split(cell)["sizes"] == [3, 9]
        assert bool(re.search(f"note: {problem}", capsys.readouterr().err)) == (smallest == "ethanol-forces-only")
        return
    with pytest.raises(RunError, match=f"{problem}, .*; raise the smallest of data.sizes, or try another seed"):
        run_split(cell)
    assert not Path(cell.out_dir).exists()


def test_split_larger_than_the_data_names_max_length_when_it_dropped_most_molecules(tmp_path):
    cell = _split(tmp_path, [90])
    counts = {"read": 300, "blank": 0, "invalid_smiles": 20, "unencodable": 0, "duplicates": 10, "too_long": 170}
    (tmp_path / "d" / "data.json").write_text(json.dumps({"kind": "smiles", "count": 100, "counts": counts}))
    with pytest.raises(RunError, match="read more molecules; most of the molecules dropped were longer than "
                                       "max_length, so raising model.sizes.<name>.max_length"):
        run_split(cell)
    counts.update(invalid_smiles=170, too_long=20)
    (tmp_path / "d" / "data.json").write_text(json.dumps({"kind": "smiles", "count": 100, "counts": counts}))
    with pytest.raises(RunError, match="or read more molecules$"):
        run_split(cell)


@pytest.mark.parametrize("recorded", [None, ["O=CCC=O"]], ids=["no-smiles", "older-smiles"])
def test_md_params_from_another_compile_say_to_recompile(tmp_path, recorded):
    """The SMILES a compile recorded are what the data cell's identity covers; malonaldehyde's changed."""
    from chemspec.runtime.atoms_stage import run_atoms_data

    source = {"generate": "md", "molecules": ["malonaldehyde"], "frames": 4, "temperature_K": 300.0, "stride": 5,
              "timestep_fs": 0.5, "equilibration_steps": 10, **({"smiles": recorded} if recorded else {})}
    cell = DataCell(study="t", seed=0, kind="atoms", source=source, representation=None, max_length=0,
                    out_dir=str(tmp_path / "data"))
    with pytest.raises(RunError, match=r"data.source.molecules: the params file records other SMILES for these "
                                       r"molecules, or none .*; recompile the study"):
        run_atoms_data(cell)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("file, column, rows", [("qm9_smiles.csv", "smiles", 133_885),
                                                ("zinc250k_reduced_10k.txt", None, 9_999),
                                                ("jtnn_zinc_test.txt", None, 5_000)])
def test_the_real_smiles_files_are_read_as_validation_counts_them(shared, tmp_path, file, column, rows):
    """QM9's CSV and two ZINC text files: the data stage reads every row validation counted, and a seeded
    sample of 300 turns into SELFIES with no row lost as invalid or unencodable."""
    from chemspec.specs.data import SmilesFileSource

    source = {"file": str(shared / "smiles" / file), **({"column": column} if column else {})}
    assert len(read_smiles(source, None, 0)) == SmilesFileSource(**source).rows(Path(source["file"])) == rows
    cell = DataCell(study="t", seed=0, kind="smiles", source={**source, "max_molecules": 300},
                    representation="selfies", max_length=128, out_dir=str(tmp_path / "data"))
    counts = run_data(cell)["counts"]
    assert counts["read"] == 300 and counts["invalid_smiles"] == counts["unencodable"] == counts["blank"] == 0


def test_data_json_names_the_file_it_read_by_its_hash(tmp_path):
    """The archive hashed only what the data stage wrote: which source file gave the numbers was not recorded."""
    import hashlib

    info = run_data(file_cell(tmp_path, "CCO\nCCN\nCCC\n"))
    assert info["source_sha256"] == hashlib.sha256((tmp_path / "mols.txt").read_bytes()).hexdigest()
