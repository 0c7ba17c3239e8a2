"""A content-addressed object store: every object lives under the sha256 of its bytes.

Small results (manifests, metrics, fits, plots, selections, specs) are kilobytes and are committed to
git under `archive/`, so a diff across commits needs nothing but git; objects are deduplicated by
hash and JSON objects are canonical (sorted keys, no spaces), so the same results give the same
hashes. Writes are atomic; an interrupted write leaves no object under its final name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from chemspec.errors import ArchiveError
from chemspec.runtime.io import write_bytes


def is_digest(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def manifest_digest(text: bytes | str, where: str) -> str:
    """The manifest id in the text of an archive ref (`archive/refs/<study>.json`) read from `where`."""
    try:
        digest = json.loads(text)["manifest"]
    except (ValueError, TypeError, KeyError):
        digest = None
    if not (isinstance(digest, str) and is_digest(digest)):
        raise ArchiveError(f"{where} is not an archive ref (JSON naming a manifest); restore it with "
                           "`git checkout -- archive/refs` (after a merge conflict: keep one side's manifest), "
                           "or rerun the archive stage (`dvc repro archive`)")
    return digest


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def json_digest(value: Any) -> str:
    """The name `Store.put_json` gives `value`."""
    return hashlib.sha256(canonical(value)).hexdigest()


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        return self.root / "objects" / digest[:2] / digest

    def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if not (target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == digest):
            write_bytes(target, data)
        return digest

    def put_json(self, value: Any) -> str:
        return self.put_bytes(canonical(value))

    def get_bytes(self, digest: str) -> bytes:
        target = self.path(digest)
        if not target.is_file():
            raise ArchiveError(f"archive object {digest} is missing from {self.root}/objects; "
                               "restore it from git (`git checkout -- archive`) or re-run the archive stage")
        data = target.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise ArchiveError(f"archive object {digest} is corrupt (its content no longer matches its name); "
                               "restore it from git or re-run the archive stage")
        return data

    def files(self) -> tuple[list[Path], list[Path]]:
        """The object files in the store, and anything else under objects/ (the temporary file of a write
        that was killed before its rename, which holds no object)."""
        objects, other = [], []
        for path in sorted((self.root / "objects").glob("*/*")):
            (objects if is_digest(path.name) and path.parent.name == path.name[:2] else other).append(path)
        return objects, other

    def get_json(self, digest: str) -> Any:
        return json.loads(self.get_bytes(digest))

    def ref_path(self, study: str) -> Path:
        return self.root / "refs" / f"{study}.json"

    def set_ref(self, study: str, manifest: str) -> None:
        write_bytes(self.ref_path(study), (json.dumps({"study": study, "manifest": manifest}, indent=2)
                                           + "\n").encode())

    def ref(self, study: str) -> str:
        path = self.ref_path(study)
        if not path.is_file():
            raise ArchiveError(f"no archived run of study {study!r} in {self.root}; run `dvc repro` first")
        return manifest_digest(path.read_bytes(), str(path))

    def studies(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "refs").glob("*.json") if p.is_file())
