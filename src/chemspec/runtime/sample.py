"""The sample stage: draw molecules from a trained ChemGPT cell and measure their quality.

The model is loaded the way a user would load it, with `from_pretrained` on the cell's model
directory (model and tokenizer side by side), so every trained cell is proven samplable. Samples
are seeded: the same cell and generation settings give the same molecules on the same device.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from chemspec.compiler.cells import ReferenceCell, SampleCell, identity
from chemspec.errors import RunError
from chemspec.runtime.io import atomic_dir, read_json, write_bytes, write_json
from chemspec.runtime.split import read_rows

SAMPLES_HEADER = ("text", "smiles", "terminated", "valid", "canonical")
"""samples.csv: each sample as the model wrote it, decoded to SMILES, whether it ended with [EOS], whether it is a
molecule the validity metric counts (1/0), and its canonical SMILES ('' where invalid)."""


def load_cell(model_dir: str | Path, device: str = "cpu"):
    """(model, tokenizer) of a trained cell, loaded with `transformers` alone; attention through SDPA."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    from chemspec.runtime.gptneo_sdpa import use_sdpa

    logging.disable_progress_bar()  # a bar per sample cell in dvc's log, for a load of a second
    model = use_sdpa(AutoModelForCausalLM.from_pretrained(model_dir)).to(device).eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


def to_smiles(text: str, representation: str) -> str:
    if representation == "smiles":
        return text
    import selfies

    try:
        return selfies.decoder(text) or ""
    except selfies.DecoderError:
        return ""


def sample(model, tokenizer, count: int, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           batch_size: int = 1000, seed: int = 0, representation: str = "selfies") -> tuple[list[dict], int]:
    """`count` molecules as rows {text, smiles, terminated}, and the number of tokens generated."""
    import torch

    device = next(model.parameters()).device
    torch.manual_seed(seed)
    rows, generated = [], 0
    special = set(tokenizer.all_special_ids)
    for start in range(0, count, batch_size):
        n = min(batch_size, count - start)
        prompt = torch.full((n, 1), tokenizer.bos_token_id, dtype=torch.long, device=device)
        with torch.no_grad():
            out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                                 temperature=temperature, top_k=top_k or None, top_p=top_p,
                                 max_length=model.config.max_position_embeddings,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        for ids in out[:, 1:].tolist():
            end = ids.index(tokenizer.eos_token_id) if tokenizer.eos_token_id in ids else len(ids)
            body = [i for i in ids[:end] if i not in special]
            generated += end + (end < len(ids))
            text = "".join(tokenizer.convert_ids_to_tokens(body))
            rows.append({"text": text, "smiles": to_smiles(text, representation), "terminated": end < len(ids)})
    return rows, generated


def _molecules(data_dir: Path) -> list[tuple[str, str]]:
    """(canonical SMILES, text the model reads) of every molecule of the data stage."""
    with open(data_dir / "molecules.csv", encoding="utf-8", newline="") as handle:
        return [(row[0], row[1]) for row in list(csv.reader(handle))[1:]]


def _device(accelerator: str) -> str:
    import torch

    return "cuda" if accelerator != "cpu" and torch.cuda.is_available() else "cpu"


def run_reference(cell: ReferenceCell) -> dict:
    """The test set's ChemNet statistics and properties, for every sample cell of the study, and FCD's floor
    measured on molecules of the data table outside the test set (validation, training or unused: any is
    a draw of the same distribution that no test molecule is in)."""
    from chemspec.runtime.generation import reference, with_floor

    table = _molecules(Path(cell.data_dir))
    indices = read_rows(cell.split_dir, ("test",), len(table))["test"].tolist()
    test, in_test = [table[i][0] for i in indices], set(indices)
    outside = [smiles for i, (smiles, _) in enumerate(table) if i not in in_test]
    device = _device(cell.accelerator)
    started = time.perf_counter()
    ref = with_floor(reference(test, device), outside, cell.fcd_molecules, cell.seed, device)
    result = {"cell": "reference", "identity": identity(cell), "molecules": ref.count,
              "fcd_floor": ref.floor_summary(), "device": device, "seconds": round(time.perf_counter() - started, 3)}
    with atomic_dir(Path(cell.out_dir)) as tmp:
        ref.save(tmp / "reference.npz")
        write_json(tmp / "reference.json", result)
    return result


