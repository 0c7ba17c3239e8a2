"""ChemGPT's learning-rate schedule against the grid: keys it does not read, rates it never lowers, and
warm-ups too long for the cells or the TPE window, or unlike across its batch sizes."""

from __future__ import annotations

import math
from collections.abc import Iterator

from chemspec.specs.data import Data
from chemspec.specs.hpo import Hpo
from chemspec.specs.training import SCHEDULE_READS, Training


def optimiser_steps(training: Training, size: int, batch: int) -> int:
    """Optimiser steps of a whole run on `size` rows at `batch` rows a step, each rank stepping through its
    share of every epoch."""
    ranks = training.devices if isinstance(training.devices, int) else 1  # 'auto': at least one
    return math.ceil(math.ceil(size / ranks) / batch) * training.max_epochs


def lm_schedule_problems(training: Training, data: Data, hpo: Hpo, tpe_size: int) -> Iterator[str]:
    """Scheduler fields that ChemGPT's schedule does not read, learning rates it never lowers, and
    warm-ups too long for the cells or the TPE window (TPE trains on `tpe_size` rows)."""
    scheduler = training.scheduler
    for field in scheduler.unread():
        readers = " and ".join(name for name, read in SCHEDULE_READS.items() if field in read)
        yield (f"training.scheduler.{field}: the {scheduler.name} schedule does not read it (the {readers} "
               f"schedule{'s do' if ' and ' in readers else ' does'}); remove it, or set another name")
    kept = [rate for rate in hpo.grid.learning_rate if rate <= scheduler.min_lr]
    if scheduler.name != "constant" and kept:
        yield (f"hpo.grid.learning_rate: {kept} at or below training.scheduler.min_lr ({scheduler.min_lr}), which "
               f"the {scheduler.name} schedule never lowers; lower min_lr below {min(kept)}, or drop those rates")
    if scheduler.name != "plateau":  # plateau has no warm-up (refused above)
        yield from _warmup_problems(training, data, hpo, tpe_size)


def _warmup_problems(training: Training, data: Data, hpo: Hpo, tpe_size: int) -> Iterator[str]:
    """A warm-up as long as a cell's whole run: that cell never trains at its learning rate, and a cosine
    never starts, so the smallest data sizes would train on another schedule than the rest. A warm-up as
    long as the TPE window, where there are configurations to rank: TPE would rank them on warm-up losses
    alone. Steps are counted as runtime.train counts them (per rank, whole batches an epoch) and the window
    as runtime.tpe.window_steps cuts it; the largest batch size gives the fewest."""
    size, batch = min(data.sizes), max(hpo.grid.batch_size)
    steps = optimiser_steps(training, size, batch)
    warmup = training.scheduler.warmup(steps)
    if warmup >= steps:
        yield (f"training.scheduler.warmup_steps {warmup} is at least the whole run of "
               f"the cells at data size {size} with batch_size {batch} ({steps} optimiser steps over "
               f"{training.max_epochs} epoch(s)), which would never leave the warm-up; set it below {steps}")
    if len(hpo.grid.configs()) == 1:  # nothing to rank
        return
    fraction, size = hpo.tpe.budget_fraction, tpe_size
    total = optimiser_steps(training, size, batch)
    window, warmup = max(1, round(fraction * total)), training.scheduler.warmup(total)
    if window <= warmup and (share := training.scheduler.warmup_fraction):
        yield (f"hpo.tpe.budget_fraction {fraction} stops the TPE runs (data size {size}, batch_size {batch}) "
               f"after {window} of their {total} optimiser steps, within training.scheduler.warmup_fraction "
               f"{share} ({warmup} steps), so TPE would rank the configurations on warm-up losses alone; lower "
               f"warmup_fraction below budget_fraction, or raise budget_fraction above {share}")
    elif window <= warmup:
        needed = math.ceil(round((warmup + 1) / total * 100, 9)) / 100
        raise_it = f", or raise budget_fraction to at least {needed}" if needed <= 1 else ""
        lower = f"lower warmup_steps below {window}" if window > 1 else "remove warmup_steps"
        yield (f"hpo.tpe.budget_fraction {fraction} stops the TPE runs (data size {size}, batch_size {batch}) "
               f"after {window} of their {total} optimiser steps, within training.scheduler.warmup_steps "
               f"({warmup}), so TPE would rank the configurations on warm-up losses alone; {lower}{raise_it}")


def warmup_notes(training: Training, hpo: Hpo, tpe_size: int) -> list[str]:
    """warmup_steps is a count of steps, so a TPE window of a larger batch size, which holds fewer steps,
    spends more of itself warming up, and TPE ranks that configuration on more warm-up loss."""
    warmup, batches = training.scheduler.warmup_steps, sorted(set(hpo.grid.batch_size))
    if not warmup or len(batches) == 1 or training.scheduler.name == "plateau":
        return []
    windows = [max(1, round(hpo.tpe.budget_fraction * optimiser_steps(training, tpe_size, batch)))
               for batch in (batches[0], batches[-1])]
    small, large = (min(1.0, warmup / window) for window in windows)
    if large - small < 0.05:
        return []
    return [f"training.scheduler.warmup_steps: {warmup} steps are {small:.0%} of a TPE run at batch_size "
            f"{batches[0]} and {large:.0%} at batch_size {batches[-1]}, so TPE ranks the larger batch on more "
            "warm-up loss; warmup_fraction (a share of each run) warms every configuration up alike"]
