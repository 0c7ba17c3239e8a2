"""`chemspec validate` and `compile` on invalid studies: exit 2, the field named, no traceback, no files."""

from __future__ import annotations

import copy
import gzip
import os
import re

import pytest
import yaml

from tests.conftest import QUICKSTART, tiny_study, write_spec

BASE = yaml.safe_load(QUICKSTART.read_text())


def mutate(path: str, value=None, delete: bool = False) -> str:
    study = copy.deepcopy(BASE)
    node = study
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    if delete:
        del node[last]
    else:
        node[last] = value
    return yaml.safe_dump(study, sort_keys=False)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8))

CASES = [
    ("yaml-syntax", "study: [unclosed\n", "YAML syntax error"),
    ("not-a-mapping", "- just\n- a list\n", "must be a YAML mapping"),
    ("empty-file", "", "the file is empty"),
    ("alias-bomb", BOMB, "alias bomb"),
    ("python-tag", "study: !!python/object/apply:os.system ['touch PWNED']\n", "not allowed"),
    ("duplicate-key", QUICKSTART.read_text() + "seed: 3\n", "duplicate key 'seed'"),
    ("unknown-top-key", mutate("colour", "blue"), "colour: unknown key"),
    ("typo-nested-key", mutate("training.precison", "32-true"), "training.precison: unknown key"),
    ("missing-data", mutate("data", delete=True), "data: required key is missing"),
    ("missing-sizes", mutate("data.sizes", delete=True), "data.sizes: required key is missing"),
    ("negative-size", mutate("data.sizes", [-5, 100]), "data.sizes.0"),
    ("unsorted-sizes", mutate("data.sizes", [3000, 1000]), "strictly ascending"),
    ("too-many-molecules", mutate("data.sizes", [1000, 30000]), "lower the sizes"),
    ("wrong-type-epochs", mutate("training.max_epochs", "ten"), "training.max_epochs"),
    ("zero-epochs", mutate("training.max_epochs", 0), "training.max_epochs"),
    ("bad-precision", mutate("training.precision", "fp8"), "training.precision"),
    ("bad-family", mutate("model.family", "gpt5"), "model.family"),
    ("missing-family", mutate("model.family", delete=True),
     "model.family: family is missing; expected one of 'chemgpt', 'schnet', 'painn', 'spookynet'"),
    ("head-count", mutate("model.sizes.s", {"n_layer": 2, "n_embd": 96, "n_head": 5}),
     "model.sizes.s: n_embd (96) must be divisible by n_head (5); try n_head 4 or 6"),
    ("max-length-differs", mutate("model.sizes.xs", {"n_layer": 2, "n_embd": 32, "n_head": 2, "max_length": 64}),
     "model.sizes: max_length differs between sizes (xs 64, s 128, m 128); every size trains on the same molecules, "
     "so give them one max_length, e.g. 128 on each"),
    ("size-name-injection", mutate("model.sizes", {"s; rm -rf ~": {"n_layer": 1, "n_embd": 8, "n_head": 2}}),
     "model.sizes.s; rm -rf ~"),
    ("study-injection", mutate("study", "x; touch PWNED"), "study: String should match pattern"),
    ("study-subshell", mutate("study", "$(id)"), "study: String should match pattern"),
    ("study-path", mutate("study", "../escape"), "study: String should match pattern"),
    ("budget-fraction", mutate("hpo.tpe.budget_fraction", 1.5), "hpo.tpe.budget_fraction"),
    ("budget-zero", mutate("hpo.tpe.budget_fraction", 0), "hpo.tpe.budget_fraction"),
    ("keep-too-many", mutate("hpo.tpe.keep", 5), "hpo.tpe.keep: is 5, more than the 2 configurations"),
    ("last-epochs-without-tse-e", mutate("hpo.tpe", {"estimator": "tse", "last_epochs": 3}),
     "hpo.tpe.last_epochs: is read by estimator tse_e alone (and by calibrate, which scores every estimator), and "
     "estimator is tse: remove last_epochs, or set estimator: tse_e"),
    ("ema-decay-without-tse-ema", mutate("hpo.tpe", {"estimator": "val", "ema_decay": 0.5}),
     "hpo.tpe.ema_decay: is read by estimator tse_ema alone (and by calibrate, which scores every estimator), and "
     "estimator is val"),
    ("margin-with-keep-one", mutate("hpo.tpe", {"keep": 1, "margin": 0.1}),
     "hpo.tpe.margin: drops kept configurations beyond the best, and keep is 1 (the best alone is kept): remove "
     "margin, or raise keep"),
    ("last-epochs-over-the-window", mutate("hpo.tpe", {"estimator": "tse_e", "last_epochs": 5, "budget_fraction": 0.5}),
     "hpo.tpe.last_epochs: 5 spans the whole TPE window (budget_fraction 0.5 of training.max_epochs 5: 2.5 epochs), "
     "where tse_e is tse; lower last_epochs below 2.5, raise budget_fraction so that the window holds more than 5 "
     "epochs, or set estimator: tse"),
    ("last-epochs-over-a-one-epoch-window", mutate("hpo.tpe", {"estimator": "tse_e", "budget_fraction": 0.2}),
     "(budget_fraction 0.2 of training.max_epochs 5: 1 epoch), where tse_e is tse; raise budget_fraction so that the "
     "window holds more than 1 epoch, or set estimator: tse"),
    ("tpe-size-unknown", mutate("hpo.tpe.model_size", "xl"), "hpo.tpe.model_size: 'xl' is not a model size"),
    ("tpe-data-unknown", mutate("hpo.tpe.data_size", 7), "hpo.tpe.data_size: 7 is not in data.sizes"),
    ("grid-repeat", mutate("hpo.grid.learning_rate", [1e-3, 1e-3]), "repeats a value"),
    ("empty-grid", mutate("hpo.grid.batch_size", []), "hpo.grid.batch_size"),
    ("source-without-kind", mutate("data.source", {"url": "http://x"}), "data.source"),
    ("atoms-for-chemgpt", mutate("data.source", {"generate": "md", "molecules": ["ethanol"]}),
     "does not fit data.kind"),
    ("missing-file", mutate("data.source", {"file": "nowhere.csv", "column": "smiles"}), "does not exist"),
    ("home-in-path", mutate("data.source", {"file": "~/smiles.csv", "column": "smiles"}),
     "'~/smiles.csv' does not exist (relative paths are read from the study file's directory); "
     "'~' is not expanded: write the path in full; fix the path"),
    ("confidence", mutate("fit.confidence", 1.0), "fit.confidence"),
    ("seed-negative", mutate("seed", -1), "seed"),
    ("samples-too-few", mutate("generation.samples", 1), "generation.samples"),
    ("top-p-zero", mutate("generation.top_p", 0), "generation.top_p"),
    ("bool-for-int", mutate("seed", True), "seed: Input should be a valid integer (got true)"),
    ("quoted-int", mutate("training.max_epochs", "5"), "training.max_epochs: Input should be a valid integer"),
    ("float-for-int", mutate("data.sizes", [1000, 3000.0]), "data.sizes.1: Input should be a valid integer"),
    ("quoted-float", mutate("hpo.grid.learning_rate", ["0.001"]), "write a number without quotes"),
    ("word-for-int", mutate("seed", "yes"), 'seed: Input should be a valid integer (got "yes")\n    hint: write '
                                            'a whole number\n'),
    ("yaml11-int", mutate("seed", "1_000"), 'seed: Input should be a valid integer (got "1_000")\n    hint: write a '
                                            'whole number\n'),
    ("yes-for-packing", mutate("training.packing", True), "training.packing: Input should be a valid integer"),
    ("int-for-bool", mutate("training.compile", 1), "training.compile"),
    ("duplicate-anchor", "study: &a x\nseed: &a 1\n",
     "study.yaml:2:7: <root>: YAML syntax error: found duplicate anchor 'a'; first occurrence at line 1, column 8: "
     "second occurrence"),
    ("unclosed-list-context", "study: [unclosed\n",
     "YAML syntax error: while parsing a flow sequence at line 1, column 8: expected ',' or ']'"),
    ("nul-byte", "study: qu\x00ick\n",
     "study.yaml:1:10: <root>: YAML syntax error: control character '\\x00' is not allowed in YAML\n"
     "    hint: a NUL byte means a binary file or one saved as UTF-16"),
    ("escape-byte", "study: qu\x1bick\n",
     "study.yaml:1:10: <root>: YAML syntax error: control character '\\x1b' is not allowed in YAML\n"
     "    hint: remove it, or write it as an escape inside double quotes"),
    ("beta-of-one", mutate("training.optimizer", {"betas": [0.9, 1.0]}),
     "training.optimizer.betas.1: Input should be less than 1 (got 1.0)"),
    ("confidence-in-percent", mutate("fit.confidence", 95),
     "fit.confidence: Input should be less than 1 (got 95)\n    hint: give a fraction: 0.95 for 95%"),
    ("confidence-of-100", mutate("fit.confidence", 100),
     "fit.confidence: Input should be less than 1 (got 100)\n    hint: give a number in the allowed range"),
    ("budget-in-percent", mutate("hpo.tpe", {"budget_fraction": 20}),
     "hpo.tpe.budget_fraction: Input should be less than or equal to 1 (got 20)\n"
     "    hint: give a fraction: 0.2 for 20%"),
    ("bare-generation", mutate("generation", None),
     "generation: an empty generation section samples nothing: write `generation: {}` to sample with the "
     "defaults, or remove the key to skip sampling"),
    ("partition-with-a-space", mutate("executor", {"kind": "slurm", "slurm": {"partition": "gpu a100"}}),
     "executor.slurm.partition: String should match pattern '^[A-Za-z0-9][A-Za-z0-9_.,-]{0,63}$' (got \"gpu a100\")\n"
     "    hint: use letters, digits, "
     "'_', '.', ',' and '-' (starting with a letter or digit), at most 64 characters; no spaces or shell characters"),
    ("negative-beta", mutate("training.optimizer", {"betas": [-0.1, 0.99]}),
     "training.optimizer.betas.0: Input should be greater than or equal to 0 (got -0.1)"),
    ("max-length-without-room", mutate("model.sizes", {"s": {"n_layer": 2, "n_embd": 64, "n_head": 4, "max_length": 2}}),
     "model.sizes.s.max_length: Input should be greater than or equal to 3 (got 2)"),
    ("devices-zero", mutate("training.devices", 0),
     "training.devices: Input should be greater than 0 or 'auto' (got 0)\n    hint: give a number in the allowed range, "
     "or use one of the values listed"),
    ("compile-yes", mutate("training.compile", "yes"),
     'training.compile: Input should be a valid boolean or \'cuda-graphs\' (got "yes")'),
    ("one-beta", mutate("training.optimizer", {"betas": [0.9]}),
     "training.optimizer.betas: needs 2 values (got [0.9])\n    hint: give 2 values, as a list"),
    ("three-betas", mutate("training.optimizer", {"betas": [0.9, 0.99, 0.5]}),
     "training.optimizer.betas: needs 2 values (got [0.9, 0.99, 0.5])"),
    ("huge-chemgpt", mutate("model.sizes.s", {"n_layer": 1000, "n_embd": 65536, "n_head": 64}),
     "model.sizes.s: n_layer 1000 × n_embd 65536 makes about 5.2e+13 non-embedding parameters, more than the "
     "1e+11 chemspec trains; make n_layer or n_embd smaller"),
    ("huge-width", mutate("model.sizes.s", {"n_layer": 2, "n_embd": 10**12, "n_head": 2}),
     "model.sizes.s.n_embd: Input should be less than or equal to 65536"),
    ("huge-batch", mutate("hpo.grid.batch_size", [32, 10**9]),
     "hpo.grid.batch_size.1: Input should be less than or equal to 65536"),
    ("training-batch-size", mutate("training.batch_size", 64),
     "training.batch_size: unknown key 'batch_size'\n    hint: move it to hpo.grid.batch_size, the list of values TPE "
     "chooses from (e.g. [64] for that value alone)"),
    ("training-learning-rate", mutate("training.learning_rate", 3e-4),
     "training.learning_rate: unknown key 'learning_rate'\n    hint: move it to hpo.grid.learning_rate"),
    ("huge-packing", mutate("training.packing", 10**12),
     "training.packing: Input should be less than or equal to 65536"),
    ("tpe-not-a-section", mutate("hpo.tpe", 5), "hpo.tpe: should be a section of keys (a YAML mapping), not 5"),
    ("no-model-sizes", mutate("model.sizes", {}), "model.sizes: needs at least 1 entry (got {})"),
    ("no-batch-sizes", mutate("hpo.grid.batch_size", []), "hpo.grid.batch_size: needs at least 1 value (got [])"),
    ("clip-zero", mutate("training.gradient_clip", 0),
     "training.gradient_clip: Input should be greater than 0 (got 0)\n    hint: give a number in the allowed range, "
     "or null (`chemspec schema` says what null does here)"),
    ("chemgpt-size-twice", mutate("model.sizes.m", {"n_layer": 2, "n_embd": 64, "n_head": 4}),
     "model.sizes: s and m are one shape (n_layer 2, n_embd 64, n_head 4), so their cells would train the same "
     "model; change one's shape or remove it"),
    ("chemgpt-force-loss", mutate("training.loss", {"kind": "l1", "energy": 0.5, "forces": 0.5}),
     "training.loss: model.family 'chemgpt' trains on the next token's cross-entropy; the loss section weighs "
     "force-field energies and forces, so remove it"),
]