def _skipped(cell: SampleCell, trained: dict) -> dict:
    result = {"cell": cell.name, "identity": identity(cell), "train_cell": trained["cell"],
              "status": "skipped", "reason": f"the training cell is {trained['status']}"}
    with atomic_dir(Path(cell.out_dir)) as tmp:
        write_bytes(tmp / "samples.csv", (",".join(SAMPLES_HEADER) + "\n").encode())
        write_json(tmp / "generation.json", result)
    return result


def run_sample(cell: SampleCell) -> dict:
    from chemspec.runtime.generation import Reference, evaluate, parse

    trained = read_json(Path(cell.train_dir) / "metrics.json", ("cell",))
    if trained.get("status", "ok") != "ok":
        return _skipped(cell, trained)
    device = _device(cell.accelerator)
    data, split = Path(cell.data_dir), Path(cell.split_dir)
    table = _molecules(data)
    train = f"train-{cell.data_size}"
    seen = {table[i] for i in read_rows(split, (train,), len(table))[train]}
    model, tokenizer = load_cell(Path(cell.train_dir) / "model", device)
    started = time.perf_counter()
    rows, tokens = sample(model, tokenizer, cell.samples, temperature=cell.temperature, top_k=cell.top_k,
                          top_p=cell.top_p, batch_size=cell.batch_size, seed=cell.seed,
                          representation=cell.representation)
    sampling_s = time.perf_counter() - started
    # A sample that repeats a training text is that training molecule, even where decoding and
    # canonicalising it would not give back the same SMILES string. One cut off at the length limit, without
    # [EOS], is no molecule the model finished (SELFIES would decode its prefix): invalid.
    by_text = {text: smiles for smiles, text in seen}
    smiles = [by_text.get(r["text"], r["smiles"]) if r["terminated"] else None for r in rows]
    ref = Reference.load(Path(cell.reference_dir) / "reference.npz")
    if ref.floor and ref.floor_molecules != cell.fcd_molecules:
        raise RunError(f"{cell.name}: {cell.reference_dir}/reference.npz measured FCD's floor at "
                       f"{ref.floor_molecules} molecules, not generation.fcd_molecules ({cell.fcd_molecules}); "
                       "run `dvc repro` so that the reference stage runs first")
    parsed = parse(smiles)
    metrics = evaluate(smiles, {s for s, _ in seen}, ref, fcd_molecules=cell.fcd_molecules, device=device,
                       seed=cell.seed, parsed=parsed)
    result = {"cell": cell.name, "identity": identity(cell), "train_cell": trained["cell"],
              "model": trained["model"], "params": trained["params"], "data_size": cell.data_size,
              "status": "ok", "settings": {k: getattr(cell, k) for k in
                                           ("samples", "temperature", "top_k", "top_p", "seed")},
              **metrics, "terminated": sum(r["terminated"] for r in rows) / len(rows),
              "sampling_s": round(sampling_s, 3), "tokens_per_s": round(tokens / max(sampling_s, 1e-9), 1),
              "device": device}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SAMPLES_HEADER)
    writer.writerows((r["text"], r["smiles"], int(r["terminated"]), int(p is not None), p[0] if p else "")
                     for r, p in zip(rows, parsed))
    with atomic_dir(Path(cell.out_dir)) as tmp:
        write_bytes(tmp / "samples.csv", out.getvalue().encode())
        write_json(tmp / "generation.json", result)
    return result
