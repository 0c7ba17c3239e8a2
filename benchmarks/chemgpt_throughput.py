"""ChemGPT training throughput on one card: Hugging Face's Trainer against chemspec's own path.

Every path trains the same GPT-Neo (chemspec's `gpt_neo_config`, same seed) on the same MOSES SELFIES
molecules with the same batch size, step count, AdamW learning rate (constant) and gradient clipping
(1.0), in bf16 on a GPU and fp32 on a CPU (smoke test). Paths, run in the order given by --paths:

  hf                 transformers.Trainer with its defaults (but the shared learning rate, no checkpoints,
                     a log every --loss-window steps): DataCollatorForLanguageModeling(mlm=False)
                     padding to the longest row of each batch, and GPT-Neo's eager attention
  hf_compile         the same with torch_compile=True
  hf_fp32_scores     the Trainer with GPT-Neo's attention scores in float32, as its eager attention's
                     comment intends: under bf16 autocast its matmul of float32 query and key runs in
                     bf16 anyway, so the unscaled scores are rounded to bf16 before the softmax (a
                     diagnostic of the peer's loss, not a speed path)
  chemspec           chemspec's ChemGPT LightningModule and `loader` as `chemspec run` trains them
                     (SDPA attention, fused tanh-GELU, no mask or KV cache in training)
  chemspec_compile   the same with training.compile (torch.compile on the GPT-Neo model)
  chemspec_bucketed  chemspec (and chemspec_bucketed_compile: chemspec_compile) with batches from
                     training.bucket_batches (length-sorted within chunks) instead of `loader`'s shuffle
  chemspec_packed    chemspec with training.packing (each batch's molecules packed into rows of
                     --pack-length positions); chemspec_packed_compile adds training.compile: true,
                     chemspec_packed_cudagraphs training.compile: cuda-graphs;
                     chemspec_packed_cudagraphs_efficient: the same, but masked attention through
                     SDPA's memory-efficient kernel (its own first choice) instead of cuDNN's;
                     chemspec_packed_cudagraphs_dense: the same, but attention through SDPA with the dense
                     same-molecule mask (cuDNN first) instead of runtime.molecule_attention's kernel (the
                     packed path of run 14 and before);
                     chemspec_packed_cudagraphs_autotune: the same with inductor's max_autotune (what
                     torch.compile's mode="max-autotune" adds: Triton matmul templates timed against
                     cuBLAS, with the element-wise work that follows fused into them where that wins);
                     chemspec_packed_cudagraphs_bf16true: the same with Lightning's bf16-true precision
                     (weights, gradients and AdamW's moments in bf16, no float32 master copy: half the
                     element-wise and optimiser traffic, and the coarser updates that come with it)

Useful tokens are the non-padding tokens of the batches trained between the end of step --warmup and
the last step, counted as each batch is collated (the Trainer) or trained (chemspec, whose loader may
collate in --loader-workers processes); tokens/s divides them by the wall time between
those two step ends (CUDA synchronised at both). MFU = (6N + 12·L·T·d) · tokens/s over the H100's
dense bf16 peak of 989 TFLOP/s and over the bf16 matmul rate measured here, with N the
non-embedding parameters and T the mean useful length of a molecule. `final_loss` is the mean
training loss of the last --loss-window steps (Trainer's logged value and the module's own losses).
`val_loss` is the per-token loss of the trained weights on the --held-out molecules that follow the
training ones in the file, judged alike for every path: the weights loaded into an uncompiled copy of
chemspec's model and evaluated in float32 by chemspec's `evaluate`.

On the GPU machine (no molsets there: carry a copy of its train.csv.gz; the hf paths need
accelerate, which the device image has):
  source benchmarks/device_setup.sh
  python3 benchmarks/chemgpt_throughput.py --smiles .bench/moses_train.csv.gz --sizes 200m:16x1024x16
"""
from __future__ import annotations

