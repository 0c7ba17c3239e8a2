"""Study specs: typed, frozen pydantic models, loaded from YAML with every error located by line:column."""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, NamedTuple, Union, get_args, get_origin

from pydantic import ValidationError

from chemspec.errors import SpecError, SpecIssue
from chemspec.specs.base import PROBLEMS_SEPARATOR, STARTER
from chemspec.specs.loader import CORE_SCHEMA, MAX_DEPTH, Positions, field_name, load_yaml
from chemspec.specs.study import CountStructures, Study

__all__ = ["Study", "load_study", "parse_study", "json_schema"]

_NAMED = re.compile(r"^((?:data|model|training|hpo|fit|archive|executor|generation)(?:\.[a-z_0-9][a-z_0-9-]*)*)\b")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_UNICODE = ("the {} holds a lone surrogate (\\uD800-\\uDFFF), which is not valid Unicode",
                "write the character itself, or its full \\U escape")
_TOO_DEEP = "a study is a few levels of plain values; write it out plainly, without loops"
_GRID_KEYS = {("training", "learning_rate"): "hpo.grid.learning_rate", ("training", "batch_size"): "hpo.grid.batch_size"}
"""Keys that are set in hpo.grid only (the training section held dead copies of them until 2026-12-05)."""


def _families() -> str:
    """model.family's values: the one discriminated section whose key a user writes (pydantic lists none
    when the key is missing)."""
    from chemspec.specs.model import ChemGPTModel, GNNModel

    tags = [tag for model in (ChemGPTModel, GNNModel) for tag in get_args(model.model_fields["family"].annotation)]
    return ", ".join(f"'{tag}'" for tag in tags)


def _hint(error: dict, allowed: list[str], nullable: bool = False) -> str:
    kind = error["type"]
    if kind == "extra_forbidden" and (grid := _GRID_KEYS.get(tuple(error["loc"]))):
        return (f"move it to {grid}, the list of values TPE chooses from (e.g. [{_preview(error['input'])}] "
                "for that value alone); every cell trains with the chosen one")
    if kind == "extra_forbidden":
        keys = f"; allowed here: {', '.join(allowed)}" if allowed else ""
        near = difflib.get_close_matches(str(error["loc"][-1]), allowed, n=1)
        return (f"check its spelling (did you mean {near[0]}?), or remove it" if near else
                "remove it, or check its spelling") + keys
    if kind == "missing":
        return "add this key; `chemspec schema` lists every key and its meaning"
    if kind == "literal_error":
        return "use one of the values listed"
    if kind == "finite_number":
        return "give a finite number; .nan and .inf are not settings"
    if kind in ("int_type", "float_type", "bool_type", "string_type"):
        want = {"int_type": "a whole number", "float_type": "a number", "bool_type": "true or false",
                "string_type": "text"}[kind]
        unquote = " without quotes" if _quoted(kind, error.get("input")) else ""
        return f"write {want}{unquote}"
    context, given = error.get("ctx") or {}, error.get("input")
    bound, top = (context["lt"], 99.9) if "lt" in context else (context.get("le"), 100)
    if kind.startswith("less") and bound == 1 and isinstance(given, (int, float)) and 5 <= given <= top:
        return f"give a fraction: {given / 100:g} for {given:g}%"
    if kind.startswith(("int_", "float_", "greater", "less")):
        return "give a number in the allowed range" + (", or null (`chemspec schema` says what null does here)"
                                                       if nullable else "")
    if kind == "string_pattern_mismatch":
        return f"use {_allowed(error['ctx']['pattern'])}; no spaces or shell characters"
    if kind == "string_too_short" and not given:
        return "give a value" + (", or leave the key out (`chemspec schema` says what that does)" if nullable else "")
    if kind == "tuple_length":
        return f"give {error['ctx']['values']} values, as a list"
    if kind == "value_error":
        return ""
    return "see `chemspec schema` for the expected form"


_CORE = {kind: re.compile("|".join(CORE_SCHEMA[tag][0] for tag in tags))
         for kind, tags in (("int_type", ["int"]), ("float_type", ["int", "float"]), ("bool_type", ["bool"]))}
"""Text that YAML 1.2's core schema, which the loader follows, reads unquoted as the type wanted."""


def _quoted(kind: str, given: object) -> bool:
    """Whether `given` is text that would be the value wanted without its quotes (`seed: "3"`, not `seed: yes`
    or `seed: 1_000`, which the loader reads as text unquoted too)."""
    return isinstance(given, str) and kind in _CORE and _CORE[kind].fullmatch(given) is not None


