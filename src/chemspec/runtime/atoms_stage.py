"""The data stage for force fields: generated MD or a data file, to one canonical atoms store.

Whatever the source, the stage writes data/<study>/atoms.npz (eV, Å; float32 coordinates and forces,
float64 energies) and data.json with the counts of dropped frames, the content hash of the stored data
and, where not all are neutral singlets, the structures of each charge and multiplicity. Per-element
reference energies are not applied here: they are fitted on each cell's training split when it trains,
so no test energy leaks into them.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from chemspec.compiler.cells import DataCell
from chemspec.errors import RunError
from chemspec.runtime.io import sha256_file, staged, write_json


def run_atoms_data(cell: DataCell) -> dict:
    from chemspec.runtime.atoms import content_hash, save_atoms
    from chemspec.runtime.atoms_files import load_file
    from chemspec.runtime.atoms_states import several_states

    source = cell.source
    if "generate" in source:
        from chemspec.runtime.md import correlation_notes, generate_md, shortfall_notes, temperature_notes
        from chemspec.specs.atoms_source import md_smiles

        if source.get("smiles") != md_smiles(source["molecules"]):
            raise RunError("data.source.molecules: the params file records other SMILES for these molecules, or "
                           "none (another version of `chemspec compile` wrote it); recompile the study")
        data, counts = generate_md(list(zip(source["molecules"], source["smiles"])), source["frames"],
                                   source["temperature_K"], source["stride"], source["timestep_fs"],
                                   source["equilibration_steps"], cell.seed, progress=sys.stderr.isatty())
        notes = [*shortfall_notes(counts["molecules"]),
                 *temperature_notes(counts["molecules"], source["temperature_K"], source["equilibration_steps"]),
                 *correlation_notes(counts["molecules"], source["stride"], source["timestep_fs"])]
    elif "format" in source:
        units = source["units"]  # the spec fills in the format's units where the study file leaves them out
        data, counts = load_file(Path(source["file"]), source["format"], units["energy"], units["length"],
                                 source.get("energy_key", "energy"), source.get("forces_key", "forces"),
                                 units.get("force"))
        notes = _check_units(data, source, cell.check_units, cell.unit_bounds)
        if cell.unit_bounds:
            _check_forces(data, source)
        notes += order_notes(data, source["file"])
        if counts["dropped_nonfinite"]:
            notes.append(f"{counts['dropped_nonfinite']:,} of the {counts['read']:,} structures in {source['file']} "
                         "have an energy, a force or a position that is NaN or infinite (or beyond float32's range), "
                         f"and are left out; {counts['kept']:,} are kept (a level of theory that covers part of a data "
                         "set, as ANI-1x's CCSD(T), leaves the rest NaN)")
    else:
        raise RunError("data.kind 'atoms' needs a source {generate: md, ...} or {file: ..., format: ...}")
    if len(data) == 0:
        raise RunError(f"data.source gave no usable structures ({counts}); check the file or the MD settings")
    if cell.one_state and (problem := several_states(data.states(), cell.one_state)):
        raise RunError(f"data.source: the structures of {source.get('file', 'the MD')} have {problem}")
    data = data.stored()
    if repeats := data.repeats():
        counts["repeated"] = len(repeats)
        shown = ", ".join(f"{later} repeats {first}" for later, first in repeats[:3])
        shown += " …" if len(repeats) > 3 else ""
        notes.append(f"{len(repeats)} structures repeat an earlier one exactly (the same atoms, positions, charge "
                     f"and multiplicity; counted from 0 among those kept: {shown}); a repeat and its original can fall "
                     "on both sides of the split, so that test errors count structures seen in training: remove the "
                     f"repeats from {source.get('file', 'the data')} unless they are meant")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    with staged(cell.out_dir) as out:  # atoms.npz and data.json replace the old ones together
        save_atoms(out / "atoms.npz", data)
        info = {"kind": "atoms", "count": len(data), "atoms": int(len(data.numbers)), "counts": counts,
                "elements": sorted({int(z) for z in data.numbers}),
                "sha256": {"atoms.npz": sha256_file(out / "atoms.npz"), "content": content_hash(data)}}
        if not data.neutral_singlets():
            info["electronic_states"] = {f"charge {q} multiplicity {m}": n
                                         for (q, m), n in sorted(data.states().items())}
        if "file" in source:  # which file the numbers come from; generated MD is named by its settings and versions
            info["source_sha256"] = sha256_file(Path(source["file"]))
        if notes:  # kept for the report, which the terminal's scroll-back is not
            info["notes"] = notes
        write_json(out / "data.json", info)
    return info


def order_notes(data, file: str) -> list[str]:
    """A file whose structures are a trajectory's frames in time order (MD17's are): the split draws test
    structures at random, beside training frames a step away. Told by the integrated autocorrelation time of
    the energies along each run of consecutive structures of the same atoms, weighted by the runs' lengths."""
    import numpy as np

    from chemspec.runtime.md import autocorrelation_time

    sizes = data.sizes()
    within = np.arange(len(data.numbers)) - np.repeat(data.offsets[:-1], sizes)
    keys = np.stack([sizes, np.add.reduceat(data.numbers * (within + 1), data.offsets[:-1])], axis=1)
    starts = np.flatnonzero(np.r_[True, np.any(keys[1:] != keys[:-1], axis=1), True])
    runs = [(a, b) for a, b in zip(starts[:-1], starts[1:]) if b - a >= 8]
    taus = [(autocorrelation_time(data.energy[a:b]), b - a) for a, b in runs]
    if not taus or (tau := sum(t * n for t, n in taus) / sum(n for _, n in taus)) < 2:
        return []
    return [f"{file}: the energies of consecutive structures stay correlated over about {tau:.0f} of them, as the "
            "frames of a trajectory in time order do, so the split's random draw puts test structures beside "
            "training frames a few steps away: the test errors flatter the model, and a data size counts correlated "
            f"frames; thin it to one frame in {math.ceil(tau)} or fewer (as rMD17 samples MD17) for independent ones"]