@pytest.mark.parametrize("name,text,expected", CASES, ids=[c[0] for c in CASES])
def test_invalid_spec_exits_2_naming_the_field(cli, tmp_path, name, text, expected):
    spec = tmp_path / "study.yaml"
    spec.write_text(text)
    before = sorted(p.name for p in tmp_path.iterdir())
    for verb in ("validate", "compile"):
        result = cli(verb, str(spec), cwd=tmp_path)
        assert result.code == 2, result.err
        assert expected in result.err
        assert "Traceback" not in result.err + result.out
        assert "study.yaml:" in result.err
        assert not any(label in result.err for label in ("constrained-int", "literal[", ".bool:", "[key]")), result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "PWNED").exists()


def test_a_mistyped_key_is_told_the_key_it_is_nearest(cli, tmp_path):
    (tmp_path / "s.yaml").write_text(QUICKSTART.read_text().replace("max_epochs:", "max_epoch:"))
    result = cli("validate", str(tmp_path / "s.yaml"))
    assert result.code == 2 and "training.max_epoch: unknown key 'max_epoch'\n    hint: check its spelling (did you " \
        "mean max_epochs?), or remove it; allowed here: " in result.err, result.err
    (tmp_path / "s.yaml").write_text(QUICKSTART.read_text().replace("seed: 0", "seed: 0\ncolour: blue", 1))
    assert "colour: unknown key 'colour'\n    hint: remove it, or check its spelling" in cli("validate", str(
        tmp_path / "s.yaml")).err, "nothing near: no guess"


