"""Words that chemspec's messages share."""

from __future__ import annotations


def count(number: int, noun: str) -> str:
    """`3 jobs`, `1 job`: a number and its noun, plural but for one."""
    return f"{number} {noun}{'' if number == 1 else 's'}"