def _allowed(pattern: str) -> str:
    """The characters a name pattern's last class allows, in words: "^[a-z0-9][a-z0-9_-]{0,63}$" ->
    "lowercase letters, digits, '_' and '-' (starting with a letter or digit), at most 64"."""
    first, rest = re.findall(r"\[([^\]]+)\]", pattern)[-2:] if pattern.count("[") > 1 else (None, pattern)
    words = ["letters" if "A-Z" in rest else "lowercase letters", "digits"]
    marks = [f"'{c}'" for c in rest.replace("A-Z", "").replace("a-z", "").replace("0-9", "")]
    listed = ", ".join(words + marks[:-1]) + (f" and {marks[-1]}" if marks else "")
    start = " (starting with a letter or digit)" if first is not None else ""
    longest = re.search(r"\{0,(\d+)\}", pattern)
    return listed + start + (f", at most {int(longest.group(1)) + 1} characters" if longest else "")


class _Located(NamedTuple):
    path: tuple
    """The field path as the YAML has it."""
    union: bool
    """Whether the error is about one member of a union (pydantic names the member; the YAML does not)."""
    parent: Any
    """The type that holds the last part of the path: a spec model whose keys can be listed, a tuple, ..."""
    own: Any
    """The type of the value at the path."""


def _plain(kind: Any) -> Any:
    """A type without Annotated metadata, and an optional type (X | None) as X."""
    while get_origin(kind) is Annotated:
        kind = get_args(kind)[0]
    if get_origin(kind) in (Union, UnionType):
        members = [m for m in get_args(kind) if m is not type(None)]
        if len(members) == 1:
            return _plain(members[0])
    return kind


def _locate(loc: tuple) -> _Located:
    """Follow a pydantic loc through the spec's types, dropping what pydantic adds but the YAML lacks: the
    tags of discriminated unions (data.source, model), the labels of other unions' members
    (`constrained-int`, `literal['auto']`) and the `[key]` marker of a bad mapping key."""
    from chemspec.specs.atoms_source import AtomsFileSource, GenerateMD
    from chemspec.specs.data import PackageSource, SmilesFileSource
    from chemspec.specs.model import FORCE_FIELDS, ChemGPTModel, GNNModel

    tagged = {"package": PackageSource, "smiles_file": SmilesFileSource, "generate": GenerateMD,
              "atoms_file": AtomsFileSource, "chemgpt": ChemGPTModel, **dict.fromkeys(FORCE_FIELDS, GNNModel)}
    path: list = []
    union, parent, current = False, None, _plain(Study)
    for part in loc:
        if part == "[key]":
            continue
        if get_origin(current) in (Union, UnionType):
            if part in tagged:
                current = tagged[part]
            else:
                union, current = True, None
            continue
        parent = current
        path.append(part)
        fields = getattr(current, "model_fields", None) if isinstance(current, type) else None
        arguments = get_args(current)
        if fields is not None:
            current = fields[part].annotation if part in fields else None
        elif get_origin(current) is dict:
            current = arguments[1]
        elif get_origin(current) is list:
            current = arguments[0]
        elif get_origin(current) is tuple and isinstance(part, int) and part < len(arguments):
            current = arguments[part]
        else:
            current = None
        current = _plain(current)
    return _Located(tuple(path), union, parent, current)


def _fixed_length(kind: Any) -> int | None:
    """The number of values of a fixed-length tuple type (betas), else None."""
    arguments = get_args(kind)
    return len(arguments) if get_origin(kind) is tuple and Ellipsis not in arguments else None


def _position(positions: Positions, path: tuple) -> tuple[int, int]:
    for end in range(len(path), -1, -1):
        if path[:end] in positions:
            return positions[path[:end]]
    return (1, 1)


def _preview(value: object) -> str:
    """The start of a bad input as JSON; one that JSON cannot hold (cyclic, too deep, a huge int) by its type."""
    try:
        return json.dumps(value, default=str)[:60]
    except (ValueError, RecursionError, TypeError):
        return f"a {type(value).__name__} that cannot be shown"


def _rule_issues(message: str, file: str, positions: Positions, path: tuple) -> list[SpecIssue]:
    """The issues of a rule's ValueError: one a line, each at the key its message starts with (cross-field
    rules name the key they are about; point at it rather than at their section)."""
    issues = []
    for problem in message.split(PROBLEMS_SEPARATOR):
        where = path
        if named := _NAMED.match(problem):
            where = tuple(int(p) if p.isdigit() else p for p in named.group(1).split("."))
            problem = problem[named.end():].lstrip(": ")
        issues.append(SpecIssue(file, *_position(positions, where), field_name(where), problem, ""))
    return issues


