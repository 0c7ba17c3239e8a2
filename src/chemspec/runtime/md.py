"""MD17-style data generated here: RDKit conformer, ASE Langevin dynamics, GFN2-xTB energies and forces.

Each molecule is one trajectory in its own worker process with one OpenMP thread. Its random streams
(conformer embedding, initial velocities, thermostat noise) come from a seed derived from the study
seed and the molecule's position in the list, and every trajectory runs single-threaded, so the data
are byte-identical whatever the number of workers. An SCF failure is retried once from the previous
frame; a frame that fails twice is dropped and counted, never silently. Stored forces are xTB's own,
not the centre-of-mass-projected forces the dynamics uses.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import queue
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from chemspec.errors import RunError
from chemspec.runtime.atoms import AtomsData, Frames, from_frames
from chemspec.specs.atoms_source import md_state

if TYPE_CHECKING:
    from ase import Atoms
    from ase.md.langevin import Langevin
    from tblite.ase import TBLite

FRICTION_PER_FS = 0.01  # the thermostat relaxes velocities in ~100 fs: canonical sampling, little damping
MAX_CONSECUTIVE_DROPS = 3
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Job:
    """One molecule's trajectory: everything a worker needs, nothing it must look up."""

    name: str
    smiles: str
    frames: int
    temperature_K: float
    stride: int
    timestep_fs: float
    equilibration_steps: int
    seed: np.random.SeedSequence


def generate_md(molecules: list[tuple[str, str]], frames: int, temperature_K: float, stride: int, timestep_fs: float,
                equilibration_steps: int, seed: int, progress: bool = False) -> tuple[AtomsData, dict]:
    """`frames` structures in total, split evenly over `molecules` ((name, SMILES) pairs, as specs.GenerateMD.smiles
    gives the SMILES), and counts per molecule and in total.

    Each molecule's `mean_temperature_K` is the kinetic temperature over its kept frames, with 3N−3
    degrees of freedom (the centre of mass is fixed). Workers are spawned, so a script that calls this
    at import time needs the `if __name__ == "__main__":` guard."""
    if not molecules or frames < len(molecules):
        raise RunError(f"data.source.frames ({frames}) must be at least the number of molecules "
                       f"({len(molecules)}): every molecule needs a frame")
    _require_tblite()
    seeds = np.random.SeedSequence(seed).spawn(len(molecules))
    jobs = [Job(name, smiles, frames // len(molecules) + (i < frames % len(molecules)),
                temperature_K, stride, timestep_fs, equilibration_steps, seeds[i])
            for i, (name, smiles) in enumerate(molecules)]
    results = _run_parallel(jobs, frames, progress)
    data, _ = from_frames([block for block, _ in results])
    per_molecule = [{"name": job.name, **info} for job, (_, info) in zip(jobs, results)]
    if empty := [info["name"] for info in per_molecule if info["kept"] == 0]:
        raise RunError(f"md: GFN2-xTB failed {MAX_CONSECUTIVE_DROPS} times in a row for {', '.join(empty)}, which "
                       f"gave no frames{' (the other molecules did)' if len(data) else ''}; lower "
                       "data.source.temperature_K or timestep_fs, or drop them from data.source.molecules")
    totals = {key: sum(info[key] for info in per_molecule) for key in ("kept", "retried_scf", "dropped_scf")}
    return data, {**totals, "molecules": per_molecule}


def xtb_calculator(charge: int = 0, multiplicity: int = 1) -> TBLite:
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", charge=charge, multiplicity=multiplicity, verbosity=0)


def _require_tblite() -> None:
    try:
        import tblite.ase  # noqa: F401
    except ImportError as exc:
        raise RunError(f"data.source.method gfn2-xtb needs the tblite package ({exc}); "
                       "install it with `pip install tblite`") from None


def _run_parallel(jobs: list[Job], total: int, progress: bool) -> list[tuple[Frames, dict]]:
    # Spawned, not forked, workers: a fork would inherit OpenMP thread pools already sized by the parent.
    context = multiprocessing.get_context("spawn")
    workers = max(1, min(len(jobs), len(os.sched_getaffinity(0))))
    with _single_thread_env(), contextlib.ExitStack() as stack:
        ticks = stack.enter_context(context.Manager()).Queue() if progress else None
        pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=context))
        futures = [pool.submit(trajectory, job, ticks) for job in jobs]
        if ticks is not None:
            _follow(futures, ticks, total)
        return [future.result() for future in futures]


