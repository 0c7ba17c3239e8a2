"""Hypothesis strategies that mutate valid study specs, for tests/unit/test_spec_fuzz.py.

`mutated()` edits the parsed tree of a base study (delete, replace with another type, add, rename,
wrap, nudge a number, repeat a list item); `mutated_text()` edits the bytes of a study file
(truncate, flip, splice hostile snippets or lines); `with_string()` puts a value in one string field.
"""

from __future__ import annotations

import copy
import math
import reprlib
from typing import Any

import yaml
from hypothesis import strategies as st

from tests.conftest import QUICKSTART, tiny_study

PAYLOADS = ["x; touch MARKER", "$(touch MARKER)", "`touch MARKER`", "../../etc/passwd", "a\nb", "${key}",
            "${item.identity}", "ünïcødé-名前", "x\x00y", "", " ", "-rf", "a" * 300, "default\n", "{{7*7}}",
            "x' && touch MARKER && '", "\\\\server\\share", "/abs/path", "x\rtouch MARKER", "\ud800"]
KEYWORDS = ["package", "file", "generate", "format", "family", "column", "moses", "md", "md17", "smiles",
            "atoms", "chemgpt", "schnet", "xs", "sizes", "source", "kind", "tpe", "grid", "keep"]
HUGE = [10**30, -(10**30), 2**31, 2**63, 10**5000, -(10**5000)]
FLOATS = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-320, 1e308, 0.003000000001, 1.00000001e-2]


def _deep_list() -> list:
    value: list = []
    for _ in range(3000):
        value = [value]
    return value


def _deep_dict() -> dict:
    value: dict = {}
    for _ in range(3000):
        value = {"a": value}
    return value


def _cyclic() -> list:
    value: list = []
    value.append(value)
    return value


def pick(values: list) -> st.SearchStrategy:
    """sampled_from without repr() of the values (a 5000-digit int cannot be printed)."""

    def item(index: int) -> Any:
        return values[index]

    return st.integers(0, len(values) - 1).map(item)


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-3, 5000), pick(HUGE),
                    st.floats(), st.sampled_from(FLOATS), st.text(max_size=12), st.sampled_from(PAYLOADS),
                    st.sampled_from(KEYWORDS))
VALUES = st.one_of(st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=3)
                                | st.dictionaries(st.sampled_from(KEYWORDS) | st.text(max_size=6), kids,
                                                  max_size=3), max_leaves=6),
                   st.sampled_from([_deep_list, _deep_dict, _cyclic]).map(lambda make: make()))


def _bigger(v: float) -> float:
    return int(v) * 10**400 if isinstance(v, int) else v * 1e300


def _closer(v: float) -> float:
    return v + 1 if isinstance(v, int) else v * (1 + 1e-12)


NUDGES = [_bigger, _closer, lambda v: -v, lambda v: v - 1, lambda v: 0, lambda v: math.inf]
KEYS = st.one_of(st.sampled_from(KEYWORDS + PAYLOADS), st.text(max_size=10))


def bases() -> dict[str, dict]:
    """Valid studies covering every source and model union member (file paths relative to the work dir)."""
    generate = {"generate": "md", "molecules": ["ethanol", "CCO"], "frames": 2000}
    gnn = {"family": "schnet", "widths": [8, 16], "depths": [1, 2]}
    atoms = {"data.kind": "atoms", "model": gnn, "hpo.tpe.model_size": "w8d1"}
    return {
        "quickstart": yaml.safe_load(QUICKSTART.read_text()),
        "tiny": tiny_study(**{"archive.remote": "default", "executor.slurm": {"partition": "gpu",
                                                                               "account": "lab"}}),
        "smiles_file": tiny_study(**{"data.source": {"file": "mols.csv", "column": "smiles"}}),
        "generate": tiny_study(**atoms, **{"data.source": generate}),
        "atoms_file": tiny_study(**atoms, **{"data.source": {"file": "traj.xyz", "format": "extxyz",
                                                              "energy_key": "E", "forces_key": "F"}}),
    }


BASES = bases()


def _paths(node: Any, prefix: tuple = (), seen: frozenset = frozenset()) -> list[tuple]:
    if id(node) in seen or len(prefix) > 8 or not isinstance(node, (dict, list)):
        return [prefix]
    children = node.items() if isinstance(node, dict) else enumerate(node)
    return [prefix] + [p for k, v in children for p in _paths(v, prefix + (k,), seen | {id(node)})]


def _get(tree: Any, path: tuple) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def describe(value: Any) -> str:
    try:
        return reprlib.repr(value)
    except (ValueError, RecursionError):
        return f"<{type(value).__name__}>"