def test_at_least_25_distinct_invalid_inputs():
    assert len({c[0] for c in CASES}) >= 25


def test_errors_carry_line_and_column(cli, tmp_path):
    spec = tmp_path / "study.yaml"
    spec.write_text(QUICKSTART.read_text().replace("n_head: 4}", "n_head: 5}"))
    result = cli("validate", str(spec))
    line = next(i for i, text in enumerate(spec.read_text().splitlines(), 1) if "n_head: 5" in text)
    assert f"study.yaml:{line}:5: model.sizes.s: n_embd (64) must be divisible by n_head (5)" in result.err


def test_every_error_is_reported_at_once(cli, tmp_path):
    spec = tmp_path / "study.yaml"
    study = copy.deepcopy(BASE)
    study["seed"] = -1
    study["training"]["max_epochs"] = 0
    study["hpo"]["tpe"]["budget_fraction"] = 2
    spec.write_text(yaml.safe_dump(study))
    result = cli("validate", str(spec))
    assert result.code == 2
    assert "3 errors" in result.err
    for field in ("seed", "training.max_epochs", "hpo.tpe.budget_fraction"):
        assert f": {field}:" in result.err


def test_every_cross_section_rule_that_fails_is_reported_at_its_key(cli, tmp_path):
    spec = tmp_path / "study.yaml"
    spec.write_text(NFF.replace("precision: 32-true", "precision: 32-true\n  compile: true\n  devices: 2")
                    + "generation: {samples: 10}\n")
    result = cli("validate", str(spec))
    lines = spec.read_text().splitlines()
    at = {key: next(i for i, text in enumerate(lines, 1) if text.startswith(key)) for key in
          ("  compile", "  devices", "generation")}
    assert result.code == 2 and "3 errors" in result.err, result.err
    assert f"study.yaml:{at['  compile']}:3: training.compile: model.family 'painn' cannot be compiled" in result.err
    assert f"study.yaml:{at['  devices']}:3: training.devices: model.family 'painn' trains on one device" in result.err
    assert f"study.yaml:{at['generation']}:1: generation: model.family 'painn' does not generate molecules" \
        in result.err


