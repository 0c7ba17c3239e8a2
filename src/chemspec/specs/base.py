"""The base every spec model shares (frozen, no unknown keys, docstrings become schema descriptions), and the
field types several sections use."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

NAME_PATTERN = r"^[a-z0-9][a-z0-9_]{0,31}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
"""A short lowercase name that can appear in stage names, paths and commands without quoting."""

BatchSize = Annotated[int, Field(gt=0, le=1 << 16)]
"""Rows in one batch: up to 65,536, far more than one device holds of any model chemspec trains."""

PROBLEMS_SEPARATOR = "\n"
"""A validator that finds several independent problems raises them as one ValueError, one a line (messages
show user text with repr, so they hold no line break of their own); each becomes an issue of its own."""
STARTER = ("start from specs/quickstart.yaml of chemspec's repository (README's quickstart); `chemspec schema` "
           "lists every field")
"""The hint to a file that holds no study at all."""

_UNSAFE_PATH = re.compile(r"[$`\x00-\x1f\x7f]")


def unsafe_character(path: str) -> str | None:
    """The first character of `path` that DVC would interpolate (`${...}`) or a shell interpret in dvc.yaml."""
    found = _UNSAFE_PATH.search(path)
    return found.group() if found else None


def _safe_path(value: str) -> str:
    if found := unsafe_character(value):
        raise ValueError(f"data.source.file {value!r} contains {found!r}; a data file path must not "
                         "contain '$' or '`' (DVC and shells expand them) or control characters such as "
                         "newlines or NUL: rename the file, or link it under a plain name")
    return value


SourcePath = Annotated[str, Field(min_length=1), AfterValidator(_safe_path)]
"""A data file path, absolute or relative to the study file; no `$`, backtick or control characters."""


class Spec(BaseModel):
    # NaN and infinity are never meaningful settings, and inf breaks stage names (lr1e-3) at compile time.
    # Strict: `seed: true`, `sizes: ["40"]` or `packing: yes` are mistakes to report, not values to convert.
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False,
                              strict=True)
