"""A cell run before the stages it needs says which input is missing and which stage writes it."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from tests.conftest import tiny_study, write_spec


def test_train_and_tpe_name_the_missing_input_and_its_stage(cli, tmp_path):
    write_spec(tmp_path / "s.yaml", tiny_study())
    assert cli("compile", "s.yaml", cwd=tmp_path).code == 0
    for args, missing, stage in (
            (("run", "tpe", "--cell", "lr3e-3-bs32"), "data/tiny/tokens.npy", "data"),
            (("run", "train", "--cell", "xs-200"), "data/tiny/tokens.npy", "data")):
        result = cli(*args, cwd=tmp_path)
        assert result.code != 0 and "Traceback" not in result.err and "internal error" not in result.err
        assert f"{missing} is missing; run the {stage} stage first" in result.err
    (tmp_path / "data" / "tiny" / "splits").mkdir(parents=True)
    (tmp_path / "data" / "tiny" / "tokens.npy").write_bytes(b"")
    (tmp_path / "data" / "tiny" / "splits" / "train-200.npy").write_bytes(b"")
    result = cli("run", "train", "--cell", "xs-200", cwd=tmp_path)
    assert "results/tiny/selected/r1.json is missing; run the select stage first" in result.err
    assert not (tmp_path / "results" / "tiny" / "train").exists()
    for name in ("train-400", "val", "test"):
        (tmp_path / "data" / "tiny" / "splits" / f"{name}.npy").write_bytes(b"")
    (tmp_path / "data" / "tiny" / "tokenizer").mkdir()
    result = cli("run", "tpe", "--cell", "lr3e-3-bs32", cwd=tmp_path)
    assert result.code == 1 and "data/tiny/tokens.npy is not a readable array (EOFError" in result.err


@pytest.mark.parametrize(("hparams", "said"), [
    ({"learning_rate": 1e-3, "batch_size": 0}, "'batch_size' is 0, not a whole number above 0"),
    ({"learning_rate": 1e-3, "batch_size": 16.5}, "'batch_size' is 16.5, not a whole number above 0"),
    ({"learning_rate": -1, "batch_size": 32}, "'learning_rate' is -1, not a positive number"),
    ({"learning_rate": "0.005", "batch_size": 32}, "'learning_rate' is \"0.005\", not a number"),
    ({"learning_rate": 1e-3}, "no 'batch_size'"),
    ({"learning_rate": 1e-3, "batch_size": 32, "dropout": 0.1}, "['dropout'] are not values of hpo.grid"),
])
def test_an_edited_choice_file_is_named_with_its_key_before_anything_trains(cli, tmp_path, hparams, said):
    write_spec(tmp_path / "s.yaml", tiny_study())
    assert cli("compile", "s.yaml", cwd=tmp_path).code == 0
    (tmp_path / "data" / "tiny" / "splits").mkdir(parents=True)
    (tmp_path / "data" / "tiny" / "tokens.npy").write_bytes(b"")
    (tmp_path / "data" / "tiny" / "splits" / "train-200.npy").write_bytes(b"")
    choice = tmp_path / "results" / "tiny" / "selected" / "r1.json"
    choice.parent.mkdir(parents=True)
    choice.write_text(json.dumps({"group": "*", "rank": 1, "hparams": hparams}))
    result = cli("run", "train", "--cell", "xs-200", cwd=tmp_path)
    assert result.code == 1 and "internal error" not in result.err, result.err
    assert f"results/tiny/selected/r1.json: hparams: {said}; restore it (`dvc checkout " in result.err, result.err
    assert "or rerun the select stage to rewrite it" in result.err


def test_a_gpu_study_on_a_machine_without_one_names_the_setting(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    write_spec(tmp_path / "s.yaml", tiny_study(**{"training.accelerator": "gpu"}))
    assert cli("compile", "s.yaml", cwd=tmp_path).code == 0
    result = cli("run", "tpe", "--cell", "lr3e-3-bs32", cwd=tmp_path)
    assert result.code == 1 and "internal error" not in result.err
    assert "training.accelerator is gpu, but torch" in result.err and "set training.accelerator to auto or cpu" in result.err


def test_per_cell_stages_name_what_is_missing(cli, tmp_path):
    write_spec(tmp_path / "s.yaml", tiny_study())
    assert cli("compile", "s.yaml", cwd=tmp_path).code == 0
    result = cli("run", "train", cwd=tmp_path)
    assert result.code == 2 and "train runs one cell: add --cell KEY; cells are xs-200" in result.err
    result = cli("run", "sample", "--cell", "xs-200", cwd=tmp_path)
    assert "this study has no sample cells; add a `generation` section to the study" in result.err
    result = cli("run", "reference", cwd=tmp_path)
    assert result.code == 2 and "reference: this study has no sample cells; add a `generation` section" in result.err


def test_a_corrupt_input_names_the_file(cli, tmp_path):
    write_spec(tmp_path / "s.yaml", tiny_study())
    assert cli("compile", "s.yaml", cwd=tmp_path).code == 0
    result = cli("run", "split", cwd=tmp_path)
    assert result.code == 1 and "data/tiny/data.json is missing; run the stage that writes it" in result.err
    (tmp_path / "data" / "tiny").mkdir(parents=True)
    (tmp_path / "data" / "tiny" / "data.json").write_text("<<<<<<< HEAD\n")
    result = cli("run", "split", cwd=tmp_path)
    assert "data/tiny/data.json is not readable JSON (JSONDecodeError" in result.err
    (tmp_path / "data" / "tiny" / "data.json").write_text("[]")
    result = cli("run", "split", cwd=tmp_path)
    assert "data/tiny/data.json has no 'count'; restore it" in result.err
    assert not (tmp_path / "data" / "tiny" / "splits").exists()


def test_a_stage_prints_its_summary_with_numbers_rounded_for_reading(cli, tmp_path):
    write_spec(tmp_path / "s.yaml", tiny_study())
    assert cli("compile", "s.yaml", cwd=tmp_path).code == 0
    data = cli("run", "data", cwd=tmp_path)
    assert data.code == 0 and "count=1,500, vocab_size=29, read=1,500" in data.out, "rows read and dropped are named"
    assert cli("run", "split", cwd=tmp_path).code == 0
    result = cli("run", "tpe", "--cell", "lr3e-3-bs32", cwd=tmp_path)
    assert result.code == 0, result.err
    values = dict(item.split("=", 1) for item in result.out.strip().split(": ", 1)[1].split(", ") if "=" in item)
    assert re.fullmatch(r"\d\.\d{1,3}", values["val_loss"]) and re.fullmatch(r"\d{1,3}(,\d{3})+|\d{1,4}(\.\d{1,3})?", values["train_tokens_per_s"])
    assert re.fullmatch(r"\d{2},\d{3}", values["tokens_seen"]), "whole numbers of 10,000 and more read alike"


@pytest.mark.parametrize(("name", "rows", "said"), [
    ("train-400", np.arange(1400, 1800), "names rows 1400..1799, but the data stage's table has 1500 (0..1499)"),
    ("train-400", np.arange(400) - 1, "names rows -1..398, but the data stage's table has 1500"),
    ("train-400", np.arange(400) % 397, "names 3 rows more than once (row 0, ...)"),
    ("train-400", np.arange(400, dtype=np.float64), "holds float64 values of shape (400,), not a list of row numbers"),
    ("val", np.arange(2 * 100).reshape(2, 100), "holds int64 values of shape (2, 100)"),
    ("test", None, "and test.npy share"),
])
def test_an_edited_split_file_is_named_before_anything_trains(cli, tmp_path, name, rows, said):
    write_spec(tmp_path / "s.yaml", tiny_study())
    assert cli("compile", "s.yaml", cwd=tmp_path).code == 0
    assert cli("run", "data", cwd=tmp_path).code == 0 and cli("run", "split", cwd=tmp_path).code == 0
    splits = tmp_path / "data" / "tiny" / "splits"
    repeated = rows is None  # a test set that repeats training rows: another seed's file, or a merge
    if repeated:
        rows = np.load(splits / "train-400.npy")[:len(np.load(splits / "test.npy"))]
    np.save(splits / f"{name}.npy", rows)
    for args in (("tpe", "--cell", "lr3e-3-bs32"), ("train", "--cell", "xs-400")):
        result = cli("run", *args, cwd=tmp_path)
        assert result.code == 1 and "Traceback" not in result.err and "internal error" not in result.err, result.err
        named = "train-400" if repeated else name
        assert f"data/tiny/splits/{named}.npy {said}" in result.err, result.err
        assert "restore it (`dvc checkout" in result.err
        assert sorted(p.name for p in tmp_path.glob("results/tiny/*")) in ([], ["selected"]), "nothing written"
        (tmp_path / "results" / "tiny" / "selected").mkdir(parents=True, exist_ok=True)
        (tmp_path / "results" / "tiny" / "selected" / "r1.json").write_text(json.dumps(
            {"group": "*", "rank": 1, "hparams": {"learning_rate": 1e-3, "batch_size": 32}}))