def _check_units(data, source: dict, check: bool, bounds: bool) -> list[str]:
    """Refuse values implausible in the energy unit the study left to the format's default; note energies of
    an extxyz or ASE-db file (which may hold relative ones) that look like Hartree totals read in eV (the notes
    are returned). A unit the study gives is held only to the bounds no molecule passes, whatever its energies'
    reference."""
    from chemspec.runtime.plausible import TOTAL_ENERGY_FORMATS, implausible_units

    units, fmt = source["units"], source["format"]
    unit, totals, forces = units["energy"], fmt in TOTAL_ENERGY_FORMATS, units.get("force")
    given = {"length_unit": units["length"], "force_unit": forces}
    with_forces = f", with forces in {forces} as it gives them" if forces else ""
    if not check:
        found = implausible_units(data, unit, typical=True, **given) if bounds and len(data) else None
        if found:
            raise RunError(f"{fmt} file {source['file']} read in {unit}, as data.source.units gives it{with_forces}, "
                           f"has {found.problem}, more than any molecule's; {_unit_advice(found, units)} (where they "
                           "are right, data.source.unit_checks: false reads them as they are)")
        return []
    found = implausible_units(data, unit, totals, **given) if len(data) else None
    as_totals = implausible_units(data, unit, totals=True, **given) if len(data) and not totals else None
    if found:
        really = (" or holds energies relative to a reference, from a valence-only method such as xTB or with "
                  f"effective core potentials (an {fmt} file holds all-electron total energies),"
                  if totals else "")
        escape = (f"write data.source.units: {{energy: {unit}}} to read it as it is"
                  if implausible_units(data, unit, typical=True, **given) is None else
                  "set data.source.unit_checks: false to read it as it is, since its values pass no bound in "
                  f"{unit} either")
        energies = found.energy is not None or "energies" in found.unknown
        other = (f"or, if the file really is in {unit},{really} {escape}" if energies else
                 "where they are right, data.source.unit_checks: false reads them as they are")
        raise RunError(f"{fmt} file {source['file']} read in {unit}, the {fmt} default as data.source.units leaves "
                       f"the energy out{with_forces}, has {found.problem}; {_unit_advice(found, units)} ({other})")
    if not (as_totals and as_totals.energy == "Hartree"):
        return []
    return [f"{fmt} file {source['file']} read in {unit}, the {fmt} default, has energies of "
            f"{float(data.energy.mean() / data.sizes().mean()):.4g} {unit} per atom: all-electron total energies in "
            f"Hartree, read as {unit}, look so; if the file is in Hartree, set data.source.units: {{energy: Hartree}}, "
            f"which reads the forces in Hartree/{units['length']}, or {{energy: Hartree, force: Hartree/bohr}}, as "
            f"most quantum-chemistry outputs give them (relative or valence-only energies in {unit} may look so too)"]