import argparse, csv, gc, gzip, json, logging, os, platform, sys, tempfile, time, warnings
from contextlib import nullcontext
from importlib.metadata import version
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from gptneo_fp32_scores import fp32_scores

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
warnings.filterwarnings("ignore", message=r".*(does not have many workers|max_epochs|val_dataloader).*")
PATHS = ("hf", "hf_compile", "hf_fp32_scores", "chemspec", "chemspec_bucketed", "chemspec_compile", "chemspec_bucketed_compile",
         "chemspec_packed", "chemspec_packed_compile", "chemspec_packed_cudagraphs",
         "chemspec_packed_cudagraphs_efficient", "chemspec_packed_cudagraphs_dense", "chemspec_packed_cudagraphs_autotune",
         "chemspec_packed_cudagraphs_bf16true")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--smiles", help="MOSES train.csv.gz (default: the one in the molsets wheel)")
    a("--molecules", type=int, default=200_000, help="first N SMILES of the file (%(default)s)")
    a("--held-out", type=int, default=2000, help="the next N SMILES, for val_loss (%(default)s)")
    a("--sizes", default="20m:24x256x8,200m:16x1024x16", help="name:layers x hidden x heads, comma list")
    a("--max-length", type=int, default=128, help="positions; longer molecules are dropped (%(default)s)")
    a("--batch", type=int, default=256, help="molecules per step (%(default)s)")
    a("--steps", type=int, default=300, help="optimiser steps of every path (%(default)s)")
    a("--warmup", type=int, default=50, help="steps left out of the timing (%(default)s)")
    a("--loss-window", type=int, default=10, help="steps averaged into final_loss (%(default)s)")
    a("--lr", type=float, default=5e-4, help="AdamW learning rate of every path (%(default)s)")
    a("--pack-length", type=int, default=256, help="positions of a packed row (%(default)s)")
    a("--activation-checkpointing", action="store_true", help="chemspec paths recompute activations in backward")
    a("--bucket-chunk", type=int, default=100, help="batches sorted together (training.bucket_batches)")
    a("--paths", default="hf,chemspec,chemspec_compile", help="comma list")
    a("--save", help="save the first size's last chemspec model here (save_pretrained, with its tokenizer)")
    a("--workers", type=int, default=16, help="processes encoding SELFIES (%(default)s)")
    a("--loader-workers", type=int, default=None,
      help="data-loader processes of the chemspec paths (default: chemspec's, 2 on a GPU and 0 on a CPU)")
    a("--seed", type=int, default=0)
    a("--out", default=str(Path(os.environ.get("OUT", ".bench")) / "chemgpt_throughput.json"))
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error(f"--workers {args.workers}: at least 1 process encodes the SELFIES")
    args.paths = [x.strip() for x in args.paths.split(",") if x.strip()]
    if bad := set(args.paths) - set(PATHS):
        p.error(f"unknown paths {sorted(bad)}; choose from {', '.join(PATHS)}")
    args.loss_window = min(args.loss_window, args.steps)
    if not 0 < args.warmup < args.steps or args.steps % args.loss_window:
        p.error("need 0 < --warmup < --steps, and --steps a multiple of --loss-window")
    args.sizes = {name: [int(x) for x in shape.split("x")]
                  for name, shape in (item.split(":") for item in args.sizes.split(","))}
    return args


def encode(smiles: str) -> list[str] | None:
    import selfies
    from chemspec.runtime.molecules import symbols

    try:
        return symbols(selfies.encoder(smiles), "selfies")
    except selfies.EncoderError:
        return None


def moses_tokens(path: Path, count: int, held_out: int, max_length: int,
                 workers: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Rows of [BOS] symbols [EOS] [PAD]… for the first `count` SMILES and for the `held_out` after
    them, and the vocabulary of both."""
    from chemspec.runtime.molecules import BOS, EOS, PAD, SPECIALS

    with gzip.open(path, "rt", newline="") as handle:
        rows = csv.reader(handle)
        next(rows)
        smiles = [row[0] for _, row in zip(range(count + held_out), rows)]
    with Pool(workers) as pool:
        encoded = pool.map(encode, smiles, chunksize=500)
    kept = [(i < count, s) for i, s in enumerate(encoded) if s and len(s) + 2 <= max_length]
    vocab = SPECIALS + sorted({t for _, s in kept for t in s})
    index = {t: i for i, t in enumerate(vocab)}
    tokens = np.full((len(kept), max(len(s) for _, s in kept) + 2), PAD, dtype=np.int16)
    for row, (_, s) in enumerate(kept):
        tokens[row, : len(s) + 2] = [BOS, *map(index.__getitem__, s), EOS]
    train = np.array([first for first, _ in kept])
    return tokens[train], tokens[~train], vocab


def held_out_loss(args, config, model, held: np.ndarray) -> float:
    """The per-token loss of `model`'s weights on `held`, judged the same way for every path."""
    from chemspec.runtime.chemgpt import ChemGPT, evaluate, loader
    from chemspec.specs.training import Optimizer, Scheduler

    judge = ChemGPT(config, args.lr, Optimizer(), Scheduler(), total_steps=1)
    judge.model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in model.state_dict().items()})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return evaluate(judge, loader(held, np.arange(len(held)), args.batch, shuffle=False, seed=0), device)


