"""compile says what the next `dvc repro` runs, judged against the run dvc.lock records, not against the last
compile: an edit undone runs nothing, and a data file edited since the data stage read it runs it again."""

from __future__ import annotations

import hashlib

import yaml

from chemspec.compiler import expand
from chemspec.compiler.render import stage_identities
from chemspec.specs import load_study
from tests.conftest import tiny_study, write_spec


def _compile(cli, root, **overrides) -> str:
    write_spec(root / "study.yaml", tiny_study(**overrides))
    result = cli("compile", "study.yaml", cwd=root)
    assert result.code == 0, result.err
    return result.out + result.err


def _ran(root, inputs: dict[str, str] | None = None) -> None:
    """dvc.lock as `dvc repro` leaves it after running every stage of study.yaml, the data stage having read
    `inputs` ({path: its bytes then})."""
    cells = expand(load_study(root / "study.yaml"))
    stages = {name: {"cmd": f"chemspec run x --params params.yaml --identity {ident}"}
              for name, ident in stage_identities(cells).items()}
    stages["data"]["deps"] = [{"path": path, "hash": "md5", "md5": hashlib.md5(text.encode()).hexdigest(),
                               "size": len(text.encode())} for path, text in (inputs or {}).items()]
    (root / "data" / "tiny").mkdir(parents=True, exist_ok=True)
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}))


def test_an_edit_undone_before_dvc_repro_runs_nothing_and_says_nothing(cli, tmp_path):
    _compile(cli, tmp_path)
    _ran(tmp_path)
    assert "note: data.validation changed since the last compile, so the split stage draws other validation and " \
           "test sets, and every cell retrains on them" in _compile(cli, tmp_path, **{"data.validation": 150})
    undone = _compile(cli, tmp_path)
    assert "retrains" not in undone and "runs" not in undone, undone


def test_a_second_edit_keeps_the_first_ones_reruns_in_the_note(cli, tmp_path):
    """The note once compared with the last compile: a second edit hid that the first redraws the sets."""
    _compile(cli, tmp_path)
    _ran(tmp_path)
    _compile(cli, tmp_path, **{"data.validation": 150})
    said = _compile(cli, tmp_path, **{"data.validation": 150, "training.max_epochs": 3})
    assert "note: against their last run as dvc.lock records it, the next `dvc repro` runs 9 train cells (9 " \
           "whose settings changed), 2 TPE runs (2 whose settings changed)\n" in said, said
    assert "note: select runs again: a train cell retrains where it keeps another configuration\n" in said
    assert "note: the split stage's settings changed since it last ran: it runs again, and a cell retrains where " \
           "the data or sets it trains on change\n" in said


def test_new_cells_and_a_wider_grid_are_counted(cli, tmp_path):
    _compile(cli, tmp_path)
    _ran(tmp_path)
    said = _compile(cli, tmp_path, **{"data.sizes": [200, 400, 800, 1000], "data.source.max_molecules": 1500,
                                      "hpo.grid.learning_rate": [3.0e-3, 1.0e-2, 3.0e-2]})
    assert "the next `dvc repro` runs 3 train cells (3 new), 1 TPE run (1 new)\n" in said, said
    assert "note: select runs again" in said


def test_a_data_file_edited_since_the_data_stage_read_it_is_named(cli, tmp_path):
    text = "CCO\nCCN\nCCC\n" * 600
    (tmp_path / "mols.txt").write_text(text)
    source = {"data.source": {"file": "mols.txt"}}
    _compile(cli, tmp_path, **source)
    _ran(tmp_path, {"mols.txt": text})
    assert "changed" not in _compile(cli, tmp_path, **source)
    (tmp_path / "mols.txt").write_text(text.replace("CCN", "CCS"))  # the same size, other molecules
    said = _compile(cli, tmp_path, **source)
    assert "wrote nothing (already up to date)" in said
    assert "note: mols.txt changed since the data stage last read it: it runs again, and a cell retrains where the " \
           "data or sets it trains on change" in said, said
