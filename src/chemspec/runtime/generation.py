"""Generation quality of a set of sampled molecules, MOSES-style, computed offline with RDKit.

* validity: share of samples that RDKit parses into a molecule with at least one atom. SELFIES
  decode to a valid graph by construction, so validity is ~1 for SELFIES models; the telling
  figure is `trivial`, the share that decode to an empty string or a single-heavy-atom molecule.
* uniqueness: distinct canonical SMILES among the valid samples.
* novelty: share of the distinct valid samples that are not in the training subset the cell saw.
* internal diversity: MOSES's IntDiv1, 1 − the mean Tanimoto similarity of Morgan fingerprints
  (radius 2, 1024 bits) over all ordered pairs of valid samples, repeats and self-pairs included
  (at most `DIVERSITY_CAP` samples, chosen by seed).
* FCD: Fréchet ChemNet Distance of `fcd_molecules` valid samples, drawn by seed, to the held-out test set
  (fcd_torch, which ships ChemNet's weights).
* properties: Wasserstein-1 distance of logP, QED and molecular weight between the valid samples
  and the test set.
The test set's side of FCD and of the properties (a `Reference`) is computed once per study by the
reference stage, not by every sample cell: at 20,000 MOSES test molecules that is 97 s on two CPU
cores, against the 6 s each cell's metrics take (BENCHMARKS.md).
FCD, properties and diversity take the valid samples with their repeats, as MOSES does: a model that repeats
itself is a narrower distribution.
FCD is biased upward at small sample counts (roughly as 1/n): 900 MOSES molecules score 2.58 ± 0.03
against 1,000 others of MOSES, where a model that samples the data distribution exactly would score
0 with unlimited samples. So every cell is scored on the same count of valid molecules (a cell's
validity would otherwise move its bias), and the reference stage measures the floor at that count:
the FCD of as many real molecules from outside the test set (`fcd_floor`), which the FCD fit
subtracts. A metric that needs more molecules than there are is None, with the reason in `notes`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from chemspec.errors import RunError

DIVERSITY_CAP = 5000
FLOOR_DRAWS = 3
"""Disjoint draws of real molecules whose FCDs give the floor (their mean) and its spread."""
PROPERTIES = ("logp", "qed", "mw")


def _chem():
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    return Chem


def canonical(smiles: str):
    """(canonical SMILES, heavy atoms) of a parsable molecule, or None."""
    Chem = _chem()
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    return Chem.MolToSmiles(mol), mol.GetNumHeavyAtoms()


def internal_diversity(smiles: Sequence[str], seed: int = 0) -> float | None:
    """1 − mean Tanimoto similarity over all n² ordered pairs (as MOSES); None below two molecules."""
    if len(smiles) < 2:
        return None
    from rdkit import DataStructs
    from rdkit.Chem import rdFingerprintGenerator

    Chem = _chem()
    chosen = list(smiles)
    if len(chosen) > DIVERSITY_CAP:
        picks = np.random.default_rng(seed).choice(len(chosen), DIVERSITY_CAP, replace=False)
        chosen = [chosen[i] for i in sorted(picks)]
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)
    prints = [generator.GetFingerprint(Chem.MolFromSmiles(s)) for s in chosen]
    off_diagonal = sum(float(np.sum(DataStructs.BulkTanimotoSimilarity(prints[i], prints[i + 1:])))
                       for i in range(len(prints) - 1))
    n = len(prints)
    return 1.0 - (2 * off_diagonal + n) / n**2


def properties(smiles: Sequence[str]) -> dict[str, np.ndarray]:
    from rdkit.Chem import QED, Crippen, Descriptors

    Chem = _chem()
    mols = [Chem.MolFromSmiles(s) for s in smiles]
    return {"logp": np.array([Crippen.MolLogP(m) for m in mols]),
            "qed": np.array([QED.qed(m) for m in mols]),
            "mw": np.array([Descriptors.MolWt(m) for m in mols])}


@dataclass(frozen=True)
class Reference:
    """What the metrics need of the reference (test) set, computed once per study by the reference stage:
    the mean and covariance of ChemNet's penultimate activations (None below two molecules), each
    molecule's properties, and the FCDs of real molecules at `floor_molecules` (see `with_floor`)."""

    count: int
    chemnet_mean: np.ndarray | None
    chemnet_cov: np.ndarray | None
    properties: dict[str, np.ndarray]
    floor: tuple[float, ...] = ()
    floor_molecules: int = 0

    def save(self, path: Path) -> None:
        arrays = {f"property_{k}": v for k, v in self.properties.items()}
        if self.chemnet_mean is not None:
            arrays |= {"chemnet_mean": self.chemnet_mean, "chemnet_cov": self.chemnet_cov}
        if self.floor:
            arrays |= {"fcd_floor": np.array(self.floor), "floor_molecules": np.array(self.floor_molecules)}
        with open(path, "wb") as handle:
            np.savez(handle, count=np.array(self.count), **arrays)

    @classmethod
    def load(cls, path: Path) -> Reference:
        from chemspec.runtime.io import read_npz

        arrays = read_npz(path, ("count", *(f"property_{name}" for name in PROPERTIES)))
        return cls(count=int(arrays["count"]), chemnet_mean=arrays.get("chemnet_mean"),
                   chemnet_cov=arrays.get("chemnet_cov"),
                   properties={name: arrays[f"property_{name}"] for name in PROPERTIES},
                   floor=tuple(float(v) for v in arrays.get("fcd_floor", ())),
                   floor_molecules=int(arrays.get("floor_molecules", 0)))

    def floor_summary(self) -> dict | None:
        """The floor as the records give it: mean FCD of the draws, their spread, count and size."""
        if not self.floor:
            return None
        spread = float(np.std(self.floor, ddof=1)) if len(self.floor) > 1 else None
        return {"value": float(np.mean(self.floor)), "std": spread, "draws": len(self.floor),
                "molecules": self.floor_molecules}


