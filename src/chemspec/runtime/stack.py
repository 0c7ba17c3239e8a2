"""The versions of the packages a process runs with: the archive records those of the process that archives a
run, and each train and TPE cell those it trained with, which differ where cells train on a GPU machine and
the run is archived on another."""

from __future__ import annotations

import importlib.metadata
import platform

PACKAGES = ("chemspec", "torch", "lightning", "transformers", "dvc", "rdkit", "selfies", "statsmodels",
            "numpy", "pydantic", "schnetpack", "molsets", "fcd-torch", "ase", "tblite", "scipy")
"""What the archive's numbers come from: MOSES's data (molsets), FCD (fcd-torch), generated MD (ase, tblite)."""
TRAINING = ("torch", "lightning", "transformers")


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Python's version and each package's installed version (None where it is not installed)."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def training_stack() -> dict[str, str | None]:
    """What a cell trains with: Python, torch and the CUDA it was built for (None: a CPU build), Lightning and
    transformers."""
    import torch

    return {**versions(TRAINING), "cuda": torch.version.cuda}
