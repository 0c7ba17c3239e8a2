"""Property-based fuzzing of study-spec validation, and a shell/DVC injection check of `chemspec compile`.

Hypothesis mutates valid studies (specs/quickstart.yaml, tiny_study() and its file, MD and atoms-file
variants): keys deleted, renamed or added, values swapped for other types (huge ints, NaN, inf, deep
or cyclic nesting, None, booleans, lists, mappings), injection payloads put in every string field,
and the YAML text truncated, byte-flipped or spliced with hostile snippets (alias loops, tags, deep
brackets, 5000-digit ints, lone surrogates). Each outcome must be a valid Study that expands into
cells without error and without any `$` reaching dvc.yaml beyond DVC's own foreach variables, or a
SpecError whose every issue names its field (YAML-level problems say so instead). Anything else is a
bug. About 5,200 examples a run, derandomized so CI is reproducible; under a minute on 2 cores.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chemspec.compiler import expand
from chemspec.compiler.render import dvc_pipeline
from chemspec.errors import SpecError
from chemspec.specs import Study, load_study, parse_study
from tests.conftest import REPO, write_spec
from tests.unit.spec_mutations import BASES, PAYLOADS, mutated, mutated_text, with_string

FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
YAML_LEVEL = re.compile(r"YAML syntax error|file is empty|must be a YAML mapping|alias bomb|not allowed in a "
                        r"study file|not UTF-8|larger than|nested more than|refers to itself|unreadable value")
ALLOWED_VARS = {"key", "item.identity", "item.data_size", "item.selected"}
COMMAND = re.compile(r"chemspec run [a-z]+ --params params\.yaml "
                     r"(--identity [0-9a-f]{16}|--cell \$\{key\} --identity \$\{item\.identity\})")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "mols.csv").write_text("smiles\n" + "CCO\n" * 1300)
    (root / "traj.xyz").write_bytes(b"")
    return root


def outcome(call: Callable[[], Study]) -> Study | SpecError:
    """Run a validation; return the Study or the SpecError, after checking the error names its fields."""
    try:
        study = call()
    except SpecError as exc:
        assert exc.issues, "a SpecError without issues"
        for issue in exc.issues:
            assert issue.message and (issue.field or YAML_LEVEL.search(issue.message)), issue
        assert str(exc)
        return exc
    expand_checked(study)
    return study


def expand_checked(study: Study) -> None:
    """A valid study expands into its whole grid, and only DVC's foreach variables use `$` in dvc.yaml."""
    cells = expand(study)
    configs = len(study.hpo.grid.configs())
    searches = len(study.model.size_names()) if study.hpo.tpe.scope == "model_size" else 1
    assert len(cells.tpe) == (configs * searches if configs > 1 else 0), "one configuration has nothing to rank"
    assert len(cells.select.unranked) == (searches if configs == 1 else 0)
    assert len(cells.train) == len(study.model.size_names()) * len(study.data.sizes) * study.hpo.tpe.keep
    text = yaml.safe_dump(dvc_pipeline(cells, getattr(study.data.source, "file", None)))
    assert set(re.findall(r"\$\{([^}]*)\}", text)) <= ALLOWED_VARS, text
    assert text.count("$") == text.count("${"), text


@settings(FUZZ, max_examples=2300)
@given(case=mutated())
def test_mutated_study_trees_validate_or_raise_spec_error(workdir, case):
    tree = case.tree
    event(type(outcome(lambda: parse_study(tree, "study.yaml", {}, workdir))).__name__)


STRING_FIELDS = {
    "quickstart": ["study", "model.sizes.<key>", "hpo.tpe.model_size", "archive.remote"],
    "tiny": ["study", "model.sizes.<key>", "executor.slurm.partition", "executor.slurm.account"],
    "smiles_file": ["data.source.file", "data.source.column"],
    "generate": ["data.source.molecules.0", "data.source.molecules.1"],
    "atoms_file": ["data.source.file", "data.source.energy_key", "data.source.forces_key"],
}
PATTERNS = {"study": r"[a-z0-9][a-z0-9_-]{0,63}", "model.sizes.<key>": r"[a-z0-9][a-z0-9_]{0,31}",
            "hpo.tpe.model_size": r"[a-z0-9][a-z0-9_]{0,31}", "archive.remote": r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}",
            "executor.slurm.partition": r"[A-Za-z0-9][A-Za-z0-9_.,-]{0,63}",
            "executor.slurm.account": r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"}
UNSAFE_PATH = re.compile(r"[$`\x00-\x1f\x7f]")


def must_reject(field: str, value: str) -> bool:
    if field in PATTERNS:
        return re.fullmatch(PATTERNS[field], value) is None
    return field == "data.source.file" and bool(UNSAFE_PATH.search(value))


