"""The CLI starts without the heavy libraries: DVC runs `chemspec run` once per stage, and
`--help`, `validate` or `compile` should not wait for torch or scipy to load."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "lightning", "transformers", "scipy", "statsmodels", "matplotlib", "dvc", "rdkit")


def test_importing_the_cli_loads_none_of_the_heavy_libraries():
    probe = f"import sys, chemspec.cli; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.split() == []
