"""`chemspec diff`: the archived runs of two revisions compared, with the study compiled here as the default."""

from __future__ import annotations

import contextlib
from pathlib import Path

from chemspec.api.compiled import unarchived
from chemspec.api.results import stale_note, with_study_change
from chemspec.api.stages import load_cells
from chemspec.archive.snapshot import given_study
from chemspec.errors import ArchiveError, ChemspecError, UnknownStudy, UsageError


@given_study
def diff(rev_a: str = "HEAD", rev_b: str = "WORKTREE", study: str | None = None,
         params: str | Path = "params.yaml") -> dict:
    """The archived runs of two revisions compared; where `params` is compiled here, its study is the default
    among several, and `stale` says why the working tree's run (one side being WORKTREE) is not that of the
    study as compiled now."""
    from chemspec.archive import Snapshot
    from chemspec.archive import diff as archive_diff
    from chemspec.archive.snapshot import WORKTREE
    from chemspec.archive.targets import revision

    if Path(params) != Path("params.yaml") and not Path(params).is_file():
        raise UsageError(f"--params {params}: no such file; give the params.yaml that `chemspec compile` wrote, or "
                         "leave --params out")
    (rev_a, study_a), (rev_b, study_b) = (revision(rev, study, Path(".")) for rev in (rev_a, rev_b))
    # Two manifest ids of two studies: a study renamed (its runs archived under each name), compared as one.
    earlier = study_a if study_a != study_b and None not in (study_a, study_b) else None
    study = study_b or study_a
    try:
        cells = load_cells(params) if Path(params).is_file() else None
    except ChemspecError:  # a params.yaml that does not load says nothing about the archived runs
        cells = None
    compiled = cells.fit.study if cells is not None else None
    found = Snapshot(rev_b).studies() if study is None and compiled is not None else []
    if len(found) > 1 and compiled not in found:
        if rev_a != WORKTREE:  # a mistyped revision is named first: --study would not mend it
            with contextlib.suppress(ArchiveError):
                Snapshot(rev_a).studies()
        raise UsageError(f"{len(found)} studies archived at {rev_b} ({', '.join(found)}), and the study compiled "
                         f"into {params}, {compiled!r}, is none of them (`dvc repro` archives it; a renamed study "
                         "starts a new archive): name one with --study")
    if len(found) > 1:
        study = compiled
    try:
        result = archive_diff(rev_a, rev_b, study, earlier=earlier)
    except UnknownStudy as exc:
        raise UnknownStudy(f"{exc}; to compare a run of each name, give the two runs' manifest ids (`chemspec "
                           "archive ls` lists them)") from None
    sides = dict.fromkeys([(rev_a, result.get("study_a", result["study"])), (rev_b, result["study"])])
    result["unarchived"] = [note for rev, name in sides if rev != WORKTREE and (
        note := unarchived(rev, Snapshot(rev).manifest(name)[1], Path(params))) is not None]
    if found and compiled not in found:
        result["unarchived"].append(f"the study compiled here, {compiled!r}, has no archived run at {rev_b} (`dvc "
                                    f"repro` archives it; a renamed study starts a new archive), so the runs of "
                                    f"{result['study']!r} were compared; --study names one")
    stale = None
    if WORKTREE in (rev_a, rev_b) and result["study"] == compiled:
        try:
            stale = with_study_change(stale_note(cells, Path(params).parent, params, on_disk=False), params)
        except ChemspecError as exc:  # a dvc.lock mid-merge: the comparison stands without the note
            stale = f"whether they predate {params} as compiled now is unknown: {exc}"
    return {**result, "stale": stale}
