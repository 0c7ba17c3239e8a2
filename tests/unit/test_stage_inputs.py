"""A cell run before the stages it needs says which input is missing and which stage writes it."""

from __future__ import annotations

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
    assert "results/tiny/selected.json is missing; run the select stage first" in result.err
    assert not (tmp_path / "results" / "tiny" / "train").exists()
