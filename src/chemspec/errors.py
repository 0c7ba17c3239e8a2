"""One exception tree. The CLI maps each to an exit code and prints its message without a traceback."""

from __future__ import annotations

from dataclasses import dataclass


INTERRUPTED = ("interrupted; what the command writes is written whole or not at all, so run it again (a pipeline "
               "stage: re-run `dvc repro`)")
"""The one line a Ctrl-C gets, whenever it comes."""


class ChemspecError(Exception):
    """Base of every error chemspec raises on purpose; its message says what to do next."""

    exit_code = 1


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a study file, located by YAML line:column and field path."""

    file: str
    line: int
    column: int
    field: str
    message: str
    hint: str = ""

    def render(self) -> str:
        """`file:line:column: field: message`, or `file: message` where no place in the file is to
        blame (line 0: the file is missing, unreadable or too deep to parse)."""
        if self.line == 0:
            text = f"{self.file}: {self.message}"
        else:
            text = f"{self.file}:{self.line}:{self.column}: {self.field or '<root>'}: {self.message}"
        return f"{text}\n    hint: {self.hint}" if self.hint else text


class SpecError(ChemspecError):
    """The study file is not a valid spec. Carries every issue found, not just the first."""

    exit_code = 2

    def __init__(self, issues: list[SpecIssue]):
        self.issues = issues
        noun = "error" if len(issues) == 1 else "errors"
        super().__init__(f"{len(issues)} {noun} in study spec:\n" + "\n".join(i.render() for i in issues))


class UsageError(ChemspecError):
    """A command-line argument names nothing usable: a folder that is not there, an empty id."""

    exit_code = 2


class CompileError(ChemspecError):
    """The compiled pipeline cannot be written or is stale."""


class RunError(ChemspecError):
    """A pipeline stage cannot run with the inputs it was given. `field` is the key under data.source to
    change, where the message asks for one (validate names it)."""

    def __init__(self, message: str, *, field: str = "file"):
        super().__init__(message)
        self.field = field


class InputError(RunError):
    """A file that an earlier stage or command wrote is missing, unreadable or not what it should be.
    `problem` is the message less its `fix`, for a caller that knows a better fix."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}; {fix}")
        self.problem, self.fix = problem, fix

    def __reduce__(self):
        return type(self), (self.problem, self.fix)


class ArchiveError(ChemspecError):
    """An archived object is missing, corrupt, or cannot be written."""


class UnknownStudy(ArchiveError):
    """A study name that is not among those archived at a revision: bad input (exit 2) where --study gave it,
    not where chemspec chose it (given_study)."""


class LaunchError(ChemspecError):
    """`chemspec launch` cannot start, or a stage it ran failed."""


class Interrupted(ChemspecError):
    """The user stopped a command with Ctrl-C."""

    exit_code = 130