def test_every_rule_of_a_section_that_fails_is_reported(cli, tmp_path):
    spec = tmp_path / "study.yaml"
    study = copy.deepcopy(BASE)
    study["data"]["sizes"] = [3000, 1000, 30000]
    study["model"]["sizes"]["s"] = {"n_layer": 1000, "n_embd": 65535, "n_head": 4}
    spec.write_text(yaml.safe_dump(study))
    result = cli("validate", str(spec))
    assert result.code == 2 and "4 errors" in result.err, result.err
    for problem in ("data.sizes: [3000, 1000, 30000] must be strictly ascending",
                    "data.sizes: the largest size (30000) plus validation",
                    "model.sizes.s: n_embd (65535) must be divisible by n_head (4)",
                    "model.sizes.s: n_layer 1000 × n_embd 65535 makes about 5.2e+13 non-embedding parameters"):
        assert problem in result.err

    study = copy.deepcopy(BASE)
    study["hpo"]["tpe"].update(estimator="tse", last_epochs=2, ema_decay=0.8, margin=0.1)
    study["executor"] = {"slurm": {"sbatch": {"array": "1-3", "ntasks-per-node": 2, "time": 120, "qos": True,
                                              "cpus-per-task": "many"}}}
    spec.write_text(yaml.safe_dump(study))
    result = cli("validate", str(spec))
    assert result.code == 2 and "8 errors" in result.err, result.err
    for problem in ("hpo.tpe.last_epochs: is read by estimator tse_e alone", "hpo.tpe.ema_decay: is read by estimator "
                    "tse_ema alone", "hpo.tpe.margin: drops kept configurations", "executor.slurm.sbatch.array: "
                    "chemspec launch sets --array", "executor.slurm.sbatch.ntasks-per-node: chemspec launch sets",
                    "executor.slurm.sbatch.qos: needs a value", "executor.slurm.sbatch.cpus-per-task: many is not a count",
                    "executor.slurm.sbatch.time: set it as executor.slurm.time_min"):
        assert problem in result.err


def test_unknown_key_hint_lists_allowed_keys(cli, tmp_path):
    spec = tmp_path / "study.yaml"
    spec.write_text(mutate("training.precison", "32-true"))
    result = cli("validate", str(spec))
    assert "allowed here:" in result.err and "precision" in result.err


def test_verbose_shows_traceback_of_internal_errors_only_when_asked(cli, tmp_path):
    result = cli("validate", str(tmp_path / "absent.yaml"))
    assert result.code == 2 and "file not found" in result.err and "Traceback" not in result.err
    for args in (["-v", "validate", str(tmp_path / "absent.yaml")], ["validate", str(tmp_path / "absent.yaml"), "-v"],
                 ["validate", "--verbose", str(tmp_path / "absent.yaml")]):
        verbose = cli(*args)
        assert verbose.code == 2, "-v adds the traceback and keeps the exit code"
        assert "Traceback" in verbose.err and "SpecError" in verbose.err and "file not found" in verbose.err


def test_a_missing_file_is_named_without_a_line_or_column(cli, tmp_path):
    result = cli("validate", str(tmp_path / "absent.yaml"))
    assert f"{tmp_path / 'absent.yaml'}: file not found" in result.err and ":0:0" not in result.err


def test_a_study_that_cannot_be_read_exits_2_naming_it(cli, tmp_path, monkeypatch):
    spec = tmp_path / "study.yaml"
    spec.write_text(QUICKSTART.read_text())

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(spec), "read_text", denied)
    for verb in ("validate", "compile"):
        result = cli(verb, str(spec), cwd=tmp_path)
        assert result.code == 2 and f"{spec}: cannot read the file: Permission denied\n    hint: check that you " \
                                    "may read it and the folders above it" in result.err, result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


def test_a_study_path_too_long_to_open_says_to_shorten_it(cli, tmp_path):
    result = cli("validate", "s" * 300 + ".yaml", cwd=tmp_path)
    assert result.code == 2 and "cannot read the file: File name too long\n    hint: shorten the path" in result.err