@contextlib.contextmanager
def _single_thread_env() -> Iterator[None]:
    """Spawned workers inherit this environment, so their libraries start with one thread."""
    saved = {key: os.environ.get(key) for key in SINGLE_THREAD}
    os.environ.update(SINGLE_THREAD)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _follow(futures: list[Future], ticks: queue.Queue[int], total: int) -> None:
    from tqdm import tqdm

    with tqdm(total=total, unit="frame", desc="md (GFN2-xTB)") as bar:
        while not all(future.done() for future in futures) or not ticks.empty():
            try:
                bar.update(ticks.get(timeout=0.2))
            except queue.Empty:
                pass


def trajectory(job: Job, ticks: queue.Queue[int] | None = None) -> tuple[Frames, dict]:
    """Equilibrate, then label one frame every `stride` steps; runs in a worker process."""
    dyn = _dynamics(job)
    atoms = dyn.atoms
    info = {"smiles": job.smiles, "atoms": len(atoms), "retried_scf": 0}
    kept: list[tuple[np.ndarray, float, np.ndarray, float]] = []
    failures = 0 if _advance(dyn, job.equilibration_steps, info) else MAX_CONSECUTIVE_DROPS
    for _ in range(job.frames):
        if failures >= MAX_CONSECUTIVE_DROPS:
            break
        label = _advance(dyn, job.stride, info)
        failures = 0 if label else failures + 1
        if label:
            kept.append((atoms.get_positions(), *label, atoms.get_temperature()))
        if ticks is not None:
            ticks.put(1)
    # Frames never attempted after MAX_CONSECUTIVE_DROPS failures in a row count as dropped too.
    tau = autocorrelation_time([k[1] for k in kept])
    info.update(kept=len(kept), dropped_scf=job.frames - len(kept), abandoned=failures >= MAX_CONSECUTIVE_DROPS,
                mean_temperature_K=float(np.mean([k[3] for k in kept])) if kept else None,
                energy_autocorrelation_frames=None if tau is None else round(tau, 2))
    shape = (len(kept), len(atoms), 3)
    block = Frames(atoms.numbers.astype(np.int64), np.reshape([k[0] for k in kept], shape),
                   np.array([k[1] for k in kept]), np.reshape([k[2] for k in kept], shape),
                   atoms.info["charge"], atoms.info["multiplicity"])
    return block, info


def autocorrelation_time(series) -> float | None:
    """Integrated autocorrelation time of `series` in samples, 1 + 2·Σ ρ(k) summed up to Sokal's automatic
    window (the first M ≥ 5·τ(M)): about 1 for independent samples, (1 + φ)/(1 − φ) for an AR(1) process
    of coefficient φ. None below 8 samples."""
    x = np.asarray(series, dtype=float)
    n = len(x)
    if n < 8:
        return None
    x = x - x.mean()
    if not np.any(x):
        return 1.0
    spectrum = np.fft.rfft(x, 2 * n)
    rho = np.fft.irfft(spectrum * np.conj(spectrum))[:n] / float(x @ x)
    tau = 2 * np.cumsum(rho) - 1
    inside = np.arange(n) >= 5 * tau
    return float(tau[np.argmax(inside)] if inside.any() else tau[-1])


def shortfall_notes(molecules: list[dict]) -> list[str]:
    """What a user should know about molecules whose dynamics stopped before giving all their frames."""
    return [f"{info['name']}: GFN2-xTB failed {MAX_CONSECUTIVE_DROPS} times in a row, so its dynamics stopped after "
            f"{info['kept']} of {info['kept'] + info['dropped_scf']} frames and the data hold fewer of it than "
            "of the others; lower data.source.temperature_K or timestep_fs to keep them all"
            for info in molecules if info["abandoned"] and info["kept"]]


