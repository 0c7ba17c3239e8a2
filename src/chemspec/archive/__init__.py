"""The archive: content-addressed result objects committed to git, manifests with provenance, verify."""

from chemspec.archive.manifest import run_archive, verify, walk
from chemspec.archive.store import Store

__all__ = ["Store", "run_archive", "verify", "walk"]