def _check_forces(data, source: dict) -> None:
    """Refuse forces whose work along the file's trajectory is the energy's change only in another unit or with
    the other sign (force_work.py)."""
    from chemspec.runtime.force_work import misread, work_ratio

    found = work_ratio(data)
    units = source["units"]
    read_in = units.get("force", f"{units['energy']}/{units['length']}")
    if found is None or (wrong := misread(found[0], read_in)) is None:
        return
    (ratio, steps), (unit, gradients) = found, wrong
    fix = f"{'set' if 'force' in units else 'add'} force: {unit} under data.source.units"
    if gradients:
        advice = (f"the file's {source.get('forces_key', 'forces')} are gradients of the energy (dE/dx), not forces "
                  "(−dE/dx): write their negatives into the file" + (f", and {fix}" if unit != read_in else ""))
    else:
        advice = (f"either the forces are in {unit}: {fix}; or the energies are not in {units['energy']}: give "
                  "energy: (and force:, if it differs) in the file's units (Hartree and Hartree/bohr in most "
                  "quantum-chemistry outputs)")
    raise RunError(f"{source['format']} file {source['file']}: along {steps} small steps between consecutive frames "
                   f"the energy changes by {ratio:.3g} times the work of the forces read in {read_in} (−∫F·dx; 1 "
                   f"where they agree); {advice} (where they are right, data.source.unit_checks: false reads them "
                   "as they are)")


def _unit_advice(found, units: dict) -> str:
    """What to write in data.source.units (as compiled: `units`) where `found` (plausible.Implausible) names units
    that fit. A force unit the study gave equal to energy/length is not in `units`, so the advice on a new energy
    unit says what such a force: must become."""
    advice = []
    if found.energy and found.force:
        advice.append(f"the energies are likely in {found.energy} and the forces in {found.force}: set "
                      f"data.source.units: {{energy: {found.energy}, force: {found.force}}}")
    elif found.energy and units.get("force"):
        advice.append(f"the energies are likely in {found.energy}: set energy: {found.energy} under "
                      f"data.source.units, keeping force: {units['force']}")
    elif found.energy and found.forces_rms is not None:
        options = [(f"{{energy: {found.energy}, force: {units['energy']}/{units['length']}}}",
                    f"in {units['energy']}/{units['length']}, as read now", found.forces_rms[0]),
                   (f"{{energy: {found.energy}}}", f"in {found.energy}/{units['length']} too", found.forces_rms[1])]
        options.sort(key=lambda option: abs(math.log(option[2])) if option[2] > 0 else math.inf)  # MD's: ~1 eV/Å
        advice.append(f"the energies are likely in {found.energy}; the forces fit either unit, so set data.source."
                      "units: " + ", or ".join(f"{setting} where they are {unit} (an RMS of {rms:.3g} eV/Å)"
                                               for setting, unit, rms in options))
    elif found.energy:
        advice.append(f"it is likely in {found.energy}: set data.source.units: {{energy: {found.energy}}}, which "
                      f"reads the forces in {found.energy}/{units['length']} too (a force: beside it must then be "
                      "that, or left out)")
    elif found.force:
        advice.append(f"the forces are likely in {found.force}: set force: {found.force} under data.source.units")
    if found.unknown:
        advice.append(f"no unit chemspec knows makes the {' and the '.join(found.unknown)} plausible: check the "
                      "file and data.source.units")
    return "; ".join(advice)
