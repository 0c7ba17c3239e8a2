"""A trained force-field cell as an ASE calculator.

The folder a force-field train cell writes (`results/<study>/train/<cell>/model`, or `checkpoints/<cell>` of a
pulled run) holds `config.json` (family and shape) and `model.pt` (the state dict of the trained module, its
per-element reference energies included). `ForceFieldCalculator(folder)` gives energies in eV and forces in
eV/Å of any isolated molecule of the elements the cell trained on, as the cell's own test errors measured them:

    from chemspec.runtime.calculator import ForceFieldCalculator
    atoms.calc = ForceFieldCalculator("results/quickstart-nff/train/w32d3-600/model")
    atoms.get_potential_energy(), atoms.get_forces()
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from chemspec.errors import InputError, RunError
from chemspec.runtime.atoms_states import checked_state
from chemspec.runtime.io import read_json

SHAPE = {"width": int, "depth": int, "cutoff": float, "n_rbf": int}
SET_STATE = "set atoms.info['charge'] and atoms.info['multiplicity'] (2S+1); left out, they are 0 and 1"


def load_forcefield(folder: str | Path, device: str = "cpu"):
    """(the trained ForceField module in eval mode on `device`, its cutoff in Å) from a train cell's model
    folder; InputError naming the file where the folder holds no trained force field."""
    import torch

    from chemspec.runtime.ff_models import FAMILIES
    from chemspec.runtime.forcefield import ForceField

    try:
        where = torch.device(device)
    except RuntimeError:
        raise InputError(f"device {device!r} is not a torch device", "give cpu, cuda or cuda:<index>") from None
    if where.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r}: this machine's torch sees no CUDA GPU", "give cpu") from None
    folder = Path(folder)
    config_path, weights = folder / "config.json", folder / "model.pt"
    for path in (config_path, weights):
        if not path.is_file():
            raise InputError(f"{path} is missing, so {folder} holds no trained force field",
                             "give the model folder of a force-field train cell (results/<study>/train/<cell>/model, "
                             "or checkpoints/<cell> of a pulled run)")
    config = read_json(config_path)
    if not isinstance(config, dict) or any(not isinstance(config.get(key), kind) and not (
            kind is float and isinstance(config.get(key), int)) for key, kind in SHAPE.items()):
        raise InputError(f"{config_path} does not give a force field's family and shape "
                         f"({', '.join(SHAPE)})", "pull the run again, or rerun its train cell")
    options = {"charge_spin": True} if config.get("charge_spin") else {}
    model = FAMILIES[config.get("family")](config["width"], config["depth"], float(config["cutoff"]),
                                           config["n_rbf"], **options)
    module = ForceField(model)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if any(value.dtype == torch.float64 for key, value in state.items() if key.startswith("model.")):
            module.double()  # a `precision: 64-true` cell
        module.load_state_dict(state)
    except (RuntimeError, ValueError, OSError, AttributeError) as exc:
        raise InputError(f"{weights} is not the state of a {config['family']} of {config_path}'s shape ({exc})",
                         "pull the run again, or rerun its train cell") from None
    return module.eval().to(where), float(config["cutoff"])


class ForceFieldCalculator(Calculator):
    """Energy (eV) and forces (eV/Å) of a trained force-field cell for an isolated molecule; `atoms.info` may give
    `charge` and `multiplicity` (a neutral singlet otherwise), which only a SpookyNet with charge_spin tells
    apart. It runs in the precision the cell's weights were saved in: float64 for `precision: 64-true`, float32
    otherwise."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, folder: str | Path, device: str = "cpu", **kwargs):
        super().__init__(**kwargs)
        self.device = device
        self.module, self.cutoff = load_forcefield(folder, device)
        shift = self.module.energy_shift.detach().cpu().numpy()
        self.trained = {int(z) for z in np.flatnonzero(shift)}

    def check_state(self, atoms, tol: float = 1e-15) -> list[str]:
        """ASE's changes since the last calculation, and a change of charge or multiplicity in atoms.info, which
        ASE does not compare: without it, the energy of the last state would be returned for the new one."""
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and repr(_given(atoms.info)) != repr(_given(self.atoms.info)):  # info may hold arrays
            changes.append("info")
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        from chemspec.runtime.atoms import AtomsData
        from chemspec.runtime.neighbours import ForceFieldDataset

        super().calculate(atoms, properties, system_changes)
        numbers = self.atoms.get_atomic_numbers()
        if not len(numbers):
            raise InputError("the atoms hold no atom", "give a structure of at least one atom")
        if unseen := sorted(set(numbers.tolist()) - self.trained):
            raise InputError(f"elements {unseen} occur in no structure this force field trained on, so it has no "
                             "reference energy for them", "use a cell trained on data with those elements")
        if self.atoms.pbc.any():
            raise InputError("the atoms are periodic (pbc), and chemspec's force fields see isolated molecules: "
                             "their neighbour lists have no periodic images", "set atoms.pbc = False")
        if getattr(self.module.model, "charge_spin", False):
            try:
                state = checked_state("atoms.info", numbers, _given(self.atoms.info), SET_STATE)
            except RunError as exc:
                raise InputError(str(exc).removesuffix(f"; {SET_STATE}"), SET_STATE) from None
            charge, multiplicity = state["charge"], state["multiplicity"]
        else:  # the model reads every structure as it trained, a radical of generated MD among them
            charge, multiplicity = self.atoms.info.get("charge", 0), self.atoms.info.get("multiplicity", 1)
            if (charge, multiplicity) != (0, 1):
                raise InputError(f"charge {charge}, multiplicity {multiplicity} in atoms.info: this force field sees "
                                 "no charge or spin and would give the neutral singlet's energy",
                                 "use a SpookyNet cell trained with charge_spin: true")
            charge, multiplicity = 0, 1
        n = len(numbers)
        data = AtomsData(numbers, self.atoms.get_positions(), np.zeros((n, 3)), np.zeros(1), np.array([0, n]),
                         np.array([charge]), np.array([multiplicity]))
        dtype = next(self.module.model.parameters()).dtype
        batch = {key: value.to(self.device) for key, value in
                 ForceFieldDataset(data, self.cutoff, dtype).collate([0]).items()}
        energy, forces = self.module(batch)
        self.results = {"energy": float(energy[0].detach()), "forces": forces.detach().cpu().numpy().astype(np.float64)}


def _given(info: dict) -> dict:
    return {key: info[key] for key in ("charge", "multiplicity") if key in info}
