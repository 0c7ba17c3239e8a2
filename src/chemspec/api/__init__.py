"""One function per CLI verb. Each returns data and raises ChemspecError; none prints."""

from chemspec.api.archive import archive_ls, archive_show, archive_verify, pull, refit
from chemspec.api.diffing import diff
from chemspec.api.launching import launch
from chemspec.api.project import CompileResult, compile, schema, validate
from chemspec.api.results import Report, report
from chemspec.api.stages import load_cells, run

__all__ = ["validate", "schema", "compile", "load_cells", "run", "launch", "CompileResult", "Report", "report",
           "archive_ls", "archive_show", "archive_verify", "diff", "pull", "refit"]
