"""Whether a run's summary objects agree with its per-cell objects. The archive holds each cell's result twice
(its `train` object, and its row in `cells`, which the fit read): a rewrite made consistent (objects hashed
anew, the manifest and ref rewritten) passes every hash check, and a report would show the rewritten losses
beside fits of the old ones; this names the rows that disagree."""

from __future__ import annotations

import math

from chemspec.archive.store import Store
from chemspec.runtime.result_files import TEST_ERRORS

COMPARED = ("val_loss", "test_loss", *(key for key, _ in TEST_ERRORS.values()))
"""What a cell's row in `cells` copies from its `train` object."""


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def disagreements(store: Store, manifest: dict) -> list[str]:
    """A line for each value of `cells` that its cell's `train` object, or a fitted point that `cells`, does not
    record; none for a run archived without those objects."""
    objects = manifest.get("objects", {})
    if "cells" not in objects:
        return []
    cells, train = store.get_json(objects["cells"]), objects.get("train", {})
    lines = []
    for row in cells:
        if row.get("cell") not in train:
            continue
        own = store.get_json(train[row["cell"]])
        lines += [f"cells: {row['cell']} has {key} {row[key]}, its train object {own[key]}" for key in COMPARED
                  if key in row and key in own and not _same(row[key], own[key])]
    if "fit" not in objects:
        return lines
    losses = {(row.get("model"), row.get("data_size")): row.get("val_loss") for row in cells}
    for fitted in store.get_json(objects["fit"]).get("fits", []):
        if fitted.get("law") == "joint" or not fitted.get("x"):
            continue
        for x, y in zip(fitted["x"], fitted["y"]):
            known = ([losses.get((fitted["group"], x))] if fitted["axis"] == "data" else
                     [loss for (_, size), loss in losses.items() if str(size) == fitted["group"]])
            if not any(_same(y, loss) for loss in known):
                lines.append(f"fit: the {fitted['law']} law of {fitted['axis']}/{fitted['group']} has a point "
                             f"({x}, {y}) that no row of cells records")
    return lines
