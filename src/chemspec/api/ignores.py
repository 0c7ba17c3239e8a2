"""The block of a project's .gitignore that `chemspec compile` keeps (compiler.render.ignore_block): the outputs
DVC caches, and the entries of an earlier block whose outputs are still on disk (a removed stage's, which DVC
wrote no entry for), so that no output of a run turns up in `git add -A`."""

from __future__ import annotations

import os
from pathlib import Path

from chemspec.compiler import Cells
from chemspec.compiler.render import IGNORE_BEGIN, IGNORE_END, ignore_block
from chemspec.errors import CompileError

GITIGNORE = ".gitignore"


def gitignore(root: Path, cells: Cells) -> tuple[str | None, str]:
    """(root's .gitignore as it is, None where there is none; the same with compile's block as it should be)."""
    path = root / GITIGNORE
    was = _read(path) if path.is_file() else None
    text = was or ""
    span = _span(path, text)
    old = text[span[0]:span[1]].splitlines()[1:-1] if span else []
    kept = [line for line in old if line.startswith("/") and os.path.lexists(root / line[1:])]
    block = ignore_block(cells, kept)
    if span:
        return was, text[:span[0]] + block + text[span[1]:]
    return was, text + ("\n" if text and not text.endswith("\n") else "") + block


def _span(path: Path, text: str) -> tuple[int, int] | None:
    """Where compile's block stands in `text` (from its first line to the end of its last), None where it
    does not; CompileError where its two marker lines do not pair up."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith(IGNORE_BEGIN)]
    ends = [i for i, line in enumerate(lines) if line.startswith(IGNORE_END)]
    if not starts and not ends:
        return None
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise CompileError(f"{path}: the lines '{IGNORE_BEGIN}...' and '{IGNORE_END}' that hold compile's block "
                           "do not pair up (one of them was edited away or copied); leave one of each, around the "
                           "block, or delete the block, and compile again (nothing was written)")
    return sum(map(len, lines[:starts[0]])), sum(map(len, lines[:ends[0] + 1]))


def _read(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as handle:  # its own line endings, kept
            return handle.read()
    except UnicodeDecodeError:
        raise CompileError(f"{path} is not UTF-8 text, and compile keeps a block of lines in it: save it as UTF-8 "
                           "and compile again (nothing was written)") from None
    except OSError as exc:
        raise CompileError(f"{path} cannot be read ({exc.strerror or exc}); fix its permissions and compile "
                           "again (nothing was written)") from None
