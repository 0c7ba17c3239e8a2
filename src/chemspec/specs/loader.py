"""Safe YAML loading that remembers where every value came from.

Study files come from collaborators, so they are parsed to a node graph with PyYAML's safe composer
and converted by hand: only the plain YAML types are accepted (no tags that construct objects),
duplicate keys are errors, the number of values produced (aliases included) is capped, which
defeats alias bombs, and so is the nesting depth; an alias inside the value it names (a loop) and
numbers too long to read are refused. Every value's position is kept so that validation errors can
say line:column.

Plain values are read by YAML 1.2's core schema, as ML configs are, not by the YAML 1.1 that PyYAML
implements: an unquoted 1e-3 is a number; yes, no, on and off are text (only true and false, in any of
YAML 1.2's three spellings, are booleans); 1:30 is text, not 90 in base 60; mapping keys are the text
written. An integer with a leading zero (0042) is refused: YAML 1.1 reads it as octal (34) and 1.2 as
decimal (42), so the file would mean one thing to chemspec and another to other tools.
"""

from __future__ import annotations

import errno
import math
import re
from pathlib import Path
from typing import Any

import yaml

from chemspec.errors import SpecError, SpecIssue
from chemspec.specs.base import STARTER

MAX_FILE_BYTES = 1 << 20
MAX_VALUES = 100_000
MAX_DEPTH = 32
READ_HINTS = {
    errno.EACCES: "check that you may read it and the folders above it (`ls -l`)",
    errno.EPERM: "check that you may read it and the folders above it (`ls -l`)",
    errno.ENAMETOOLONG: "shorten the path, or move the study file into a folder with a shorter name",
    errno.ELOOP: "a symbolic link in the path points back at itself; fix or remove it",
}
PLAIN_TAGS = {"tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq")}

TAG = "tag:yaml.org,2002:"
CORE_SCHEMA = {  # YAML 1.2.2, section 10.3.2: tag -> the plain values it resolves, by their first characters
    "null": (r"~|null|Null|NULL|", "~nN"),
    "bool": (r"true|True|TRUE|false|False|FALSE", "tTfF"),
    "int": (r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789"),
    "float": (r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)",
              "-+0123456789."),
    "merge": (r"<<", "<"),  # not YAML 1.2, but resolved so that a merge key is refused rather than kept as text
}
LEADING_ZERO = re.compile(r"[-+]?0[0-9]+")


class _CoreSchemaLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's core-schema resolution of plain values."""

    yaml_implicit_resolvers: dict = {}


for _name, (_pattern, _first) in CORE_SCHEMA.items():
    _CoreSchemaLoader.add_implicit_resolver(TAG + _name, re.compile(f"^(?:{_pattern})$"),
                                            list(_first) + ([""] if _name == "null" else []))

Positions = dict[tuple, tuple[int, int]]


def field_name(path: tuple) -> str:
    """A field path as users write it: `model.sizes.xs`; an empty key or one with control characters or
    lone surrogates is quoted and escaped, so no field is blank and none breaks a line of output."""
    return ".".join(str(p) if not isinstance(p, str) or (p and p.isprintable()) else repr(p) for p in path)


