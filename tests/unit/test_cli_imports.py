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


def test_a_ctrl_c_while_the_cli_loads_gets_the_one_line_of_an_interrupt_not_a_traceback():
    """DVC starts a process per stage: a Ctrl-C in its first 0.3 s printed the traceback of an import."""
    probe = ("import sys, importlib.abc\n"
             "class Interrupt(importlib.abc.MetaPathFinder):\n"
             "    def find_spec(self, name, path, target=None):\n"
             "        if name == 'chemspec.cli':\n"
             "            raise KeyboardInterrupt\n"
             "sys.meta_path.insert(0, Interrupt())\n"
             "from chemspec.__main__ import main\n"
             "main()\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 130 and "Traceback" not in done.stderr
    assert done.stderr.startswith("interrupted; what the command writes is written whole or not at all")


def test_the_installed_command_starts_where_an_interrupt_is_caught():
    from importlib.metadata import entry_points

    assert entry_points(group="console_scripts")["chemspec"].value == "chemspec.__main__:main"
