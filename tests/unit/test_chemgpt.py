"""ChemGPT: the size ladder reaches the paper's scale; checkpointing changes memory, not maths; loader workers;
what weight decay touches."""

from __future__ import annotations

import pytest
import torch
from transformers import GPTNeoForCausalLM

from chemspec.runtime.chemgpt import ChemGPT, collate, gpt_neo_config, loader_workers, non_embedding_parameters
from chemspec.specs import load_study
from chemspec.specs.training import Optimizer, Scheduler
from tests.conftest import REPO

VOCAB = 110  # MOSES SELFIES symbols plus the four specials


def parameters(size: dict) -> int:
    with torch.device("meta"):
        return non_embedding_parameters(GPTNeoForCausalLM(gpt_neo_config(size, VOCAB)))


@pytest.mark.parametrize("hidden,published", [(128, 4.7e6), (256, 19e6), (2048, 1.2e9)])
def test_published_chemgpt_shapes_have_their_published_sizes(hidden, published):
    size = {"n_layer": 24, "n_embd": hidden, "n_head": 8, "max_length": 128}
    assert parameters(size) == pytest.approx(published, rel=0.03)


def test_the_paper_scale_study_spans_1e5_to_1e9_parameters():
    study = load_study(REPO / "specs" / "chemgpt-moses-paper.yaml")
    counts = sorted(parameters(size.model_dump()) for size in study.model.sizes.values())
    assert counts[0] < 2e5 and counts[-1] > 1e9
    assert study.data.sizes[-1] + study.data.validation + study.data.test <= 1_584_663


def _gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    config = gpt_neo_config({"n_layer": 3, "n_embd": 32, "n_head": 4, "max_length": 32}, 20)
    module = ChemGPT(config, 1e-3, Optimizer(), Scheduler(), total_steps=1, activation_checkpointing=checkpointing)
    module.train()
    rows = [(torch.tensor([1, 5, 6, 7, 2] + [0] * 5),), (torch.tensor([1, 8, 9, 10, 11, 12, 13, 2, 0, 0]),)]
    total, count = module.token_loss(collate(rows))
    (total / count).backward()
    return {name: p.grad.clone() for name, p in module.model.named_parameters()}


def test_activation_checkpointing_gives_the_same_gradients():
    plain, checkpointed = _gradients(False), _gradients(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("setting,cuda,workers", [(None, True, 2), (None, False, 0), (0, True, 0), (3, False, 3)])
def test_loader_workers_default_to_two_on_a_gpu_only(setting, cuda, workers):
    assert loader_workers(setting, cuda) == workers


def test_weight_decay_spares_biases_and_layernorm_gains():
    import lightning as L

    torch.manual_seed(0)
    config = gpt_neo_config({"n_layer": 2, "n_embd": 32, "n_head": 4, "max_length": 32}, 20)
    module = ChemGPT(config, 1e-3, Optimizer(weight_decay=0.1), Scheduler(), total_steps=1)
    rows = [(torch.tensor([1, 5, 6, 7, 2, 0]),), (torch.tensor([1, 8, 9, 10, 11, 2]),)]
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, torch.utils.data.DataLoader([collate(rows)], batch_size=None))
    names = {id(p): name.removeprefix("model.") for name, p in module.named_parameters()}
    decay = {group["weight_decay"]: {names[id(p)] for p in group["params"]}
             for group in trainer.optimizers[0].param_groups}
    assert decay.keys() == {0.1, 0.0} and decay[0.1] | decay[0.0] == set(names.values())
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.mlp.c_fc.weight",
            "transformer.h.1.attn.attention.q_proj.weight"} <= decay[0.1]
    assert all(name.endswith("bias") or ".ln_" in name for name in decay[0.0])
    assert {"transformer.h.0.ln_1.weight", "transformer.ln_f.weight", "transformer.h.0.mlp.c_fc.bias"} <= decay[0.0]


def test_a_checkpoint_with_the_single_parameter_group_of_older_versions_starts_the_cell_over(tmp_path, capsys):
    """Loading its optimiser state into two groups would fail inside Lightning; it is set aside instead."""
    from chemspec.runtime.chemgpt import PARAM_GROUPS
    from chemspec.runtime.resume import CHECKPOINT, EpochSampler, Resume

    folder = tmp_path / "resume"
    folder.mkdir()
    tag = {"identity": "ab" * 32, "hparams": {"learning_rate": 1e-3, "batch_size": 32}}
    torch.save({"callbacks": {"Resume": {"tag": tag, "batches": 3, "epoch": 0}}}, folder / CHECKPOINT)
    resume = Resume(folder, EpochSampler(10, 0), 32, 1, tag={**tag, "param_groups": PARAM_GROUPS})
    assert resume.resume_from() is None and not folder.exists()
    assert "was written for another configuration of this cell (other data or split, another number of devices, or " \
           "another chemspec version); training starts over" in capsys.readouterr().err


@pytest.mark.parametrize("damage", [b"", b"\x80\x02not a checkpoint", 40, -10],
                         ids=["empty", "not a checkpoint", "cut to 40 bytes", "cut 10 bytes short"])
def test_a_damaged_resume_checkpoint_is_named_and_set_aside_so_the_cell_starts_over(tmp_path, capsys, damage):
    from chemspec.runtime.resume import CHECKPOINT, EpochSampler, Resume

    folder = tmp_path / "resume"
    folder.mkdir()
    tag = {"identity": "ab" * 32, "hparams": {"learning_rate": 1e-3, "batch_size": 32}, "world_size": 1}
    if isinstance(damage, int):  # a checkpoint cut short by a crash
        torch.save({"callbacks": {"Resume": {"tag": tag, "batches": 3, "epoch": 0}},
                    "state_dict": {"weight": torch.zeros(1000)}}, folder / CHECKPOINT)
        (folder / CHECKPOINT).write_bytes((folder / CHECKPOINT).read_bytes()[:damage])
    else:
        (folder / CHECKPOINT).write_bytes(damage)
    resume = Resume(folder, EpochSampler(10, 0), 32, 1, tag=tag)
    assert resume.resume_from() is None and not folder.exists()
    assert (tmp_path / "resume.damaged" / CHECKPOINT).is_file()
    assert f"resume: {folder / CHECKPOINT} cannot be read (" in capsys.readouterr().err


def test_a_checkpoint_that_cannot_be_read_for_want_of_memory_or_a_file_system_is_kept(tmp_path, monkeypatch):
    from chemspec.errors import RunError
    from chemspec.runtime import resume as module

    folder = tmp_path / "resume"
    folder.mkdir()
    torch.save({"callbacks": {}}, folder / module.CHECKPOINT)
    resume = module.Resume(folder, module.EpochSampler(10, 0), 32, 1, tag={})
    for failure, words in ((RuntimeError("DefaultCPUAllocator: can't allocate memory"), "allocate memory"),
                           (OSError(116, "Stale file handle"), "Stale file handle")):
        def load(*args, **kwargs):
            raise failure
        monkeypatch.setattr(module.torch, "load", load)
        with pytest.raises(RunError, match=f"could not be (loaded|read) .*{words}.*; it is kept"):
            resume.resume_from()
        assert (folder / module.CHECKPOINT).is_file()
