"""Cells: one resolved, typed unit of work per pipeline stage, and their identities.

A cell is the contract between the compiler and the runtime: it holds every value its stage needs
(settings and file paths), so a stage never opens the study file. A cell's identity is the sha256 of
the canonical JSON of the fields that change its result -- never paths, worker counts or names -- so
two specs that differ only in bookkeeping give cells of the same identity.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from chemspec.specs.outputs import Executor
from chemspec.specs.training import BOOKKEEPING, Training


class Cell(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataCell(Cell):
    """Read the study's molecules or structures, canonicalise and check them, and write the data store."""

    study: str
    """The study's name (its output folder is data/<study>)."""
    seed: int
    """The study's seed: it draws the `max_molecules` sample of a large file."""
    kind: str
    """data.kind: 'smiles' (molecules as text) or 'atoms' (structures with energies and forces)."""
    source: dict[str, Any]
    """data.source as validated, a file's path as the project reads it; the file itself is the stage's dependency."""
    representation: str | None
    """The text a ChemGPT cell trains on ('selfies' or 'smiles'); None for structures."""
    max_length: int
    """Molecules whose text is longer (in tokens) are left out, and the data stage says how many."""
    out_dir: str
    check_units: bool = True
    """Whether the data stage holds file values to every plausibility bound of their energy unit: where the
    study left the unit to the format's default (a unit it gives meets only the bounds no molecule passes).
    A check, not a result, so not part of the identity; params written before it existed check."""
    unit_bounds: bool = True
    """Whether the data stage holds file values to the bounds no molecule passes where the study gave their unit:
    false where it set data.source.unit_checks: false. Not part of the identity either."""
    one_state: str | None = None
    """The model family whose cells see no charge or spin: the data stage refuses structures of several
    electronic states for it, before the split and TPE run. None where the model sees them. A check too."""


class SplitCell(Cell):
    """Draw the held-out sets and the nested training subsets, one per data size."""

    seed: int
    """The study's seed, which draws the split."""
    sizes: list[int]
    """data.sizes: each training subset holds the one before it."""
    validation: int
    """Molecules or structures held out for validation (data.validation)."""
    test: int
    """Molecules or structures held out for testing (data.test)."""
    data_dir: str
    out_dir: str
    energies: bool = True
    """Whether the training loss scores energies, which the held-out compositions' reference energies then
    must be fixed for (a check, not part of the identity)."""


class TrainCell(Cell):
    """A training run: a TPE run when it has fixed hyperparameters and stops at `window`, a full run otherwise."""

    name: str
    """The stage's name in dvc.yaml: 'tpe@<config>', 'calibrate@<config>' or 'train@<size>-<data size>'."""
    family: str
    """model.family: chemgpt, schnet, painn or spookynet."""
    size_name: str
    size: dict[str, Any]
    """The model size's architecture (its entry in model.sizes)."""
    data_size: int
    """The training subset's size, one of data.sizes."""
    epochs: int
    """training.max_epochs: the full run's schedule, which a TPE run follows to its window."""
    window: float = 1.0
    """Share of the run's optimiser steps to train: a TPE run follows the full run's learning-rate schedule
    and stops at hpo.tpe.budget_fraction of its steps, mid-epoch if need be."""
    seed: int
    """The run's seed: the study's, or the study's plus the replicate's number (fit.replicate_seeds)."""
    training: Training
    hparams: dict[str, Any] | None
    """Fixed hyperparameters (TPE cells); None reads rank `rank` from the selection."""
    rank: int
    """Which of the select stage's configurations a full run trains: 1 is the best (hpo.tpe.keep ranks)."""
    group: str
    """Which selection the hyperparameters come from: '*' (one for the study) or a model size."""
    data_dir: str
    split_dir: str
    selected: str | None
    """The select stage's choice for this cell's group and rank (None for TPE cells): its hyperparameters
    alone, so that a selection that ranks otherwise but keeps the same configuration retrains nothing."""
    out_dir: str
    resume_dir: str


