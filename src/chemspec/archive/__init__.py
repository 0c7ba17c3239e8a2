"""The archive: content-addressed result objects committed to git, manifests with provenance, verify."""

from chemspec.archive.history import diff
from chemspec.archive.manifest import find, leftovers, manifests, run_archive, scan, summary, verify, walk
from chemspec.archive.pull import pull
from chemspec.archive.remote import ensure_remote
from chemspec.archive.snapshot import Snapshot
from chemspec.archive.store import Store

__all__ = ["Snapshot", "Store", "diff", "ensure_remote", "find", "leftovers", "manifests", "pull", "run_archive",
           "scan", "summary", "verify", "walk"]
