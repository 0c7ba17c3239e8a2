"""Whether an object that claims to be a manifest is one chemspec could have written: the names it gives are
joined onto folders by `pull` and `report --from`, and its keys are read by every archive command, so a
manifest committed by someone else is checked before any of it is used."""

from __future__ import annotations

import re
from typing import Any

from chemspec.errors import ArchiveError

DIGEST = re.compile(r"[0-9a-f]{64}")
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@=+-]{0,199}")
"""A role, cell key, plot or checkpoint name: one plain file name, never a path."""
REQUIRED = ("spec", "cells", "fit")


def _name_problem(name: Any, where: str) -> str | None:
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        return f"{where} names {name!r}, which is not a plain file name (a path or '..' could write outside the folder)"
    return None


def _digests_problem(value: Any, where: str) -> str | None:
    if isinstance(value, dict):
        return next((wrong for key, digest in value.items() if (wrong := _name_problem(key, where) or (
            None if isinstance(digest, str) and DIGEST.fullmatch(digest) else f"{where}.{key} is not a sha256"))),
            None)
    return None if isinstance(value, str) and DIGEST.fullmatch(value) else f"{where} is not a sha256"


def manifest_problem(manifest: Any, required: tuple[str, ...] = REQUIRED) -> str | None:
    """What makes `manifest` no manifest chemspec wrote, or one without the `required` objects that reading its
    results takes; None where it reads as one."""
    if not isinstance(manifest, dict):
        return f"it is a JSON {type(manifest).__name__}, not an object"
    objects, provenance = manifest.get("objects"), manifest.get("provenance", {})
    if not isinstance(manifest.get("study"), str) or not NAME.fullmatch(manifest["study"]):
        return f"its study {manifest.get('study')!r} is no study name"
    if not isinstance(objects, dict):
        return "its 'objects' is not a mapping"
    if missing := [role for role in required if role not in objects]:
        return f"it names no {' or '.join(missing)} object"
    for role, value in objects.items():
        if wrong := _name_problem(role, "objects") or _digests_problem(value, f"objects.{role}"):
            return wrong
    for key in ("checkpoints", "checkpoint_sha256"):
        value = manifest.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            return f"its {key!r} is not a mapping of names to text"
        if wrong := next(filter(None, (_name_problem(name, key) for name in value)), None):
            return wrong
    if not isinstance(provenance, dict) or not isinstance(provenance.get("git", {}), dict):
        return "its provenance (with its git state) is not a mapping"
    return None


def checked(manifest: Any, digest: str, where: str, required: tuple[str, ...] = REQUIRED) -> dict:
    """`manifest` (object `digest`, read `where`), refused with an ArchiveError where it is no manifest."""
    if wrong := manifest_problem(manifest, required):
        raise ArchiveError(f"manifest {digest[:12]} {where} is not one chemspec wrote: {wrong}; nothing of it was "
                           "used. Find the commit that brought it (`git log --oneline -- archive/`) and revert it, "
                           "or read another revision")
    return manifest