class Counted:
    """Each batch's useful and total token counts, in order: as a collate function around `collate`
    (the Trainer's), or through `record` from a callback (loader workers collate in other processes).
    Counts stay tensors (on the GPU: no sync) until the summary."""

    def __init__(self, collate=None):
        self.collate, self.useful, self.total = collate, [], []

    def __call__(self, rows):
        return self.record(self.collate(rows))

    def record(self, batch: dict) -> dict:
        self.useful.append(batch["attention_mask"].sum())
        self.total.append(batch["attention_mask"].numel())
        return batch


class Clock:
    """Wall time at the ends of step `warmup` and of the last step."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps, self.marks = warmup, steps, {}

    def tick(self, step: int) -> None:
        if step in (self.warmup, self.steps):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.marks[step] = time.perf_counter()

    def summary(self, counted: Counted, final_loss: float) -> dict:
        seconds = self.marks[self.steps] - self.marks[self.warmup]
        useful = int(sum(counted.useful[self.warmup: self.steps]))
        total = sum(counted.total[self.warmup: self.steps])
        cuda = torch.cuda.is_available()
        return {"tokens_per_s": useful / seconds, "padding_share": 1 - useful / total,
                "steps_per_s": (self.steps - self.warmup) / seconds, "timed_s": seconds, "final_loss": final_loss,
                "peak_mem_MB": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}


def run_hf(args, config, tokens, tokenizer_dir, compiled: bool) -> tuple[dict, object]:
    from transformers import (AutoTokenizer, DataCollatorForLanguageModeling, GPTNeoForCausalLM, Trainer,
                              TrainerCallback, TrainingArguments)

    from chemspec.runtime.molecules import PAD

    clock, cuda = Clock(args.warmup, args.steps), torch.cuda.is_available()

    class Tick(TrainerCallback):
        def on_step_end(self, _args, state, control, **kwargs):
            clock.tick(state.global_step)

    counted = Counted(DataCollatorForLanguageModeling(AutoTokenizer.from_pretrained(tokenizer_dir), mlm=False))
    rows = [{"input_ids": row[row != PAD].tolist()} for row in tokens]
    torch.manual_seed(args.seed)
    model = GPTNeoForCausalLM(config)
    with tempfile.TemporaryDirectory() as out:
        settings = TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch, max_steps=args.steps, learning_rate=args.lr,
            lr_scheduler_type="constant", bf16=cuda, use_cpu=not cuda, torch_compile=compiled, report_to="none",
            save_strategy="no", logging_steps=args.loss_window, disable_tqdm=True, seed=args.seed)
        trainer = Trainer(model=model, args=settings, train_dataset=rows, data_collator=counted, callbacks=[Tick()])
        trainer.train()
    return clock.summary(counted, [e["loss"] for e in trainer.state.log_history if "loss" in e][-1]), model


def run_chemspec(args, config, tokens, bucketed: bool, compiled: bool | str, packed: bool,
                 precision: str) -> tuple[dict, object]:
    import lightning as L

    from chemspec.runtime.chemgpt import ChemGPT, loader
    from chemspec.specs.training import Optimizer, Scheduler

    clock, cuda, counted = Clock(args.warmup, args.steps), torch.cuda.is_available(), Counted()

    class Tick(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            counted.record(batch)
            clock.tick(trainer.global_step)

    torch.manual_seed(args.seed)
    module = ChemGPT(config, args.lr, Optimizer(), Scheduler(), total_steps=args.steps, compile=compiled,
                     activation_checkpointing=args.activation_checkpointing)
    batches = loader(tokens, np.arange(len(tokens)), args.batch, shuffle=True, seed=args.seed,
                     bucket_batches=args.bucket_chunk if bucketed else None,
                     pack_length=args.pack_length if packed else None, pin_memory=cuda,
                     workers=args.loader_workers)
    trainer = L.Trainer(
        max_steps=args.steps, accelerator="gpu" if cuda else "cpu", devices=1,
        precision=precision, logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0, gradient_clip_val=1.0,
        callbacks=[Tick()])
    trainer.fit(module, batches)
    losses = [v for epoch in module.step_losses for v in epoch]
    return clock.summary(counted, float(np.mean(losses[-args.loss_window:]))), module.model


def run(path: str, args, config, tokens, tokenizer_dir) -> tuple[dict, object]:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    if path.startswith("hf"):
        with fp32_scores() if path == "hf_fp32_scores" else nullcontext():
            return run_hf(args, config, tokens, tokenizer_dir, compiled="compile" in path)
    from torch._inductor import config as inductor
    from torch.nn.attention import SDPBackend

    from chemspec.runtime import chemgpt, molecule_attention

    compiled = "cuda-graphs" if "cudagraphs" in path else "compile" in path
    torch._dynamo.reset()  # else a second model of the same shape reuses the first's graph and its kernels
    kernels, autotune, supported = chemgpt.MASKED_KERNELS, inductor.max_autotune, molecule_attention.supported
    if path.endswith("_efficient"):
        chemgpt.MASKED_KERNELS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    if path.endswith(("_efficient", "_dense")):
        molecule_attention.supported = lambda *args: False
    inductor.max_autotune = path.endswith("_autotune")
    try:
        precision = "bf16-true" if path.endswith("_bf16true") else "bf16-mixed" if torch.cuda.is_available() \
            else "32-true"
        return run_chemspec(args, config, tokens, bucketed="bucketed" in path, compiled=compiled,
                            packed="packed" in path, precision=precision)
    finally:
        chemgpt.MASKED_KERNELS, inductor.max_autotune, molecule_attention.supported = kernels, autotune, supported


def write(result: dict, out: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1) + "\n")


def main(argv=None):
    args = parse(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    from transformers import AutoTokenizer, GPTNeoForCausalLM
    from transformers.utils import logging as hf_logging

    from chemspec.runtime.chemgpt import gpt_neo_config, loader_workers, non_embedding_parameters
    from chemspec.runtime.molecules import PAD, moses_path, save_tokenizer
    from chemspec.runtime.throughput import DATASHEET_BF16_FLOPS, flops_per_token, matmul_peak

    hf_logging.set_verbosity_error()
    args.loader_workers = loader_workers(args.loader_workers, torch.cuda.is_available())
    tokens, held, vocab = moses_tokens(Path(args.smiles or moses_path()), args.molecules, args.held_out,
                                       args.max_length, args.workers)
    mean_length = float((tokens != PAD).sum(1).mean())
    peak = matmul_peak(torch.device("cuda")) if torch.cuda.is_available() else None
    result = {"card": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.machine()})",
              "python": platform.python_version(), "torch": torch.__version__,
              **{name: version(name) for name in ("transformers", "lightning", "selfies")},
              "command": " ".join(sys.argv), "settings": vars(args),
              "molecules": len(tokens), "held_out": len(held), "vocab": len(vocab), "mean_useful_length": mean_length,
              "matmul_bf16_tflops": peak / 1e12 if peak else None, "sizes": {}}
    print(f"{result['card']}: {len(tokens)} molecules, mean length {mean_length:.1f} tokens", flush=True)
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        save_tokenizer(vocab, "selfies", Path(tokenizer_dir))
        for name, (layers, hidden, heads) in args.sizes.items():
            config = gpt_neo_config({"max_length": args.max_length, "n_layer": layers, "n_embd": hidden,
                                     "n_head": heads}, len(vocab))
            with torch.device("meta"):
                n = non_embedding_parameters(GPTNeoForCausalLM(config))
            flops = flops_per_token(n, layers, hidden, mean_length)
            entry = result["sizes"][name] = {"N": n, "L": layers, "d": hidden, "heads": heads, "T": mean_length,
                                             "flops_per_token": flops, "paths": {}, "ratios": {}}
            for path in args.paths:
                r, model = run(path, args, config, tokens, tokenizer_dir)
                r["val_loss"] = held_out_loss(args, config, model, held)
                entry["paths"][path] = r
                if args.save and path.startswith("chemspec") and name == next(iter(args.sizes)):
                    model.save_pretrained(args.save)
                    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(args.save)
                del model
                r["mfu_989"] = flops * r["tokens_per_s"] / DATASHEET_BF16_FLOPS["NVIDIA H100 80GB HBM3"]
                r["mfu_measured_peak"] = flops * r["tokens_per_s"] / peak if peak else None
                gc.collect()
                torch.cuda.empty_cache()
                print(f"{name} {path}: {r['tokens_per_s']:,.0f} useful tokens/s, padding {r['padding_share']:.0%}, "
                      f"MFU {r['mfu_989']:.1%} of 989 TFLOP/s, loss {r['final_loss']:.3f}, "
                      f"held-out loss {r['val_loss']:.3f}, "
                      f"peak {r['peak_mem_MB'] or 0:,.0f} MB", flush=True)
                if "hf" in entry["paths"]:
                    hf = entry["paths"]["hf"]
                    entry["ratios"] = {f"{p}/hf": v["tokens_per_s"] / hf["tokens_per_s"]
                                       for p, v in entry["paths"].items() if p != "hf"}
                write(result, args.out)
            print(f"{name} ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in entry["ratios"].items()), flush=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
