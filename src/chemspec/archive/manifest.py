"""The archive stage: store a study run's results as objects and record them in a manifest.

Results and bookkeeping are kept apart: each cell's metrics object holds only what training decided
(losses, parameters, hyperparameters), while wall time and device go to a separate timing object,
so two runs that reach the same results give the same per-cell hashes. The summary objects (cells,
fit, selected, calibration) are stored without their times as well: what they held (wall times, TPE's
cost, Spearman ρ against training time) goes to the timing object under `summary`, from which
`summary()` puts it back for the report and `chemspec pull`.
The manifest (itself an object) lists objects by role plus provenance, and each checkpoint's DVC
path with the sha256 of its files, against which `chemspec pull` checks what the remote returns;
`archive/refs/<study>.json` points at the newest manifest.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Any, Callable

from chemspec.archive.consistency import disagreements
from chemspec.archive.shape import checked
from chemspec.archive.store import Store, json_digest
from chemspec.compiler.cells import ArchiveCell
from chemspec.errors import ArchiveError, UsageError
from chemspec.runtime.io import read_json, sha256_tree
from chemspec.runtime.stack import versions

TIMING_KEYS = ("wall_time_s", "device", "stack", "sampling_s", "tokens_per_s", "train_tokens_per_s",
               "train_structures_per_s", "peak_gpu_memory_mb", "matmul_bf16_tflops", "mfu_datasheet", "mfu_measured")
SUMMARY_TIMES = frozenset({*TIMING_KEYS, "cost", "cost_s", "tpe_cost_s", "full_cost_s", "rho_time"})
SUMMARIES = ("selected", "fit", "cells", "calibration")


def git_state(cwd: Path, archive: Path | None = None) -> dict:
    """HEAD's commit of the git work tree holding `cwd` and whether it differs from it: tracked files changed, or
    files git neither tracks nor ignores (a study file never committed), less those under `archive`, which the
    archive stage itself writes (None for both outside a work tree)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=all", "--", ":/",
                 *([f":(exclude){archive.as_posix()}"] if archive is not None else []))
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def source_state(package: Path) -> dict:
    """`git_state` of the checkout chemspec runs from (an editable install); None for both for an installed
    copy, even one in a virtual environment inside the study's own git work tree."""
    try:
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "__init__.py"], cwd=package,
                                 capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        tracked = False
    return git_state(package) if tracked else {"commit": None, "dirty": None}


def _split_timing(metrics: dict) -> tuple[dict, dict]:
    result = {k: v for k, v in metrics.items() if k not in TIMING_KEYS}
    timing = {k: metrics[k] for k in TIMING_KEYS if k in metrics}
    return result, timing


def split_times(value: Any) -> tuple[Any, Any]:
    """`value` without the keys of SUMMARY_TIMES at any depth, and a sparse tree of what was taken (list
    items by their index as text); `with_times` reverses it."""
    if isinstance(value, dict):
        kept, taken = {}, {}
        for key, item in value.items():
            if key in SUMMARY_TIMES:
                taken[key] = item
                continue
            kept[key], sub = split_times(item)
            if sub:
                taken[key] = sub
        return kept, taken
    if isinstance(value, list):
        pairs = [split_times(item) for item in value]
        return [kept for kept, _ in pairs], {str(i): sub for i, (_, sub) in enumerate(pairs) if sub}
    return value, {}


def with_times(value: Any, taken: Any) -> Any:
    if not taken:
        return value
    if isinstance(value, list):
        return [with_times(item, taken.get(str(i))) for i, item in enumerate(value)]
    return {**{key: with_times(item, taken.get(key)) for key, item in value.items()},
            **{key: item for key, item in taken.items() if key not in value}}


def summary(manifest: dict, role: str, read: Callable[[str], Any]) -> Any:
    """The summary object `role` of a manifest as the fit stage wrote it, times included (`read` loads an
    object by digest). Manifests from before the split kept the times in the object itself."""
    value = read(manifest["objects"][role])
    if role not in SUMMARIES or "timing" not in manifest["objects"]:
        return value
    return with_times(value, read(manifest["objects"]["timing"]).get("summary", {}).get(role))