def test_unquoted_exponent_floats_are_numbers_as_in_yaml_1_2(cli, tmp_path):
    spec = tmp_path / "study.yaml"
    text = QUICKSTART.read_text().replace("[1.0e-3, 3.0e-3]", "[1e-3, 3E-3]")
    spec.write_text(text.replace("accelerator: cpu", "accelerator: cpu\n  optimizer: {betas: [0.9, 0.95]}"))
    assert cli("compile", str(spec), "--root", str(tmp_path / "out"), cwd=tmp_path).code == 0
    params = yaml.safe_load((tmp_path / "out" / "params.yaml").read_text())
    tpe = params["cells"]["tpe"].values()
    assert sorted(cell["hparams"]["learning_rate"] for cell in tpe) == [1e-3, 3e-3]
    assert {tuple(cell["training"]["optimizer"]["betas"]) for cell in tpe} == {(0.9, 0.95)}


@pytest.mark.parametrize("old,new,expected", [
    ("seed: 0", "seed: 0042", "study.yaml:4:7: seed: unreadable value: the integer 0042 has a leading zero, which YAML "
                              "1.1 reads as octal (or as text) and YAML 1.2 as 42\n    hint: write 42, or quote it"),
    ("accelerator: cpu", "accelerator: cpu\n  compile: yes",
     'training.compile: Input should be a valid boolean or \'cuda-graphs\' (got "yes")'),
    ("confidence: 0.95", "confidence: 0.95\nexecutor: {slurm: {time_min: 1:30}}",
     'executor.slurm.time_min: Input should be a valid integer (got "1:30")'),
    ("seed: 0", "seed: 0b101", 'seed: Input should be a valid integer (got "0b101")'),
])
def test_plain_values_are_read_by_yaml_1_2_and_the_forms_it_reads_otherwise_are_refused(cli, tmp_path, old, new,
                                                                                       expected):
    spec = tmp_path / "study.yaml"
    spec.write_text(QUICKSTART.read_text().replace(old, new, 1))
    result = cli("validate", str(spec))
    assert result.code == 2 and expected in result.err, result.err


def test_booleans_are_true_and_false_and_keys_are_the_text_written(tmp_path):
    from chemspec.specs import load_study

    text = QUICKSTART.read_text().replace("xs", "on").replace("accelerator: cpu", "accelerator: cpu\n  compile: FALSE")
    (tmp_path / "study.yaml").write_text(text.replace("seed: 0", "seed: 0x2A"))
    study = load_study(tmp_path / "study.yaml")
    assert list(study.model.sizes) == ["on", "s", "m"] and study.hpo.tpe.model_size == "on"
    assert study.training.compile is False and study.seed == 42


@pytest.mark.parametrize("content,expected", [
    ("smi\nCCO\n", "data.source.column: 'smiles' is not a column of 'mols.csv' (the header has ['smi'])"),
    ("", "data.source.column: 'smiles' is not a column of 'mols.csv' (the file is empty)"),
    ("CCO\nCCN\n", "(its first line is a molecule, 'CCO', so it has no header); leave column out, which reads each "
     "line's first field (a name may follow)"),
    ("CCO\tm0\nCCN\tm1\n", "(its first line is a molecule, 'CCO', so it has no header); leave column out"),
    ("CCO,m0\nCCN,m1\n", "(its first line is a molecule, 'CCO', so it has no header); add a header line that names "
     "its columns (as smiles,name) and keep data.source.column"),
    ("SMILES \nCCO\n", "(the header has ['SMILES ']); fix the column name (did you mean 'SMILES '?)"),
    ("Smile,id\nCCO,1\n", "fix the column name (did you mean 'Smile'?)"),
    ("name\nCCN\n", "(the header has ['name']); fix the column name, or leave column out for a file of one SMILES"),
    ("id\tsmiles\n1\tCCO\n", "the file looks tab-separated; SMILES files are read as comma-separated: convert it"),
    ("id;smiles\n1;CCO\n", "the file looks semicolon-separated; SMILES files are read as comma-separated: convert it"),
    (gzip.compress(b"smiles\nCCO\n", mtime=0),  # mtime=0: every xdist worker must collect the same bytes
     "data.source.file: 'mols.csv' is compressed; SMILES files are read as plain text"),
    ("id,name,smiles\n1,aspirin,none\n2,ethanol,?\n3,x,CCO?\n", "none of 3 molecules drawn from it (column "
     "'smiles') is a SMILES RDKit reads (the first: 'none', '?', 'CCO?'); check that the file holds SMILES"),
    ("smiles,canonical\nethanol,CCO\nethylamine,CCN\n", "is a SMILES RDKit reads (the first: 'ethanol', "
     "'ethylamine'); column 'canonical' holds them ('CCO'): set data.source.column"),
    ("id,smi,name\n1,CCO,x\n2,CCN,y\n", "(the header has ['id', 'smi', 'name']); fix the column name (did you mean "
     "'smi'?)"),
    (b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00\xff\xfe", "data.source.file: 'mols.csv' is a spreadsheet "
     "(Excel's format); save its sheet as CSV (UTF-8) and name that file"),
    (None, "data.source.file: 'mols.csv' is a directory; give the data file in it")])
def test_a_data_file_that_cannot_serve_is_named(cli, tmp_path, content, expected):
    if content is None:
        (tmp_path / "mols.csv").mkdir()
    elif isinstance(content, bytes):
        (tmp_path / "mols.csv").write_bytes(content)
    else:
        (tmp_path / "mols.csv").write_text(content)
    spec = tmp_path / "study.yaml"
    spec.write_text(mutate("data.source", {"file": "mols.csv", "column": "smiles"}))
    result = cli("validate", str(spec))
    assert result.code == 2 and expected in result.err, result.err


