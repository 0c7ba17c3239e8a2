"""A structure's total charge and spin multiplicity as an ASE frame (extxyz, ASE db) records them.

Read in this order, the first found for each: `charge` and `multiplicity` in the frame's info (an extxyz
comment line) or key-value pairs (an ASE-db row); the sum of the calculator's per-atom `charges`, and its
total `magmom` or per-atom `magmoms`; the atoms' initial charges and magnetic moments. A magnetic moment's
size is 2S, the number of unpaired electrons, whatever its sign or direction. A frame that gives none is
a neutral singlet. Every state is checked against the frame's electron count.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from chemspec.errors import RunError
from chemspec.runtime.atoms import ELECTRONIC_LIMIT

if TYPE_CHECKING:
    from ase import Atoms

TOLERANCE = 1e-3
"""e or μB: the per-atom values of a calculation sum to a whole total within their printed digits."""
UNREAD_KEYS = {"total_charge": "charge", "net_charge": "charge", "spin": "multiplicity", "mult": "multiplicity",
               "spin_multiplicity": "multiplicity", "total_spin": "multiplicity"}
"""Names some files give a structure's charge or spin (in any case, `Charge` and `Multiplicity` too), and
the key chemspec reads instead: a frame with one of them and not the other would otherwise train as a
neutral singlet."""
WRITE = ("write the structure's total charge= and multiplicity= (2S+1) in its info (extxyz) or as key-value "
         "pairs (ASE db: db.write(atoms, charge=..., multiplicity=...))")


def frame_state(label: str, atoms: Atoms, keys: dict) -> dict[str, int]:
    """{"charge", "multiplicity"} of one frame; `keys` holds its info and key-value pairs, `label` names it."""
    if unread := _unread(keys):
        raise RunError(f"{label} has {', '.join(map(repr, unread))}, which chemspec does not read; {WRITE}")
    results = atoms.calc.results if atoms.calc is not None else {}
    given = {key: keys[key] for key in ("charge", "multiplicity") if key in keys}
    if "charge" not in given:
        if "charges" in results:
            given["charge"] = _whole(label, "calculator's charges", np.sum(results["charges"]))
        elif atoms.has("initial_charges"):
            given["charge"] = _whole(label, "initial charges", np.sum(atoms.get_initial_charges()))
    if "multiplicity" not in given:
        for what, moments in (("calculator's magnetic moment", results.get("magmom", results.get("magmoms"))),
                              ("initial magnetic moments",
                               atoms.get_initial_magnetic_moments() if atoms.has("initial_magmoms") else None)):
            if moments is not None:
                total = np.sum(moments, axis=0) if np.ndim(moments) else moments
                given["multiplicity"] = 1 + _whole(label, what, float(np.linalg.norm(total)))
                break
    return checked_state(label, atoms.numbers, given)


def _unread(keys) -> list[str]:
    """The keys among `keys` that name a charge or spin other than as chemspec reads them, where the key it
    reads is not there as well."""
    named = {key: UNREAD_KEYS.get(key.lower(), key.lower()) for key in keys}
    return sorted(key for key, read in named.items() if read in ("charge", "multiplicity") and key != read
                  and read not in named)


def _whole(label: str, what: str, total: float) -> int:
    if not abs(total - round(total)) <= TOLERANCE:
        raise RunError(f"{label}: its {what} sum to {total:.6g}, not a whole number; {WRITE}, which are read "
                       "before per-atom values")
    return round(total)


def checked_state(label: str, numbers: np.ndarray, given: Mapping, fix: str = WRITE) -> dict[str, int]:
    """{"charge", "multiplicity"} from `given` (a neutral singlet where it gives neither), refused (RunError that
    names `label` and ends in `fix`) where they are not whole, out of range or impossible for the electrons."""
    state = {}
    for key, default, least in (("charge", 0, -ELECTRONIC_LIMIT), ("multiplicity", 1, 1)):
        value = given.get(key, default)
        value = value.item() if isinstance(value, np.generic) else value
        whole = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and (
            value == int(value))
        if not whole or not least <= value <= ELECTRONIC_LIMIT:
            raise RunError(f"{label}: {key} {value!r} must be a whole number from {least} to {ELECTRONIC_LIMIT}; "
                           f"{fix}")
        state[key] = int(value)
    electrons = int(np.sum(numbers)) - state["charge"]
    unpaired = state["multiplicity"] - 1
    if electrons < unpaired or (electrons - unpaired) % 2:
        read = "" if given else " (neither is given, so it reads as a neutral singlet)"
        raise RunError(f"{label}: charge {state['charge']} leaves {electrons} electrons, which cannot have "
                       f"multiplicity {state['multiplicity']} ({unpaired} unpaired){read}; multiplicity is 2S+1 "
                       f"(1 for a singlet, 2 for a doublet), not S; {fix}")
    return state


_QUOTED = rb'"(?:[^"\\]|\\.)*"?' + rb"|'(?:[^'\\]|\\.)*'?"
"""A quoted string; one left open runs to the end of the line, as ASE reads it."""
_PAIRS = re.compile(rb"(?P<quoted>" + _QUOTED + rb""")|(?<!\S)(?P<key>[^\s="']++)"""
                    rb"""(?:\s*=\s*(?P<value>""" + _QUOTED + rb"""|\{[^}]*\}|[^\s"']*))?""")
"""An extxyz comment line's key=value pairs and bare keys; a quoted string is taken whole, so text inside it is
no key. Keys start only where a token does, so a long token is scanned once."""
_PER_ATOM = {b"charge": re.compile(rb"(?:^|:)(?:initial_)?charges:"),
             b"multiplicity": re.compile(rb"(?:^|:)(?:initial_)?magmoms:")}


def comment_state(line: bytes) -> tuple[int, int] | None:
    """(charge, multiplicity) of an extxyz frame from its comment line alone, as frame_state reads them; None
    where they may come from elsewhere (per-atom charges or moments, a calculator's magmom) or a value is no
    whole number, which the data stage reads or refuses."""
    pairs = {match["key"]: match["value"] and match["value"].strip(b"\"'") for match in _PAIRS.finditer(line)
             if match["key"]}
    if _unread([key.decode(errors="replace") for key in pairs]):
        return None
    state = []
    for key, default in ((b"charge", 0), (b"multiplicity", 1)):
        if key in pairs:
            try:
                value = float(pairs[key])
            except (TypeError, ValueError):  # a bare key, which ASE reads as True
                return None
            if not value.is_integer():
                return None
            state.append(int(value))
        elif _PER_ATOM[key].search(pairs.get(b"Properties") or b"") or (key == b"multiplicity" and b"magmom" in pairs):
            return None
        else:
            state.append(default)
    return state[0], state[1]


def several_states(states: Mapping[tuple[int, int], int], family: str) -> str:
    """The problem with structures of more than one (charge, multiplicity) for a model that sees neither, to
    follow "the structures have"; `states` counts the structures of each. Empty for one state."""
    if len(states) < 2:
        return ""
    listed = ", ".join(f"charge {q} multiplicity {m}: {n:,}" for (q, m), n in sorted(states.items()))
    fix = "set model.charge_spin: true" if family == "spookynet" else ("set model.family: spookynet and "
                                                                         "model.charge_spin: true")
    return (f"{len(states)} electronic states ({listed}), which look alike to model.family "
            f"{family!r} without model.charge_spin; {fix}, or keep one charge and multiplicity in the data")