class SampleCell(Cell):
    """Sample molecules from one trained ChemGPT cell and score them against its training and test sets."""

    name: str
    data_size: int
    """The sampled cell's training subset size (the novelty reference)."""
    representation: str
    """The text the model writes, 'selfies' or 'smiles', decoded to SMILES before scoring."""
    samples: int
    """generation.samples: molecules drawn."""
    temperature: float
    top_k: int
    top_p: float
    batch_size: int
    """generation's sampling settings, as transformers' generate takes them."""
    seed: int
    """generation.seed, which draws the samples."""
    fcd_molecules: int
    """Valid molecules FCD is scored on (generation.fcd_count()). Added 2026-12-05, when FCD moved from
    every valid sample to this fixed count: in the identity, it makes every sample cell compiled before
    score again once, and no train cell."""
    accelerator: str
    """training.accelerator: where sampling runs."""
    train_identity: str
    """Identity of the training cell sampled: a retrained model is a new sample."""
    train_dir: str
    data_dir: str
    split_dir: str
    reference_dir: str
    out_dir: str


class ReferenceCell(Cell):
    """The test set's ChemNet statistics and molecular properties, which every sample cell scores against,
    and FCD's floor: the FCD of `fcd_molecules` real molecules from outside the test set, drawn by `seed`."""

    fcd_molecules: int
    seed: int
    accelerator: str
    data_dir: str
    split_dir: str
    out_dir: str


class SelectCell(Cell):
    """Rank each search's configurations by their TPE estimates and write the ones full runs train."""

    keep: int
    """hpo.tpe.keep: configurations kept per search, each trained in full."""
    margin: float | None
    """hpo.tpe.margin: configurations whose estimate exceeds the best's by more than this fraction are dropped."""
    estimator: dict[str, Any]
    """hpo.tpe's estimator and its options: select estimates from each TPE cell's loss log, so that changing
    the estimator retrains no TPE cell."""
    tpe_dirs: dict[str, str]
    unranked: dict[str, dict[str, Any]] = {}
    """Configurations kept without a TPE run, by key: where hpo.grid holds one, there is nothing to rank."""
    groups: dict[str, list[str]]
    """Selection group ('*' or a model size) -> the TPE cells ranked against each other."""
    out: str
    """selected.json: every search's ranking and estimates."""
    choices: dict[str, list[str]]
    """Selection group -> the choice file of each rank up to keep, which the train cells depend on."""


class CalibrationCell(Cell):
    """Compare each TPE estimate with the converged loss of the same configuration."""

    tpe_dirs: dict[str, str]
    full_dirs: dict[str, str]
    groups: dict[str, list[str]]
    """The searches, as select has them: each one's configurations are scored and kept apart."""
    budget_fraction: float
    """hpo.tpe.budget_fraction: where in each full run the TPE estimate is read."""
    estimator: dict[str, Any]
    keep: int
    margin: float | None
    out_dir: str


class FitCell(Cell):
    """Fit the study's scaling laws to the trained cells' losses and draw the plots."""

    study: str
    family: str
    """The model family: the plots name the axes by what it trains on and how it counts parameters."""
    laws: list[str]
    """fit.laws: the laws fitted, each along the axes it applies to."""
    confidence: float
    """fit.confidence: the level of every interval."""
    bootstrap: int
    """fit.bootstrap: resamples of the cells for the bootstrap intervals (0: none)."""
    metrics: dict[str, str]
    """Train cell key -> its metrics.json."""
    generation: dict[str, str]
    """Train cell key -> its generation.json (empty without a generation section)."""
    selected: str
    """selected.json, whose configurations the plots and fit.json name."""
    out_dir: str


class ArchiveCell(Cell):
    """Store the study's losses, fits and provenance as content-addressed objects under `root`."""

    study: str
    seed: int
    spec: dict[str, Any]
    """The study as validated, less its executor section (bookkeeping, which changes no result)."""
    inputs: dict[str, str]
    """What the archive stage stores, by name: the result files of data, split, select and fit."""
    root: str
    """The archive's folder in the project ('archive')."""