@st.composite
def string_cases(draw: st.DrawFn) -> tuple[str, str, str]:
    name = draw(st.sampled_from(sorted(STRING_FIELDS)))
    field = draw(st.sampled_from(STRING_FIELDS[name]))
    payload = draw(st.sampled_from(PAYLOADS) | st.text(max_size=20))
    return name, field, draw(st.text(max_size=3)) + payload + draw(st.sampled_from(["", "x", "\n", "$"]))


@settings(FUZZ, max_examples=1100)
@given(case=string_cases())
def test_payloads_in_every_string_field_are_rejected_where_they_could_reach_a_command(workdir, case):
    name, field, value = case
    result = outcome(lambda: parse_study(with_string(name, field, value), "study.yaml", {}, workdir))
    if must_reject(field, value):
        assert isinstance(result, SpecError), (field, value)
        prefix = "model.sizes." if field == "model.sizes.<key>" else field
        named = [i for i in result.issues if i.field.startswith(prefix)]
        assert named, result
        assert field != "data.source.file" or any(m in i.message for i in named for m in ("rename", "surrogate"))


@settings(FUZZ, max_examples=1500)
@given(text=mutated_text() | st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
def test_mutated_yaml_text_validates_or_raises_spec_error(workdir, text):
    spec = workdir / "study.yaml"
    spec.write_bytes(text)
    event(type(outcome(lambda: load_study(spec))).__name__)
    assert not list(workdir.rglob("MARKER*"))


@settings(FUZZ, max_examples=300)
@given(case=mutated())
def test_mutated_trees_written_as_yaml_locate_their_errors(workdir, case):
    """The same tree mutations through a real file, so error positions come from the YAML."""
    tree = case.tree
    try:
        text = yaml.safe_dump(tree, sort_keys=False, allow_unicode=False)
    except (yaml.YAMLError, RecursionError, ValueError):
        return  # cyclic, deep or out-of-range values that PyYAML cannot write are covered by the tree test
    spec = workdir / "tree.yaml"
    spec.write_text(text)
    result = outcome(lambda: load_study(spec))
    if isinstance(result, SpecError):
        assert all(i.line >= 1 or i.message.startswith(("file", "YAML syntax error")) for i in result.issues)


@pytest.mark.parametrize("name", sorted(BASES))
def test_every_base_study_is_valid(workdir, name):
    assert isinstance(outcome(lambda: parse_study(BASES[name], "study.yaml", {}, workdir)), Study)


INJECTION = ["x; touch MARKER", "$(touch MARKER)", "`touch MARKER`", "../../etc/passwd", "a\nb", "${key}",
             "ünïcødé"]


@pytest.mark.parametrize("name,field", [(n, f) for n, fields in STRING_FIELDS.items() for f in fields])
def test_compile_with_injection_payloads_runs_nothing(cli, tmp_path, name, field):
    """Compile specs carrying payloads in each string field: no marker appears, names are refused."""
    (tmp_path / "mols.csv").write_text("smiles\n" + "CCO\n" * 1300)
    frame = '3\nProperties=species:S:1:pos:R:3:F:R:3 E=-14.2 pbc="F F F"\n' + "".join(
        f"{z} {x} 0 0 0 0 0\n" for z, x in (("O", 0.0), ("H", 0.96), ("H", -0.96)))
    (tmp_path / "traj.xyz").write_text(frame * 1300)  # as many water frames as the sizes need: compile counts them
    for payload in INJECTION:
        if field == "data.source.file" and "\n" not in payload and not payload.startswith("../"):
            (tmp_path / payload).write_bytes((tmp_path / BASES[name]["data"]["source"]["file"]).read_bytes())
        out = tmp_path / "out"
        out.mkdir()
        spec = write_spec(tmp_path / "study.yaml", with_string(name, field, payload))
        result = cli("compile", str(spec), "--root", str(out), cwd=tmp_path)
        assert "Traceback" not in result.err and "internal error" not in result.err, result.err
        assert not list(tmp_path.rglob("MARKER*")) and not (REPO / "MARKER").exists(), (field, payload)
        if must_reject(field, payload):
            assert result.code == 2 and (field.replace("<key>", "") in result.err), (field, payload, result.err)
            assert not list(out.iterdir())
        elif result.code == 0:
            dvc = (out / "dvc.yaml").read_text()
            assert set(re.findall(r"\$\{([^}]*)\}", dvc)) <= ALLOWED_VARS, dvc
            for stage in yaml.safe_load(dvc)["stages"].values():
                assert COMMAND.fullmatch(stage.get("cmd") or stage["do"]["cmd"]), stage
        else:  # a path that does not exist, a column not in the file's header, a molecule that is neither a
            # known name nor SMILES, or an energy or forces key the atoms file does not hold
            assert result.code == 2 and field.rstrip(".01") in ("data.source.file", "data.source.column",
                                                                "data.source.molecules", "data.source.energy_key",
                                                                "data.source.forces_key")
            assert field.rstrip(".01") in result.err, (field, payload, result.err)
        for path in sorted(out.iterdir()):
            path.unlink()
        out.rmdir()
