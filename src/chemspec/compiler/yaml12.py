"""The YAML dumper of the compiled files. PyYAML writes YAML 1.1, and DVC reads dvc.yaml and params.yaml as
YAML 1.2 (ruamel.yaml), which takes plain scalars such as 204082152e853248 (a float: inf) or 0695003967661412
(an int) for numbers where YAML 1.1 reads strings: such strings, a cell identity among them, are quoted."""

from __future__ import annotations

import functools

import yaml

NUMERIC_START = frozenset("0123456789+-.")
"""How a YAML 1.2 number begins; PyYAML already quotes the words (true, null, ...) that both versions read."""


@functools.cache
def _resolver():
    from ruamel.yaml.resolver import VersionedResolver

    return VersionedResolver()


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    from ruamel.yaml.nodes import ScalarNode

    number = value[:1] in NUMERIC_START and (
        _resolver().resolve(ScalarNode, value, (True, False)) != "tag:yaml.org,2002:str")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'" if number else None)


class Dumper(yaml.SafeDumper):
    """yaml.SafeDumper, quoting the strings that YAML 1.2 reads as numbers."""


Dumper.add_representer(str, _string)