def _issues(exc: ValidationError, file: str, positions: Positions) -> list[SpecIssue]:
    issues = []
    alternatives: dict[tuple, list[tuple[str, str, object]]] = {}
    for error in exc.errors(include_url=False):
        located = _locate(tuple(error["loc"]))
        path = located.path
        message = error["msg"].removeprefix("Value error, ")
        allowed = sorted(getattr(located.parent, "model_fields", {}))
        # A tuple's error is about the tuple, also where pydantic puts it at the value it found missing.
        within = error["type"] == "missing" and _fixed_length(located.parent) is not None
        values = _fixed_length(located.parent) if within else _fixed_length(located.own)
        if error["type"] == "value_error":
            issues += _rule_issues(message, file, positions, path)
            continue
        if located.union:
            alternatives.setdefault(path, []).append((message, _hint(error, allowed), error.get("input")))
            continue
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            discriminator = error["ctx"]["discriminator"].strip("'")
            path = path + (discriminator,)
            message = (f"{discriminator} {error['ctx'].get('tag', '')!r} is not one of "
                       f"{error['ctx'].get('expected_tags', '')}" if error["type"] == "union_tag_invalid"
                       else f"{discriminator} is missing; expected one of {_families()}")
            error = {**error, "type": "literal_error"}
        elif values is not None:
            path = path[:-1] if within else path
            message = f"needs {values} values (got {_preview(error['input'])})"
            error = {**error, "type": "tuple_length", "ctx": {"values": values}}
        elif error["type"] == "extra_forbidden":
            message = f"unknown key {path[-1]!r}"
        elif error["type"] == "missing":
            message = "required key is missing"
        elif error["type"] in ("model_type", "model_attributes_type", "dict_type"):
            message = f"should be a section of keys (a YAML mapping), not {_preview(error['input'])}"
        elif error["type"] == "too_short":
            least = error["ctx"]["min_length"]
            one, many = ("entry", "entries") if isinstance(error["input"], dict) else ("value", "values")
            message = f"needs at least {least} {one if least == 1 else many} (got {_preview(error['input'])})"
        elif error["input"] is not None and error["type"] != "source":
            message = f"{message} (got {_preview(error['input'])})"
        field = getattr(located.parent, "model_fields", {}).get(path[-1]) if path else None
        nullable = field is not None and type(None) in get_args(field.annotation)
        issues.append(SpecIssue(file, *_position(positions, path), field_name(path), message,
                                _hint(error, allowed, nullable)))
    for path, members in alternatives.items():
        issues.append(SpecIssue(file, *_position(positions, path), field_name(path), _either(members),
                                ", or ".join(dict.fromkeys(hint for _, hint, _ in members if hint))))
    return sorted(dict.fromkeys(issues), key=lambda i: (i.line, i.column, i.field))


def _either(members: list[tuple[str, str, object]]) -> str:
    """One message for the errors of a union's members: `Input should be greater than 0 or 'auto' (got 0)`."""
    prefix = "Input should be "
    messages = [message for message, _, _ in members]
    if all(m.startswith(prefix) for m in messages):
        text = prefix + " or ".join(dict.fromkeys(m.removeprefix(prefix) for m in messages))
    else:
        text = "; or ".join(dict.fromkeys(messages))
    value = members[0][2]
    return text if value is None else f"{text} (got {_preview(value)})"


def _shape_problem(value: object, path: tuple, containers: frozenset[int]) -> tuple[tuple, str, str] | None:
    """The first value nested too deep or containing itself (either would exhaust the stack in validation),
    text with a lone surrogate (not valid Unicode: writing params.yaml would fail), or an integer beyond
    64 bits (no setting is that large, and messages could not print one of over 4300 digits)."""
    if isinstance(value, str) and _SURROGATE.search(value):
        return path, _NOT_UNICODE[0].format("text"), _NOT_UNICODE[1]
    if isinstance(value, int) and abs(value) >= 2**63:
        return path, "the number does not fit in 64 bits", "give a number in the allowed range"
    if not isinstance(value, (dict, list, tuple)):
        return None
    if id(value) in containers:
        return path, "the value refers to itself (a cycle)", _TOO_DEEP
    if len(path) >= MAX_DEPTH:
        return path, f"values nested more than {MAX_DEPTH} levels deep", _TOO_DEEP
    children = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in children:
        if isinstance(key, str) and _SURROGATE.search(key):
            return path + (key,), _NOT_UNICODE[0].format("key"), _NOT_UNICODE[1]
        if found := _shape_problem(child, path + (key,), containers | {id(value)}):
            return found
    return None


def parse_study(raw: object, file: str, positions: Positions, base_dir: Path | None,
                count_structures: CountStructures | None = None) -> Study:
    """Validate plain values as a Study; raise SpecError listing every problem. With `count_structures`, an
    atoms file (read from `base_dir`) must hold the structures the data sizes need."""
    if not isinstance(raw, dict):
        raise SpecError([SpecIssue(file, 1, 1, "", "a study file must be a YAML mapping", STARTER)])
    if found := _shape_problem(raw, (), frozenset()):
        path, message, hint = found
        raise SpecError([SpecIssue(file, *_position(positions, path), field_name(path), message, hint)])
    try:
        return Study.model_validate(raw, context={"base_dir": base_dir, "count_structures": count_structures})
    except ValidationError as exc:
        raise SpecError(_issues(exc, file, positions)) from None


def load_study(path: str | Path, count_structures: CountStructures | None = None, data: bool = True) -> Study:
    """Load and validate a study file (`count_structures` as in parse_study); without `data`, its data file is
    not looked at."""
    path = Path(path)
    raw, positions = load_yaml(path)
    return parse_study(raw, str(path), positions, path.parent if data else None, count_structures)


def json_schema() -> dict:
    return Study.model_json_schema()