@pytest.mark.parametrize("content,expected", [
    ("id\tsmiles\tact\n1\tCCO\t0.5\n", "data.source.file: 'mols.csv' starts with a header ('id\\tsmiles\\tact'), "
     "which is read as a molecule without data.source.column: convert it to comma-separated (it looks "
     "tab-separated) and set data.source.column: smiles"),
    ("SMILES\nCCO\n", "starts with a header ('SMILES'), which is read as a molecule without data.source.column: set "
     "data.source.column: SMILES"),
    ("[C][C][Branch1][C][O]\n[C][C][N]\n", "data.source.file: 'mols.csv' holds SELFIES ('[C][C][Branch1][C][O]'); it "
     "must hold SMILES, which chemspec encodes itself (data.representation picks what the model reads): decode them"),
    ("[C][C][O]\n[C][N]\n", "data.source.file: 'mols.csv' holds SELFIES ('[C][C][O]'); it must hold SMILES"),
    ("id;smiles\n1;CCO\n", "starts with a header ('id;smiles'), which is read as a molecule without "
     "data.source.column: convert it to comma-separated and set data.source.column to its SMILES column"),
    ("CC(C)(C)c1ccc2occ(CC(=O)Nc3ccccc3F)c2c1,m0\nCCO,m1\n", "has commas in its first line ('CC(C)(C)c1ccc2occ("
     "CC(=O)Nc3ccccc3F)c2c1,m0'), which no SMILES holds: it reads as a CSV; its first line is a row of molecules, not "
     "a header: add a header line that names its columns (as smiles,name) and set data.source.column to the SMILES "
     "one"),
    ("\n     RDKit          3D\n\n  3  2  0  0  0  0  0  0  0  0999 V2000\n", "data.source.file: 'mols.csv' holds "
     "molfile records (an SD, MOL or MOL2 file); chemspec reads SMILES, one a line or in a CSV column: convert it"),
    ("CHEMBL1\tCCC(C)C\nCHEMBL2\tc1ccccc1O\nCHEMBL3\tCCN\n", "data.source.file: 'mols.csv': none of 3 molecules "
     "drawn from it (the first field of each line) is a SMILES RDKit reads (the first: 'CHEMBL1', 'CHEMBL2', "
     "'CHEMBL3'); field 2 of each line holds them ('CCC(C)C'): put the SMILES first"),
    ("InChI=1S/CH4/h1H4\nInChI=1S/C2H6/c1-2/h1-2H3\n", "none of 2 molecules drawn from it (the first field of "
     "each line) is a SMILES RDKit reads (the first: 'InChI=1S/CH4/h1H4', 'InChI=1S/C2H6/c1-2/h1-2H3'); check that "
     "the file holds SMILES"),
], ids=["tsv", "header", "selfies", "selfies-rdkit-reads-as-radicals", "semicolons", "csv-without-header", "sdf",
        "name-first", "inchi"])
def test_a_smiles_file_without_column_that_would_read_no_molecule_is_named_at_validate(cli, tmp_path, content,
                                                                                        expected):
    """Each passed validate, and the data stage then found no valid molecule and pointed at the column."""
    (tmp_path / "mols.csv").write_text(content)
    spec = tmp_path / "study.yaml"
    spec.write_text(mutate("data.source", {"file": "mols.csv"}))
    result = cli("validate", str(spec))
    assert result.code == 2 and expected in result.err, result.err
    for first in ("CCO smiles_0001", "[CH3][CH2][OH]", "[2H][CH2][2H] deuterated", "[Na+].[Cl-] salt", "[O][O]",
                  "[CH2][CH2] ethylene diradical", "C(C=O smiles_0001"):
        (tmp_path / "mols.csv").write_text(f"{first}\nCCN amine\n")  # SMILES (the last one broken), a name after
        err = cli("validate", str(spec)).err
        assert "header" not in err and "SELFIES" not in err and "has 2; lower the sizes" in err, err


def test_a_data_path_that_is_a_device_or_pipe_is_not_called_missing(cli, tmp_path):
    os.mkfifo(tmp_path / "mols.csv")
    spec = tmp_path / "study.yaml"
    spec.write_text(mutate("data.source", {"file": "mols.csv", "column": "smiles"}))
    result = cli("validate", str(spec))
    assert result.code == 2 and ("data.source.file: 'mols.csv' is not a regular file (a device, a pipe or a socket); "
                                 "give the data file") in result.err, result.err


@pytest.mark.parametrize("header", ["id,smiles", "smiles,logp"])
def test_a_csv_given_without_its_column_is_named_at_validate_not_at_the_data_stage(cli, tmp_path, header):
    (tmp_path / "mols.csv").write_text(f"{header}\n" + "1,CCO\n" * 3000)
    spec = tmp_path / "study.yaml"
    spec.write_text(mutate("data.source", {"file": "mols.csv"}))
    result = cli("validate", str(spec))
    assert result.code == 2 and f"'mols.csv' has commas in its first line ({header!r}), which no SMILES holds: it " \
        f"reads as a CSV; set data.source.column to its SMILES column, one of {header.split(',')}" in result.err, \
        result.err