class _Converter:
    def __init__(self, file: str):
        self.file = file
        self.positions: Positions = {}
        self.count = 0
        self.open: set[int] = set()

    def issue(self, node: yaml.Node, message: str, hint: str, path: tuple = ()) -> SpecError:
        mark = node.start_mark
        return SpecError([SpecIssue(self.file, mark.line + 1, mark.column + 1, field_name(path), message, hint)])

    def admit(self, node: yaml.Node, path: tuple) -> None:
        """Count a value against the cap, and refuse a tag that is not a plain YAML type."""
        self.count += 1
        if self.count > MAX_VALUES:
            raise self.issue(node, f"more than {MAX_VALUES} values (an alias bomb?)",
                             "write the study out plainly; anchors that multiply values are refused", path)
        if node.tag not in PLAIN_TAGS:
            raise self.issue(node, f"tag {node.tag!r} is not allowed in a study file",
                             "use plain YAML values: strings, numbers, booleans, lists, mappings", path)

    def convert(self, node: yaml.Node, path: tuple) -> Any:
        self.admit(node, path)
        self.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.open:
            raise self.issue(node, "an alias refers to itself: the value contains its own anchor",
                             "write the value out plainly; recursive anchors are refused", path)
        if len(path) >= MAX_DEPTH:
            raise self.issue(node, f"values nested more than {MAX_DEPTH} levels deep",
                             "a study is a few levels deep; check the brackets and indentation", path)
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path)
            return [self.convert(item, path + (i,)) for i, item in enumerate(node.value)]
        finally:
            self.open.discard(id(node))

    def scalar(self, node: yaml.ScalarNode, path: tuple) -> Any:
        kind, text = node.tag.removeprefix(TAG), node.value
        if kind == "str":
            return text
        pattern = CORE_SCHEMA.get(kind, ("(?!)",))[0]  # an explicit !!int or !!bool is read as YAML 1.2 reads it
        if not re.fullmatch(pattern, text):
            raise self.issue(node, f"unreadable value: {text!r} is not a YAML 1.2 {kind}",
                             "write it as YAML 1.2 does, or quote it as a string", path)
        if kind == "null":
            return None
        if kind == "bool":
            return text.lower() == "true"
        if kind == "float":
            special = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}
            return special[text.lower()] if text.lower() in special else float(text)
        try:
            number = int(text, 0) if text[:2] in ("0o", "0x") else int(text)
        except ValueError:  # int() refuses more than sys.get_int_max_str_digits() digits
            raise self.issue(node, "unreadable value: a number too long to read",
                             "give a number of a sensible size, or quote it as a string", path) from None
        if LEADING_ZERO.fullmatch(text):
            raise self.issue(node, f"unreadable value: the integer {text} has a leading zero, which YAML 1.1 "
                             f"reads as octal (or as text) and YAML 1.2 as {number}",
                             f"write {number}, or quote it if it is text", path)
        return number

    def mapping(self, node: yaml.MappingNode, path: tuple) -> dict:
        out: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == TAG + "merge":
                raise self.issue(key_node, "merge keys (<<) are not supported",
                                 "write the keys out in full", path + ("<<",))
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.issue(key_node, "mapping keys must be strings", "quote the key", path + ("<key>",))
            self.admit(key_node, path + (key_node.value,))
            key = key_node.value  # as written: a size named `on` or `1` is that text, not true or 1
            if key in out:
                raise self.issue(key_node, f"duplicate key {key!r}",
                                 "remove one of the two; YAML would silently keep the last", path + (key,))
            self.positions[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = self.convert(value_node, path + (key,))
        return out


def _line_column(text: str, offset: int) -> tuple[int, int]:
    return text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)


def _problem(exc: yaml.MarkedYAMLError) -> str:
    """PyYAML's problem after its context, which often says more than the problem alone (a duplicate
    anchor's problem is just "second occurrence")."""
    problem = exc.problem or "unreadable YAML"
    if not exc.context:
        return problem
    where = exc.context_mark
    if where is None or where == exc.problem_mark:
        return f"{exc.context}: {problem}"
    return f"{exc.context} at line {where.line + 1}, column {where.column + 1}: {problem}"


def _read(path: Path, name: str) -> str:
    if path.exists() and not path.is_file():
        raise SpecError([SpecIssue(name, 0, 0, "", "not a regular file",
                                   "give the path of a study's YAML file, not a folder, pipe or device")])
    if not path.is_file():
        raise SpecError([SpecIssue(name, 0, 0, "", "file not found", "check the path of the study file")])
    if path.stat().st_size > MAX_FILE_BYTES:
        raise SpecError([SpecIssue(name, 0, 0, "", f"file is larger than {MAX_FILE_BYTES} bytes",
                                   "a study spec is a few kilobytes; is this the right file?")])
    return path.read_text(encoding="utf-8")


def load_yaml(path: Path) -> tuple[Any, Positions]:
    """Read a study file into plain Python values plus a map from field path to (line, column)."""
    name = str(path)
    try:
        text = _read(path, name)
    except UnicodeDecodeError:
        raise SpecError([SpecIssue(name, 0, 0, "", "file is not UTF-8 text", "save it as UTF-8")]) from None
    except OSError as exc:
        hint = READ_HINTS.get(exc.errno, "check the path, and that its disk is readable")
        raise SpecError([SpecIssue(name, 0, 0, "", f"cannot read the file: {exc.strerror or exc}", hint)]) from None
    try:
        node = yaml.compose(text, Loader=_CoreSchemaLoader)
    except RecursionError:
        raise SpecError([SpecIssue(name, 0, 0, "", "YAML syntax error: values nested too deep to read",
                                   "a study is a few levels deep; check the brackets and indentation")]) from None
    except yaml.reader.ReaderError as exc:
        line, col = _line_column(text, exc.position)
        hint = ("a NUL byte means a binary file or one saved as UTF-16: save the study as UTF-8 text"
                if exc.character == 0 else "remove it, or write it as an escape inside double quotes")
        raise SpecError([SpecIssue(name, line, col, "", f"YAML syntax error: control character "
                                   f"{chr(exc.character)!r} is not allowed in YAML", hint)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise SpecError([SpecIssue(name, line, col, "", f"YAML syntax error: {_problem(exc)}",
                                   "check indentation and quoting near this position")]) from None
    if node is None:
        raise SpecError([SpecIssue(name, 1, 1, "", "the file is empty", STARTER)])
    converter = _Converter(name)
    return converter.convert(node, ()), converter.positions
