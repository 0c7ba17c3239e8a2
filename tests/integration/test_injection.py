"""Payloads in every free-text field of a spec go through compile and a real `dvc repro` without running."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import tool_env, write_spec

pytestmark = pytest.mark.slow
PAYLOAD = "x; touch MARKER_A $(touch MARKER_B) `touch MARKER_C`"


def test_payloads_in_file_names_and_columns_never_execute(tmp_path):
    data = tmp_path / "mols x; touch MARKER_A & touch MARKER_D.csv"
    column = f"smiles {PAYLOAD}"
    amines = ["C" * i + "N" + "C" * j for i in range(1, 16) for j in range(i + 1)]  # 135 distinct molecules
    data.write_text(f'"{column}"\n' + "\n".join(amines) + "\n")
    study = {
        "study": "inject", "seed": 0,
        "data": {"kind": "smiles", "source": {"file": data.name, "column": column}, "sizes": [40, 80],
                 "validation": 20, "test": 20},
        "model": {"family": "chemgpt", "sizes": {"xs": {"n_layer": 1, "n_embd": 8, "n_head": 2, "max_length": 40}}},
        "training": {"max_epochs": 1, "accelerator": "cpu"},
        "hpo": {"grid": {"learning_rate": [1.0e-3], "batch_size": [16]}},
    }
    write_spec(tmp_path / "study.yaml", study)
    for args in (["git", "init", "-q"], ["dvc", "init", "-q"], ["chemspec", "compile", "study.yaml"]):
        assert subprocess.run(args, cwd=tmp_path, env=tool_env()).returncode == 0
    done = subprocess.run(["dvc", "repro"], cwd=tmp_path, capture_output=True, text=True, env=tool_env())
    assert done.returncode == 0, done.stderr
    assert not [p for p in tmp_path.rglob("MARKER*") if p != data] and not list(Path.cwd().glob("MARKER*"))
    assert (tmp_path / "archive" / "refs" / "inject.json").is_file()
