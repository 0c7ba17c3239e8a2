"""The settings a force-field family (SchNet, PaiNN, SpookyNet) cannot train with, one sentence each."""

from __future__ import annotations

from collections.abc import Iterator

from chemspec.specs.atoms_source import GenerateMD
from chemspec.specs.data import Data
from chemspec.specs.generation import Generation
from chemspec.specs.hpo import Hpo
from chemspec.specs.model import GNNModel
from chemspec.specs.training import Training


def force_field_problems(model: GNNModel, data: Data, training: Training, hpo: Hpo,
                         generation: Generation | None) -> Iterator[str]:
    """Problems of a force-field study's settings: language-model keys, schedules other than plateau, states
    the model cannot tell apart, and sampling."""
    family = repr(model.family)
    if isinstance(data.source, GenerateMD) and not model.charge_spin:
        by_state: dict[tuple[int, int], list[str]] = {}
        for name, state in data.source.states().items():
            by_state.setdefault(state, []).append(name)
        if len(by_state) > 1:
            listed = "; ".join(f"charge {q} multiplicity {m}: {', '.join(names[:3])}"
                               f"{f' and {len(names) - 3} more' if len(names) > 3 else ''}"
                               for (q, m), names in sorted(by_state.items()))
            yield (f"data.source.molecules: the molecules are of {len(by_state)} electronic states ({listed}), "
                   f"which look alike to model.family {family} without model.charge_spin; set model.family: "
                   "spookynet and model.charge_spin: true, or generate molecules of one charge and multiplicity")
    if training.activation_checkpointing:
        yield (f"training.activation_checkpointing: model.family {family} does not support it (language "
               "models only); set it to false")
    if training.bucket_batches is not None:
        yield (f"training.bucket_batches: model.family {family} batches whole structures without padding, so "
               "there is nothing to bucket; remove it")
    if training.packing:
        yield (f"training.packing: model.family {family} batches whole structures without padding, so there "
               "is nothing to pack; remove it")
    if training.compile is True:
        yield (f"training.compile: model.family {family} cannot be compiled (its force loss needs a double "
               "backward, which torch.compile does not support); set it to false, or to cuda-graphs")
    if training.compile == "cuda-graphs" and training.precision == "16-mixed":
        yield (f"training.precision: 16-mixed scales the loss outside the step that cuda-graphs records for "
               f"model.family {family}, so its gradients would go unscaled; use 32-true or bf16-mixed, or set "
               "training.compile to false")
    if training.precision == "bf16-true":
        yield ("training.precision: bf16-true casts the energy shift and energy targets of model.family "
               f"{family} to bf16, whose steps are 32 eV at a molecule's total of -4210 eV (ethanol's), which ruins the "
               "energies; use "
               "32-true, or bf16-mixed (bf16 matrix products, float32 energies)")
    if training.devices != 1:
        yield (f"training.devices: model.family {family} trains on one device, so {training.devices!r} would "
               "only make SLURM jobs ask for GPUs that stay idle; set devices to 1, or remove it")
    scheduler = training.scheduler
    if "name" in scheduler.model_fields_set and scheduler.name != "plateau":
        yield (f"training.scheduler.name: model.family {family} trains with the plateau schedule (the rate "
               "falls when the validation loss stalls); set name: plateau")
    for warmup in ("warmup_steps", "warmup_fraction"):
        if getattr(scheduler, warmup):
            yield (f"training.scheduler.{warmup}: model.family {family} trains with the plateau schedule, "
                   f"which has no warm-up; remove {warmup}")
    stopped = [rate for rate in hpo.grid.learning_rate if rate <= scheduler.min_lr]
    if stopped:
        yield (f"hpo.grid.learning_rate: {stopped} at or below training.scheduler.min_lr ({scheduler.min_lr}), "
               f"where the plateau schedule of model.family {family} stops training after the first epoch; "
               f"lower min_lr below {min(stopped)}, or drop those rates")
    if generation is not None:
        yield (f"generation: model.family {family} does not generate molecules; remove the generation section "
               "(only chemgpt studies sample)")