class Cells(Cell):
    """Every cell of one study, by stage: what the compiler renders into dvc.yaml and params.yaml."""

    data: DataCell
    split: SplitCell
    tpe: dict[str, TrainCell]
    select: SelectCell
    calibrate: dict[str, TrainCell]
    calibration: CalibrationCell | None
    train: dict[str, TrainCell]
    reference: ReferenceCell | None
    sample: dict[str, SampleCell]
    fit: FitCell
    archive: ArchiveCell
    executor: Executor
    """How `chemspec launch` runs the stale cells: in no cell's identity, and not archived."""


IDENTITY_EXCLUDE = {"name", "data_dir", "split_dir", "selected", "out_dir", "out", "tpe_dirs", "full_dirs",
                    "metrics", "inputs", "root", "size_name", "resume_dir", "train_dir", "generation",
                    "reference_dir", "check_units", "unit_bounds", "one_state", "energies", "choices"}
# Until 2026-12-05 `training` also held learning_rate and batch_size, which nothing read (hpo.grid sets
# both); their defaults stay in the identity, so cells compiled before keep their identities.
RETIRED_TRAINING = {"batch_size": 32, "learning_rate": 1.0e-3}
# Which parameters weight decay reaches, where not every one. ChemGPT cells trained before 2026-12-05
# decayed every parameter; with the rule in their identity, those with weight decay retrain once.
DECAYED = {"chemgpt": "weight matrices and embeddings"}
# How a force field's epochs draw their batch order. Until 2026-12-05 one generator ran on across
# epochs, so a preempted cell could not resume; now each epoch's order follows from (seed, epoch), as
# ChemGPT's does. Force-field cells trained before retrain once.
EPOCH_ORDER = {"schnet": "seed and epoch", "painn": "seed and epoch", "spookynet": "seed and epoch"}
# Until 2026-12-06 TPE and train cells carried hpo.tpe's estimator, which only select reads, so choosing
# another estimator retrained every cell. The defaults stay in their identities, so cells keep them
# (compile carries the records of cells compiled with other estimator options to their new identities).
RETIRED_ESTIMATOR = {"estimator": "tse", "last_epochs": 1, "ema_decay": 0.9}


def choice_file(results: str, group: str, rank: int) -> str:
    """Where select writes the configuration of `rank` in `group` ('*' or a model size)."""
    return f"{results}/selected/{'' if group == '*' else group + '-'}r{rank}.json"


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _set(value: Any) -> Any:
    """A section's options less those left off (None)."""
    return {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else value


def identity(cell: Cell, estimator: dict[str, Any] = RETIRED_ESTIMATOR) -> str:
    """sha256 of the fields of a cell that change its result. `estimator`: what a TPE or train cell's identity
    holds; cells compiled before 2026-12-06 held the study's, by which relock.carry_selection knows them."""
    # Selections compiled before 2026-12-06 had no unranked configurations: they keep their identities.
    unset = {"unranked"} if isinstance(cell, SelectCell) and not cell.unranked else set()
    fields = cell.model_dump(mode="json", exclude=IDENTITY_EXCLUDE | unset)
    if isinstance(fields.get("training"), dict):
        # An option left off (None) does not change results, so options added later keep identities.
        fields["training"] = {**RETIRED_TRAINING, **{k: _set(v) for k, v in fields["training"].items()
                                                     if k not in BOOKKEEPING and v is not None}}
    if isinstance(cell, TrainCell) and cell.training.optimizer.weight_decay > 0 and cell.family in DECAYED:
        fields["decayed"] = DECAYED[cell.family]
    if isinstance(cell, TrainCell) and cell.family in EPOCH_ORDER:
        fields["epoch_order"] = EPOCH_ORDER[cell.family]
    if isinstance(cell, TrainCell):
        fields["estimator"] = estimator
    if isinstance(cell, FitCell):
        # DVC finds a stage changed where a dependency is added, not where one is dropped: the cells fitted
        # and sampled are named here, so a study that drops a size or its generation section refits.
        fields["cells"], fields["sampled"] = sorted(cell.metrics), sorted(cell.generation)
    return hashlib.sha256(canonical_json({"stage": type(cell).__name__, **fields})).hexdigest()