def reference(smiles: Sequence[str], device: str = "cpu") -> Reference:
    """The reference statistics of canonical `smiles`."""
    statistics = _chemnet_statistics(smiles, device) if len(smiles) >= 2 else (None, None)
    return Reference(len(smiles), *statistics, properties(smiles))


def with_floor(ref: Reference, outside: Sequence[str], n: int, seed: int, device: str = "cpu") -> Reference:
    """`ref` with FCD's floor at `n` molecules: the FCDs of up to FLOOR_DRAWS disjoint draws, by `seed`, of `n`
    real molecules of `outside` (none from the test set), what a model that samples the data itself would
    score. No floor where `ref` has no ChemNet statistics."""
    if ref.chemnet_mean is None:
        return ref
    draws = min(FLOOR_DRAWS, len(outside) // n)
    if draws == 0:
        raise RunError(f"reference: FCD's floor needs {n} molecules outside the test set, but there are "
                       f"{len(outside)}; lower generation.fcd_molecules")
    picks = np.random.default_rng(seed).permutation(len(outside))[: draws * n].reshape(draws, n)
    floor = tuple(fcd([outside[i] for i in sorted(draw)], ref, device) for draw in picks)
    return replace(ref, floor=floor, floor_molecules=n)


def property_distances(generated: Sequence[str], ref: Reference) -> dict[str, float] | None:
    if not generated or not ref.count:
        return None
    from scipy.stats import wasserstein_distance

    ours = properties(generated)
    return {name: float(wasserstein_distance(ours[name], ref.properties[name])) for name in PROPERTIES}


def _chemnet_statistics(smiles: Sequence[str], device: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of ChemNet's penultimate activations over `smiles`.

    fcd_torch supplies ChemNet's weights and its SMILES encoding; the activations are gathered here
    because its own loop calls `np.row_stack`, which NumPy 2.4 removed."""
    import warnings

    import torch
    from fcd_torch import FCD
    from fcd_torch.utils import SmilesDataset
    from torch.utils.data import DataLoader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = FCD(device=device, n_jobs=1).model.to(device)
    with torch.no_grad():
        activations = np.vstack([model(batch.transpose(1, 2).float().to(device)).cpu().numpy()
                                 for batch in DataLoader(SmilesDataset(list(smiles)), batch_size=512)])
    return activations.mean(0), np.cov(activations.T)


def fcd(generated: Sequence[str], ref: Reference, device: str = "cpu") -> float | None:
    """Fréchet ChemNet Distance (fcd_torch's); None below two molecules on either side."""
    if len(generated) < 2 or ref.chemnet_mean is None:
        return None
    from fcd_torch.utils import calculate_frechet_distance

    value = calculate_frechet_distance(ref.chemnet_mean, ref.chemnet_cov, *_chemnet_statistics(generated, device))
    return float(max(value, 0.0)) if math.isfinite(value) else None


def parse(samples: Sequence[str | None]) -> list[tuple[str, int] | None]:
    """Each sample's (canonical SMILES, heavy atoms), or None where it is invalid (or never ended: None)."""
    return [canonical(s) if s is not None else None for s in samples]


def evaluate(samples: Sequence[str], training: set[str], ref: Reference, *, fcd_molecules: int,
             device: str = "cpu", seed: int = 0, parsed: list[tuple[str, int] | None] | None = None) -> dict:
    """Every metric of `samples` (SMILES, possibly empty or invalid; None for a sample that never ended, an
    invalid one) against the canonical training set and the reference (test) set's statistics; FCD of
    `fcd_molecules` valid samples drawn by `seed`. `parsed`: parse(samples), where the caller has it."""
    n = len(samples)
    parsed = parse(samples) if parsed is None else parsed
    valid = [p[0] for p in parsed if p is not None]
    trivial = sum(1 for s, p in zip(samples, parsed) if s == "" or (p is not None and p[1] <= 1))
    unique = list(dict.fromkeys(valid))
    novel = [s for s in unique if s not in training]
    notes = {}
    if len(valid) < 2:
        notes["internal_diversity"] = f"{len(valid)} valid molecules; need at least 2"
    scored = None
    if len(valid) >= fcd_molecules:
        picks = np.random.default_rng(seed).choice(len(valid), fcd_molecules, replace=False)
        scored = [valid[i] for i in sorted(picks)]
    else:
        notes["fcd"] = (f"{len(valid)} valid molecules; need at least {fcd_molecules}: every cell's FCD is "
                        "scored on that many (generation.fcd_molecules), so this cell is left out of the FCD fit")
    if ref.chemnet_mean is None:
        notes["fcd"] = f"the test set holds {ref.count} molecules; need at least 2"
    result = {
        "samples": n,
        "unfinished": sum(s is None for s in samples),
        "validity": len(valid) / n if n else None,
        "trivial": trivial / n if n else None,
        "uniqueness": len(unique) / len(valid) if valid else None,
        "novelty": len(novel) / len(unique) if unique else None,
        "internal_diversity": internal_diversity(valid, seed),
        "fcd": fcd(scored, ref, device) if scored else None,
        "fcd_molecules": fcd_molecules,
        "fcd_floor": ref.floor_summary(),
        "wasserstein": property_distances(valid, ref),
        "notes": notes,
    }
    return result