def test_a_csv_with_a_byte_order_mark_and_blank_lines_validates(cli, tmp_path):
    (tmp_path / "mols.csv").write_bytes("\ufeff\nsmiles\n".encode() + b"CCO\n" * 3000)
    spec = tmp_path / "study.yaml"
    study = yaml.safe_load(mutate("data.source", {"file": "mols.csv", "column": "smiles"}))
    study["data"].update(sizes=[300, 500, 1000], validation=500, test=500)  # three: quickstart fits joint
    study["hpo"]["tpe"].update(data_size=1000, budget_fraction=0.5)  # 40 TPE steps: past the 20 of warm-up
    spec.write_text(yaml.safe_dump(study))
    assert cli("validate", str(spec)).code == 0
    study["data"]["sizes"] = [300, 500, 2001]
    study["hpo"]["tpe"]["data_size"] = 2001
    spec.write_text(yaml.safe_dump(study))
    assert "needs 3001 but data.source.file 'mols.csv' has 3000" in cli("validate", str(spec)).err
    study["data"]["source"]["max_molecules"] = 2500  # the cap, not the file, is what is short: it names the cap
    spec.write_text(yaml.safe_dump(study))
    assert "needs 3001 but data.source.file 'mols.csv' has 3000" in cli("validate", str(spec)).err
    study["data"]["source"]["max_molecules"] = 2000
    study["data"]["sizes"] = [300, 500, 1500]
    study["hpo"]["tpe"]["data_size"] = 1500
    spec.write_text(yaml.safe_dump(study))
    assert ("needs 2500 but data.source.max_molecules reads 2000 of the 3000 in data.source.file 'mols.csv'; raise "
            "data.source.max_molecules to at least 2500, or lower the sizes") in cli("validate", str(spec)).err


def test_sizes_beyond_moses_max_molecules_name_the_cap(cli, tmp_path):
    study = yaml.safe_load(QUICKSTART.read_text())
    study["data"]["source"]["max_molecules"] = 5000
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    result = cli("validate", str(tmp_path / "study.yaml"))
    assert result.code == 2 and ("needs 12000 but data.source.max_molecules reads 5000 of the 1584663 in the source; "
                                 "raise data.source.max_molecules to at least 12000, or lower the sizes") in result.err


def test_valid_quickstart_validates(cli):
    result = cli("validate", str(QUICKSTART))
    assert result.code == 0
    assert "valid study 'quickstart'" in result.out


def test_schema_is_json_schema_of_the_study(cli):
    import json

    result = cli("schema")
    schema = json.loads(result.out)
    assert result.code == 0
    assert schema["title"] == "Study"
    assert {"study", "data", "model", "training", "hpo"} <= set(schema["required"])
    assert "description" in schema["properties"]["seed"]


NFF = QUICKSTART.with_name("quickstart-nff.yaml").read_text()


@pytest.mark.parametrize("text,expected", [
    (NFF.replace("n_rbf: 16", "n_rbf: 1"), "model.n_rbf: Input should be greater than or equal to 2 (got 1)"),
    (NFF.replace("temperature_K: 500", "temperature_K: 1000000"),
     "data.source.temperature_K: Input should be less than or equal to 5000 (got 1000000)"),
    (NFF.replace("timestep_fs: 0.5", "timestep_fs: 1000000"),
     "data.source.timestep_fs: Input should be less than or equal to 5 (got 1000000)"),
    *[(NFF.replace("[water, ethanol, methanol]", f"[water, '{smiles}']"), f"data.source.molecules.1: '{smiles}' {why}")
      for smiles, why in [("", "has no atoms, hydrogens included; MD needs at least two"),
                          ("[Ar]", "has one atom, hydrogens included; MD needs at least two"),
                          ("B(O)(O)O", "has atoms that MMFF has no parameters for"),
                          ("O=[Xe]=O", "has atoms that MMFF has no parameters for")]],
])
def test_force_field_settings_the_models_cannot_train_with_are_refused(cli, tmp_path, text, expected):
    spec = tmp_path / "study.yaml"
    spec.write_text(text)
    result = cli("validate", str(spec))
    assert result.code == 2 and expected in result.err, result.err


def test_gpu_settings_beside_accelerator_cpu_are_noted_at_validate_and_compile(cli, tmp_path):
    """README's GPU settings pasted into the quickstart, which keeps `accelerator: cpu`, validated and trained on
    the CPU without a word."""
    spec = tmp_path / "study.yaml"
    gpu = QUICKSTART.read_text().replace("accelerator: cpu", "accelerator: cpu\n  compile: cuda-graphs\n  packing: 256")
    spec.write_text(gpu.replace("precision: 32-true", "precision: bf16-mixed"))
    note = (r"note: training.accelerator: cpu trains every cell on the CPU, where precision: bf16-mixed and compile: "
            r"cuda-graphs speed nothing, and bf16 rounds the numbers \(they are for GPUs\): leave accelerator out "
            r"\(auto takes a GPU where one is visible\) or set gpu")
    result = cli("validate", str(spec), cwd=tmp_path)
    assert result.code == 0 and re.search(note, result.err), result.err
    result = cli("compile", str(spec), "--root", str(tmp_path / "out"), cwd=tmp_path)
    assert result.code == 0 and re.search(note, result.err), result.err
    spec.write_text(spec.read_text().replace("  accelerator: cpu\n", ""))
    result = cli("validate", str(spec), cwd=tmp_path)
    assert result.code == 0 and "note:" not in result.err, result.err