def run_archive(cell: ArchiveCell, metrics: dict[str, str], tpe_dirs: dict[str, str],
                generation: dict[str, str]) -> dict:
    for role, path in cell.inputs.items():
        if not Path(path).exists():
            raise ArchiveError(f"archive: input {role} ({path}) is missing; run `dvc repro` to produce it")
    store = Store(cell.root)
    objects: dict = {"spec": store.put_json(cell.spec)}
    summaries: dict = {}
    for role in ("data", "split", *SUMMARIES):
        if role in cell.inputs:
            value = read_json(cell.inputs[role])
            if role in SUMMARIES:
                value, summaries[role] = split_times(value)
            objects[role] = store.put_json(value)
    objects["plots"] = {p.name: store.put_bytes(p.read_bytes())
                        for p in sorted(Path(cell.inputs["plots"]).iterdir()) if p.is_file()}
    groups = {"train": {k: Path(p) for k, p in metrics.items()},
              "tpe": {k: Path(p) / "estimate.json" for k, p in tpe_dirs.items()},
              **({"sample": {k: Path(p) for k, p in generation.items()}} if generation else {})}
    timing: dict = {kind: {} for kind in groups}
    identities: dict = {}
    for kind, sources in groups.items():
        objects[kind] = {}
        for key, path in sorted(sources.items()):
            result, timing[kind][key] = _split_timing(read_json(path))
            objects[kind][key] = store.put_json(result)
            identities[f"{kind}@{key}"] = result.get("identity")
    objects["timing"] = store.put_json({**timing, "summary": summaries})
    data, split = read_json(cell.inputs["data"]), read_json(cell.inputs["split"])
    seconds = sum(t.get("wall_time_s", 0.0) + t.get("sampling_s", 0.0) for group in timing.values()
                  for t in group.values())
    device = next((t["device"] for group in timing.values() for t in group.values() if "device" in t), None)
    trained = [t for kind in ("train", "tpe") for t in timing[kind].values() if t.get("wall_time_s")]
    stacks = {json_digest(t["stack"]): t["stack"] for t in trained if "stack" in t}
    models = {key: Path(path).parent / "model" for key, path in sorted(metrics.items())
              if (Path(path).parent / "model").is_dir()}
    manifest = {
        "kind": "chemspec-manifest", "version": 1, "study": cell.study, "seed": cell.seed,
        "spec_sha256": json_digest(cell.spec),
        "objects": objects, "cells": identities,
        "checkpoints": {key: model.as_posix() for key, model in models.items()},
        "checkpoint_sha256": {key: sha256_tree(model) for key, model in models.items()},
        "provenance": {"data_sha256": data.get("sha256"), "split_sha256": split.get("sha256"),
                       "git": git_state(Path.cwd(), Path(cell.root)),
                       "chemspec_source": source_state(Path(__file__).resolve().parents[1]),
                       "versions": versions(), "device": device, "trained_with": [stacks[k] for k in sorted(stacks)],
                       "trained_on": sorted({t["device"] for t in trained if "device" in t}),
                       "trained_unrecorded": sum("stack" not in t for t in trained),
                       "compute_hours": round(seconds / 3600, 6)},
    }
    digest = store.put_json(manifest)
    store.set_ref(cell.study, digest)
    return {"manifest": digest, **manifest}


def scan(root: str | Path) -> tuple[list[tuple[str, dict]], dict[str, str]]:
    """Every readable manifest in the store (current and earlier runs) with its id, and a line for each
    manifest object that is corrupt or unreadable, by its id."""
    store = Store(root)
    found, problems = [], {}
    for path in store.files()[0]:
        data = path.read_bytes() if path.is_file() else b""
        if data.startswith(b'{') and b'"kind":"chemspec-manifest"' in data:
            try:
                found.append((path.name, checked(store.get_json(path.name), path.name, f"in {root}", ())))
            except (ArchiveError, ValueError) as exc:
                problems[path.name] = f"manifest {path.name}: {exc}"
    return found, problems


def leftovers(root: str | Path) -> list[str]:
    """A line for each file under objects/ that is no object: what a write killed before its rename left."""
    return [f"{path}: leftover from an interrupted write, not an object; delete it"
            for path in Store(root).files()[1]]


def manifests(root: str | Path) -> list[tuple[str, dict]]:
    """Every readable manifest in the store (current and earlier runs), with its id."""
    return scan(root)[0]