def correlation_notes(molecules: list[dict], stride: int, timestep_fs: float) -> list[str]:
    """What a user should know about molecules whose kept frames are not independent."""
    notes = []
    for info in molecules:
        tau = info.get("energy_autocorrelation_frames")
        if tau is not None and tau >= 2:
            notes.append(f"{info['name']}: energies stay correlated over {tau:.0f} kept frames ({tau * stride * timestep_fs:.0f} "
                         "fs), so a random split puts test frames beside training ones and a data size counts "
                         f"correlated frames; for independent frames raise data.source.stride to about "
                         f"{math.ceil(tau * stride)}")
    return notes


def temperature_notes(molecules: list[dict], temperature_K: float, equilibration_steps: int) -> list[str]:
    """Molecules whose kept frames average a kinetic temperature further from the target than 3 standard errors
    (and 10%): the dynamics had not equilibrated, so the frames sample another temperature than the study says.
    A frame's relative spread is sqrt(2/dof); the frames count as kept / τ independent ones."""
    notes = []
    for info in molecules:
        mean, dof = info.get("mean_temperature_K"), 3 * info.get("atoms", 1) - 3
        if mean is None or dof <= 0 or info["kept"] < 2:
            continue
        independent = info["kept"] / max(1.0, info.get("energy_autocorrelation_frames") or 1.0)
        error = temperature_K * math.sqrt(2 / dof / independent)
        if abs(mean - temperature_K) > max(3 * error, 0.1 * temperature_K):
            notes.append(f"{info['name']}: its {info['kept']} frames average {mean:.0f} K against data.source."
                         f"temperature_K {temperature_K:g} K, further than their spread (±{error:.0f} K) explains, so "
                         f"they sample another temperature; raise data.source.equilibration_steps "
                         f"({equilibration_steps} now)")
    return notes


def _dynamics(job: Job) -> Langevin:
    """Langevin dynamics from the conformer with Maxwell-Boltzmann velocities; the centre of mass stays put."""
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    rng = np.random.default_rng(job.seed)
    atoms, charge, multiplicity = conformer(job.smiles, int(job.seed.generate_state(1)[0] % 2**31))
    atoms.calc = xtb_calculator(charge, multiplicity)
    atoms.info.update(charge=charge, multiplicity=multiplicity)
    atoms.set_constraint(FixCom())
    thermalize_momenta(atoms, job.temperature_K, rng=rng)
    Stationary(atoms)
    return Langevin(atoms, job.timestep_fs * units.fs, temperature_K=job.temperature_K,
                    friction=FRICTION_PER_FS / units.fs, fixcm=False, rng=rng)


def _advance(dyn: Langevin, steps: int, info: dict) -> tuple[float, np.ndarray] | None:
    """Run `steps` steps and label the end point; after an SCF failure retry once from the start point."""
    from ase.calculators.calculator import CalculationFailed

    atoms = dyn.atoms
    start_positions, start_momenta = atoms.get_positions(), atoms.get_momenta()
    for attempt in range(2):
        try:
            dyn.run(steps)
            energy = atoms.get_potential_energy()
            # The FixCom constraint projects forces; the labels are the xTB gradient itself.
            forces = atoms.get_forces(apply_constraint=False)
            if np.isfinite(energy) and np.isfinite(forces).all():
                return float(energy), forces
        except CalculationFailed:
            pass
        if attempt == 0:
            info["retried_scf"] += 1
        atoms.set_positions(start_positions, apply_constraint=False)
        atoms.set_momenta(start_momenta, apply_constraint=False)
    return None


def conformer(smiles: str, seed: int) -> tuple[Atoms, int, int]:
    """An MMFF-optimised ETKDG conformer with explicit hydrogens, its formal charge and spin multiplicity."""
    from ase import Atoms
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    if mol.GetNumAtoms() < 2:
        raise RunError(f"data.source.molecules: {smiles!r} has one atom; MD needs at least two")
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise RunError(f"data.source.molecules: RDKit could not embed {smiles!r} in 3-D; "
                       "check the SMILES or choose another molecule")
    if not AllChem.MMFFHasAllMoleculeParams(mol):
        raise RunError(f"data.source.molecules: MMFF has no parameters for {smiles!r}; choose another molecule")
    AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    atoms = Atoms(numbers=[atom.GetAtomicNum() for atom in mol.GetAtoms()],
                  positions=mol.GetConformer().GetPositions())
    return atoms, *md_state(smiles)