def test_a_chemgpt_size_too_large_for_a_cpu_is_noted_under_accelerator_cpu(cli, tmp_path):
    """A 2.4e9-parameter size beside accelerator: cpu validated and compiled without a word (outside review)."""
    spec = tmp_path / "study.yaml"
    spec.write_text(QUICKSTART.read_text().replace("m:  {n_layer: 4, n_embd: 64, n_head: 4}",
                                                   "m:  {n_layer: 48, n_embd: 2048, n_head: 16}"))
    note = ("note: model.sizes.m: about 2.4e+09 non-embedding parameters under training.accelerator: cpu, where a "
            "training step of it takes seconds to minutes: set accelerator: gpu")
    for args in (("validate", str(spec)), ("compile", str(spec), "--root", str(tmp_path / "out"))):
        result = cli(*args, cwd=tmp_path)
        assert result.code == 0 and note in result.err, result.err
    assert "model.sizes.xs" not in result.err, "the quickstart's own sizes are fine on a CPU"
    spec.write_text(spec.read_text().replace("  accelerator: cpu\n", ""))
    assert "note:" not in cli("validate", str(spec), cwd=tmp_path).err


def test_a_max_molecules_above_the_packages_size_is_noted(cli, tmp_path):
    """3,000,000 of MOSES's 1,584,663 validated without a word; only the data stage said so, at run time."""
    spec = write_spec(tmp_path / "study.yaml", tiny_study(**{"data.source.max_molecules": 3_000_000}))
    result = cli("validate", str(spec), cwd=tmp_path)
    assert result.code == 0 and ("note: data.source.max_molecules: 3,000,000 is more than the 1,584,663 molecules of "
                                 "moses, so all of them are read; leave it out to say so") in result.err, result.err
    spec = write_spec(tmp_path / "study.yaml", tiny_study(**{"data.source.max_molecules": 1_584_663}))
    assert "note:" not in cli("validate", str(spec), cwd=tmp_path).err


def test_an_empty_smiles_column_is_refused_not_taken_for_none(cli, tmp_path):
    """`column: ''` read the file as one SMILES a line, as leaving column out does."""
    (tmp_path / "mols.csv").write_text("smiles\nCCO\n")
    spec = tmp_path / "study.yaml"
    spec.write_text(mutate("data.source", {"file": "mols.csv", "column": ""}))
    result = cli("validate", str(spec))
    assert result.code == 2 and ("data.source.column: String should have at least 1 character (got \"\")\n    hint: "
                                 "give a value, or leave the key out") in result.err, result.err


@pytest.mark.parametrize("content,column", [
    ("smiles,name\n" + "c1ccnc1,bad\n" * 21 + "CCO,ok\n" * 12_000, "smiles"),  # a sorted export: broken rows first
    ("CC(C)Cc1ccc(cc1)C(C)C(=O)O\tibuprofen, (S)-\n" + "CCO\tethanol\n" * 12_000, None),  # a comma in a name
    ("NO,Smiles,Name\n" + "1,CCO,x\n" * 12_000, "Smiles"),  # header cells that RDKit reads
], ids=["broken-rows-first", "comma-in-a-name", "header-cells-read-as-smiles"])
def test_a_smiles_file_the_data_stage_reads_is_not_refused_at_validate(cli, tmp_path, content, column):
    (tmp_path / "mols.csv").write_text(content)
    spec = tmp_path / "study.yaml"
    spec.write_text(mutate("data.source", {"file": "mols.csv", **({"column": column} if column else {})}))
    result = cli("validate", str(spec))
    assert result.code == 0, result.err


@pytest.mark.parametrize("content,expected", [
    ("NO,Smiles,Name\n1,CCO,x\n", "(the header has ['NO', 'Smiles', 'Name']); fix the column name (did you mean "
     "'Smiles'?)"),
    ("id,smiles\n" + "1\tCCO\n" * 30, "none of its rows has a cell under column 'smiles' (cell 2 of the header), so "
     "the data stage would read none: are its rows separated by commas, as its header is? Convert the whole file"),
    ("smiles\n\"" + "C" * 140_000 + "\"\n", "data.source.file: 'mols.csv' does not read as a CSV (field larger than "
     "field limit"),
    ("\"" + "C" * 140_000 + "\"\nCCO\n", "data.source.file: 'mols.csv' does not read as a CSV (field larger than "
     "field limit"),
], ids=["near-name-first", "rows-not-comma-separated", "csv-error", "csv-error-in-the-header"])
def test_a_smiles_csv_whose_rows_cannot_serve_is_named(cli, tmp_path, content, expected):
    (tmp_path / "mols.csv").write_text(content)
    spec = tmp_path / "study.yaml"
    spec.write_text(mutate("data.source", {"file": "mols.csv", "column": "smiles"}))
    result = cli("validate", str(spec))
    assert result.code == 2 and expected in result.err and "internal error" not in result.err, result.err


def test_validate_draws_its_sample_rows_from_the_whole_file_and_counts_every_row():
    from chemspec.specs.smiles_file import _reservoir

    for n in (0, 5, 40, 100_000):
        sample, seen = _reservoir(iter(range(n)), 40)
        assert seen == n and len(sample) == min(n, 40) and len(set(sample)) == len(sample)
    sample, _ = _reservoir(iter(range(100_000)), 40)
    assert sum(value >= 50_000 for value in sample) >= 10, "the second half of the file is drawn from too"
    assert _reservoir(iter(range(100_000)), 40) == _reservoir(iter(range(100_000)), 40), "seeded"