class Case:
    """A mutated study; its repr is the mutation log, since a 3000-deep or cyclic tree cannot be printed."""

    def __init__(self, base: str, tree: Any, log: list[str]):
        self.base, self.tree, self.log = base, tree, log

    def __repr__(self) -> str:
        return f"Case({self.base}: {'; '.join(self.log)})"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


WHERE = {"nudge": lambda tree, p: _number(_get(tree, p)),
         "copy": lambda tree, p: isinstance(_get(tree, p), list) and bool(_get(tree, p)),
         "rename": lambda tree, p: bool(p) and isinstance(_get(tree, p[:-1]), dict)}


@st.composite
def mutated(draw: st.DrawFn) -> Case:
    """A base study with 1-4 mutations: delete, replace, add a key or item, rename, wrap, nudge a number
    (huge, infinite, negative, nearly equal), or copy a list item (repeats)."""
    name = draw(st.sampled_from(sorted(BASES)))
    tree: Any = copy.deepcopy(BASES[name])
    log: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "replace", "replace", "add", "rename", "wrap", "nudge", "nudge",
                                   "copy"]))
        paths = [p for p in _paths(tree) if op not in WHERE or WHERE[op](tree, p)]
        if not paths:
            continue
        path = draw(st.sampled_from(paths))
        old = _get(tree, path)
        if op == "copy":
            item = old[draw(st.integers(0, len(old) - 1))]
            old.append(draw(st.sampled_from(NUDGES))(item) if _number(item) and draw(st.booleans()) else item)
            log.append(f"copy into {'.'.join(map(str, path))}: {describe(old[-1])}")
            continue
        value = draw(st.sampled_from(NUDGES))(old) if op == "nudge" else draw(KEYS if op == "rename" else VALUES)
        log.append(f"{op} {'.'.join(map(str, path)) or '<root>'} {describe(value)}")
        if not path:
            tree = value if op in ("delete", "replace") else tree
            continue
        parent, key = _get(tree, path[:-1]), path[-1]
        if op == "delete":
            del parent[key]
        elif op in ("replace", "nudge"):
            parent[key] = value
        elif op == "add" and isinstance(old, dict):
            old[draw(KEYS)] = value
        elif op == "add" and isinstance(old, list):
            old.insert(draw(st.integers(0, len(old))), value)
        elif op == "rename":
            parent[value] = parent.pop(key)
        else:
            parent[key] = [old] if isinstance(value, list) else {"value": old}
    return Case(name, tree, log)


def with_string(name: str, field: str, value: str) -> dict:
    """BASES[name] with `value` in the string field `field` (`model.sizes.<key>` renames the first size)."""
    tree = copy.deepcopy(BASES[name])
    *parents, last = [int(p) if p.isdigit() else p for p in field.split(".")]
    node = tree
    for part in parents:
        node = node.setdefault(part, {}) if isinstance(node, dict) else node[part]
    if last == "<key>":
        first = next(iter(node))
        node[value] = node.pop(first)
        if tree["hpo"]["tpe"].get("model_size") == first:
            tree["hpo"]["tpe"]["model_size"] = value
    else:
        node[last] = value
    return tree


SNIPPETS = ["a: &a [*a]\n", "x: &x {y: *x}\n", "!!python/object/apply:os.system ['touch MARKER']", "[" * 3000,
            "9" * 5000, '"\\ud800"', "<<: {a: 1}\n", "? [a, b]\n: 1\n", "\t", "%YAML 1.1\n---\n", "---\n",
            "...\n", "*undefined", "&x ", "{", "'", '"', ": ", "- ", "\x00", "\ufeff", "\u2028", "~: 1\n",
            "!!binary aGk=", "!!set {a, b}", "1e999", ".nan", "0x7fffffffffffffffffff", "2001-12-14"]
TEXTS = [QUICKSTART.read_bytes()] + [yaml.safe_dump(b, sort_keys=False).encode() for b in BASES.values()] \
    + [yaml.safe_dump(b, default_flow_style=True).encode() for b in BASES.values()]


@st.composite
def mutated_text(draw: st.DrawFn) -> bytes:
    """A study file truncated, byte-flipped, or with hostile snippets or lines spliced in."""
    data = bytearray(draw(st.sampled_from(TEXTS)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["truncate", "flip", "flip", "snippet", "snippet", "line"]))
        if op == "truncate":
            del data[at:]
        elif op == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "snippet":
            data[at:at] = draw(st.sampled_from(SNIPPETS) | st.text(max_size=8)).encode("utf-8", "surrogatepass")
        elif op == "line":
            lines = bytes(data).splitlines(keepends=True) or [b""]
            lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(lines)))
            data = bytearray(b"".join(lines))
    return bytes(data)
