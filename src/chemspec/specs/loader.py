"""Safe YAML loading that remembers where every value came from.

Study files come from collaborators, so they are parsed to a node graph with PyYAML's safe composer
and converted by hand: only the plain YAML types are accepted (no tags that construct objects),
duplicate keys are errors, and the number of values produced (aliases included) is capped, which
defeats alias bombs. Every value's position is kept so that validation errors can say line:column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from chemspec.errors import SpecError, SpecIssue

MAX_FILE_BYTES = 1 << 20
MAX_VALUES = 100_000
PLAIN_TAGS = {
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq")
}

Positions = dict[tuple, tuple[int, int]]


class _Converter:
    def __init__(self, file: str):
        self.file = file
        self.positions: Positions = {}
        self.count = 0
        self.scalars = SafeConstructor()

    def issue(self, node: yaml.Node, message: str, hint: str, path: tuple = ()) -> SpecError:
        mark = node.start_mark
        field = ".".join(str(p) for p in path)
        return SpecError([SpecIssue(self.file, mark.line + 1, mark.column + 1, field, message, hint)])

    def convert(self, node: yaml.Node, path: tuple) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise self.issue(node, f"more than {MAX_VALUES} values (an alias bomb?)",
                             "write the study out plainly; anchors that multiply values are refused", path)
        if node.tag not in PLAIN_TAGS:
            raise self.issue(node, f"tag {node.tag!r} is not allowed in a study file",
                             "use plain YAML values: strings, numbers, booleans, lists, mappings", path)
        self.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, path + (i,)) for i, item in enumerate(node.value)]
        try:
            return self.scalars.construct_object(node, deep=True)
        except ConstructorError as exc:
            raise self.issue(node, f"unreadable value: {exc.problem}", "quote it as a string", path) from None

    def mapping(self, node: yaml.MappingNode, path: tuple) -> dict:
        out: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise self.issue(key_node, "merge keys (<<) are not supported",
                                 "write the keys out in full", path)
            key = self.convert(key_node, path + ("<key>",))
            if not isinstance(key, (str, int)):
                raise self.issue(key_node, "mapping keys must be strings", "quote the key", path)
            key = str(key)
            if key in out:
                raise self.issue(key_node, f"duplicate key {key!r}",
                                 "remove one of the two; YAML would silently keep the last", path + (key,))
            self.positions[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = self.convert(value_node, path + (key,))
        return out


def load_yaml(path: Path) -> tuple[Any, Positions]:
    """Read a study file into plain Python values plus a map from field path to (line, column)."""
    name = str(path)
    if not path.is_file():
        raise SpecError([SpecIssue(name, 0, 0, "", "file not found", "check the path of the study file")])
    if path.stat().st_size > MAX_FILE_BYTES:
        raise SpecError([SpecIssue(name, 0, 0, "", f"file is larger than {MAX_FILE_BYTES} bytes",
                                   "a study spec is a few kilobytes; is this the right file?")])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError([SpecIssue(name, 0, 0, "", "file is not UTF-8 text", "save it as UTF-8")]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([SpecIssue(name, line, col, "", f"YAML syntax error: {problem}",
                                   "check indentation and quoting near this position")]) from None
    if node is None:
        raise SpecError([SpecIssue(name, 1, 1, "", "the file is empty", "start from specs/quickstart.yaml")])
    converter = _Converter(name)
    return converter.convert(node, ()), converter.positions