def nothing_archived(root: str | Path) -> ArchiveError:
    """Why `root` holds no run: none archived yet, or a folder below the project was given."""
    from chemspec.archive.repository import elsewhere

    if hint := elsewhere(Path(root).parent, Path(root).name):
        return ArchiveError(f"no archived runs under {root}{hint} (or give the archive's folder with --root)")
    return ArchiveError(f"no archived runs under {root}; run `dvc repro` first, or give the archive's folder with "
                        "--root")


def find(root: str | Path, prefix: str) -> tuple[str, dict]:
    """The manifest whose id starts with `prefix` (the caller looks up a study's name first); an id that names
    none, or several, is the caller's to mend (exit 2, as a revision that names no commit), unless it names an
    object that is no readable manifest."""
    found, problems = scan(root)
    matches = [(d, m) for d, m in found if d.startswith(prefix)]
    if not matches:
        store = Store(root)
        names = [path.name for path in store.files()[0]]
        if not names and not store.studies():
            raise nothing_archived(root)
        if damaged := [problem for digest, problem in problems.items() if digest.startswith(prefix)] or [
                f"archive object {name} is no readable manifest" for name in names if name.startswith(prefix)]:
            raise ArchiveError(f"{damaged[0]}; restore the archive with `git checkout -- archive` (`chemspec "
                               "archive verify` checks every object)")
        raise UsageError(f"no manifest in {root} starts with {prefix!r}, and no study of that name is archived there; "
                         "`chemspec archive ls` lists both")
    if len(matches) > 1:
        listed = ", ".join(f"{digest[:16]} ({manifest.get('study')})" for digest, manifest in sorted(matches,
                                                                                                   key=lambda m: m[0]))
        raise UsageError(f"{len(matches)} manifests match {prefix!r} in {root}: {listed}; give more characters")
    return matches[0]


def walk(manifest: dict) -> list[tuple[str, str]]:
    """(role, digest) of every object a manifest names."""
    found = []
    for role, value in manifest["objects"].items():
        if isinstance(value, dict):
            found.extend((f"{role}/{key}", digest) for key, digest in sorted(value.items()))
        else:
            found.append((role, value))
    return found


def verify(root: str | Path) -> tuple[int, list[str]]:
    """Re-hash every object in the store and check that each ref's manifest, and every object that any
    manifest names (current and earlier runs), is there and intact, and that each run's summary objects agree
    with its per-cell ones (archive.consistency); return how many objects were re-hashed and a line for each
    problem."""
    store = Store(root)
    studies, stored = store.studies(), [p.name for p in store.files()[0]]
    if not (studies or stored):
        raise nothing_archived(root)
    faults: dict[str, str] = {}
    for digest in stored:
        try:
            store.get_bytes(digest)
        except ArchiveError as exc:
            faults[digest] = str(exc)
    scanned, shapes = scan(root)
    problems = [line for digest, line in shapes.items() if digest not in faults]
    runs = {digest: (manifest.get("study", "?"), manifest) for digest, manifest in scanned}
    named, present = set(), set(stored)

    def check(digest: str, where: str) -> bool:
        named.add(digest)
        if digest not in faults and digest not in present:
            try:
                store.get_bytes(digest)
            except ArchiveError as exc:
                faults[digest] = str(exc)
            present.add(digest)
        if faults.get(digest):
            problems.append(f"{where}: {faults[digest]}")
        return not faults.get(digest)

    for study in studies:
        try:
            digest = store.ref(study)
        except ArchiveError as exc:
            problems.append(f"{study}: manifest: {exc}")
            continue
        if check(digest, f"{study}: manifest") and digest not in runs:
            try:
                runs[digest] = (study, checked(store.get_json(digest), digest, f"in {root}", ()))
            except (ArchiveError, ValueError) as exc:
                problems.append(f"{study}: {exc}")
    for digest, (study, manifest) in sorted(runs.items()):
        intact = [check(obj, f"{study} (manifest {digest[:12]}): {role}") for role, obj in walk(manifest)]
        if all(intact):  # an object that several runs share is named under each
            with contextlib.suppress(ArchiveError, KeyError, TypeError, AttributeError):  # shapes: named above
                problems += [f"{study} (manifest {digest[:12]}): {line}" for line in disagreements(store, manifest)]
    problems += [f"object {digest}: {fault}" for digest, fault in faults.items() if digest not in named]
    return len(stored), problems
