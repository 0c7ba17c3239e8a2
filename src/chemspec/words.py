"""Words and numbers that chemspec's messages and tables share."""

from __future__ import annotations

import math


def count(number: int, noun: str) -> str:
    """`3 jobs`, `1 job`: a number and its noun, plural but for one."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def listed(names, most: int = 4) -> str:
    """`a, b, c, d, ...`: the first `most` of `names`, and an ellipsis where there are more."""
    names = list(names)
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def number(value: float, digits: int = 4) -> str:
    """`digits` significant digits, but a whole number with separators from 10,000 up (and for an int):
    17,950 beside 1264 in a column, not 1.795e+04."""
    return f"{value:,.0f}" if isinstance(value, int) or abs(value) >= 1e4 else f"{value:.{digits}g}"


def shown(value: float | None, digits: int = 4, missing: str = "-") -> str:
    """A number as `number` writes it in a table; `missing` where there is none (None, or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return number(value, digits)
