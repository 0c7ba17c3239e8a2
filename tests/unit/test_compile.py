"""The compiler: deterministic files, readable stage names, quoted commands, identities, real DVC accepts it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from chemspec.compiler import compile_study, expand, identity
from chemspec.errors import SpecError
from chemspec.specs import load_study
from tests.conftest import QUICKSTART, tiny_study, write_spec


def test_same_spec_gives_byte_identical_files():
    study = load_study(QUICKSTART)
    assert compile_study(study, "specs/quickstart.yaml") == compile_study(load_study(QUICKSTART),
                                                                         "specs/quickstart.yaml")


def test_recompiling_leaves_files_untouched_and_check_catches_drift(cli, tmp_path):
    spec = write_spec(tmp_path / "study.yaml", tiny_study())
    assert cli("compile", str(spec), cwd=tmp_path).code == 0
    first = (tmp_path / "dvc.yaml").read_bytes(), (tmp_path / "params.yaml").read_bytes()
    again = cli("compile", str(spec))
    assert again.code == 0 and "already up to date" in again.out
    assert ((tmp_path / "dvc.yaml").read_bytes(), (tmp_path / "params.yaml").read_bytes()) == first
    assert cli("compile", "--check", str(spec)).code == 0
    write_spec(spec, tiny_study(**{"training.max_epochs": 3}))
    stale = cli("compile", "--check", str(spec))
    assert stale.code == 1 and "stale: dvc.yaml, params.yaml" in stale.err
    assert (tmp_path / "params.yaml").read_bytes() == first[1]
    (tmp_path / "dvc.yaml").unlink()
    gone = cli("compile", "--check", str(spec))
    assert gone.code == 1 and "missing: dvc.yaml; stale: params.yaml; run `chemspec compile" in gone.err, gone.err


def test_compile_into_a_root_whose_parent_is_not_there_refuses_and_creates_nothing(cli, tmp_path):
    spec = write_spec(tmp_path / "study.yaml", tiny_study())
    for flags in ((), ("--check",)):
        result = cli("compile", str(spec), "--root", "new/project", *flags, cwd=tmp_path)
        assert result.code == 2, result.err
        assert "--root new/project is not a folder, nor one that can be made in an existing folder; create the " \
               "project there first (`mkdir -p new/project" in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


def test_stage_names_are_readable_and_cover_the_grid():
    pipeline = yaml.safe_load(compile_study(load_study(QUICKSTART), "q.yaml")["dvc.yaml"])["stages"]
    assert list(pipeline) == ["data", "split", "tpe", "select", "reference", "train", "sample", "fit",
                              "archive"]
    assert sorted(pipeline["train"]["foreach"]) == sorted(
        f"{m}-{n}" for m in ("xs", "s", "m") for n in (1000, 3000, 10000))
    assert sorted(pipeline["tpe"]["foreach"]) == ["lr1e-3-bs64", "lr3e-3-bs64"]


def test_every_command_is_chemspec_run_with_safe_words():
    pipeline = yaml.safe_load(compile_study(load_study(QUICKSTART), "q.yaml")["dvc.yaml"])["stages"]
    for stage in pipeline.values():
        cmd = stage.get("do", stage)["cmd"]
        assert cmd.startswith("chemspec run ")
        assert not set(cmd) & set(";&|`<>\"'\n"), cmd


def test_keep_two_gives_a_train_cell_per_rank():
    study = load_study(QUICKSTART).model_copy(deep=True)
    hpo = study.hpo.model_copy(update={"tpe": study.hpo.tpe.model_copy(update={"keep": 2})})
    cells = expand(study.model_copy(update={"hpo": hpo}))
    assert "xs-1000-r2" in cells.train and cells.train["xs-1000-r2"].rank == 2


def _cell(study_dict: dict, tmp_path, key: str = "xs-400"):
    return expand(load_study(write_spec(tmp_path / "s.yaml", study_dict))).train[key]


@pytest.mark.parametrize("change,moves", [
    ({"training.num_workers": 4}, False),
    ({"study": "renamed"}, False),
    ({"fit.confidence": 0.9}, False),
    ({"training.max_epochs": 3}, True),
    ({"seed": 1}, True),
    ({"training.precision": "bf16-mixed"}, True),
])
def test_identity_moves_only_with_fields_that_change_results(tmp_path, change, moves):
    base = identity(_cell(tiny_study(), tmp_path))
    assert (identity(_cell(tiny_study(**change), tmp_path)) != base) is moves


def test_cells_keep_the_identities_they_had_when_training_held_learning_rate_and_batch_size(tmp_path):
    cells = expand(load_study(write_spec(tmp_path / "s.yaml", tiny_study())))
    assert "batch_size" not in cells.train["xs-400"].training.model_dump()
    assert identity(cells.train["xs-400"]) == "db1a4f97fc237e2d33f33659287788c2be7f341084794c90af0a338770a489aa"
    assert identity(cells.tpe["lr3e-3-bs32"]) == "11fdb979d0d401c35a347528ae275c6edf8b9c6522b6388789f4f1287a5c2f09"


@pytest.mark.parametrize("weight_decay,moves", [(0.01, True), (0.0, False)])
def test_chemgpts_weight_decay_rule_is_in_the_identity_so_cells_decayed_before_it_retrain(tmp_path, monkeypatch,
                                                                                         weight_decay, moves):
    from chemspec.compiler import cells

    cell = _cell(tiny_study(**{"training.optimizer": {"weight_decay": weight_decay}}), tmp_path)
    with_rule = identity(cell)
    monkeypatch.setattr(cells, "DECAYED", {})
    assert (identity(cell) != with_rule) is moves


def _atoms_file_cell(tmp_path, **source):
    (tmp_path / "traj.npz").touch()
    study = tiny_study(**{"data.kind": "atoms", "data.source": {"file": "traj.npz", **source},
                          "model": {"family": "painn", "widths": [8], "depths": [1]}, "hpo.tpe.model_size": "w8d1"})
    return expand(load_study(write_spec(tmp_path / "s.yaml", study))).data


@pytest.mark.parametrize("format,energy", [("md17", "kcal/mol"), ("rmd17", "kcal/mol"), ("ani1x", "Hartree"),
                                           ("extxyz", "eV"), ("asedb", "eV")])
def test_a_data_file_without_units_has_its_formats_units_in_params_and_identity(tmp_path, format, energy):
    cell = _atoms_file_cell(tmp_path, format=format)
    assert cell.source["units"] == {"energy": energy, "length": "Angstrom"}
    written = _atoms_file_cell(tmp_path, format=format, units={"energy": energy, "length": "Angstrom"})
    assert identity(written) == identity(cell)


def test_units_written_in_the_study_win_and_the_rest_come_from_the_format(tmp_path):
    assert _atoms_file_cell(tmp_path, format="md17", units={"length": "bohr"}).source["units"] == \
        {"energy": "kcal/mol", "length": "bohr"}
    in_ev = _atoms_file_cell(tmp_path, format="md17", units={"energy": "eV"})
    assert in_ev.source["units"] == {"energy": "eV", "length": "Angstrom"}
    assert identity(in_ev) != identity(_atoms_file_cell(tmp_path, format="md17"))


def test_an_ani1x_energy_key_brings_its_levels_forces_into_params_and_identity(tmp_path):
    default = _atoms_file_cell(tmp_path, format="ani1x")
    assert (default.source["energy_key"], default.source["forces_key"]) == ("energy", "forces")
    tz = _atoms_file_cell(tmp_path, format="ani1x", energy_key="wb97x_tz.energy")
    assert tz.source["forces_key"] == "wb97x_tz.forces"
    mixed = _atoms_file_cell(tmp_path, format="ani1x", energy_key="ccsd(t)_cbs.energy", forces_key="wb97x_dz.forces")
    assert mixed.source["forces_key"] == "wb97x_dz.forces"
    assert _atoms_file_cell(tmp_path, format="extxyz", energy_key="REF_energy").source["forces_key"] == "forces"


def test_units_given_as_a_model_are_filled_in_like_a_mapping(tmp_path):
    from chemspec.specs.data import AtomsFileSource, Units

    source = AtomsFileSource(file=str(tmp_path / "traj.npz"), format="md17", units=Units(length="bohr"))
    assert source.units == Units(energy="kcal/mol", length="bohr")


def test_max_molecules_records_that_it_draws_a_seeded_sample_so_the_data_identity_moved(tmp_path):
    cell = expand(load_study(write_spec(tmp_path / "s.yaml", tiny_study()))).data
    assert cell.source["sample"] == "seeded"
    head = cell.model_copy(update={"source": {k: v for k, v in cell.source.items() if k != "sample"}})
    assert identity(head) != identity(cell)
    everything = tiny_study(**{"data.source": {"package": "moses"}})
    assert "sample" not in expand(load_study(write_spec(tmp_path / "s.yaml", everything))).data.source


def test_generated_data_identity_follows_the_molecules_smiles_not_their_names(tmp_path, monkeypatch):
    from chemspec.specs import data

    study = tiny_study(**{"data.kind": "atoms", "data.source": {"generate": "md", "molecules": ["malonaldehyde", "CCO"],
                                                                "frames": 2000},
                          "model": {"family": "painn", "widths": [8], "depths": [1]}, "hpo.tpe.model_size": "w8d1"})
    spec = write_spec(tmp_path / "s.yaml", study)
    cell = expand(load_study(spec)).data
    assert cell.source["smiles"] == ["O=C/C=C\\O", "CCO"]
    monkeypatch.setitem(data.MOLECULES, "malonaldehyde", "O=CCC=O")
    assert identity(expand(load_study(spec)).data) != identity(cell)


def test_identity_of_other_sizes_is_unchanged_by_editing_one(tmp_path):
    before = expand(load_study(write_spec(tmp_path / "a.yaml", tiny_study()))).train
    edited = tiny_study()
    edited["model"]["sizes"]["s"]["n_embd"] = 24
    after = expand(load_study(write_spec(tmp_path / "b.yaml", edited))).train
    changed = {k for k in before if identity(before[k]) != identity(after[k])}
    assert changed == {"s-200", "s-400", "s-800"}


def test_real_dvc_accepts_the_compiled_pipeline(cli, tmp_path, git_env):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True)
    spec = write_spec(tmp_path / "study.yaml", tiny_study())
    assert cli("compile", str(spec), cwd=tmp_path).code == 0
    dag = subprocess.run(["dvc", "dag", "--dot"], cwd=tmp_path, capture_output=True, text=True)
    assert dag.returncode == 0, dag.stderr
    assert '"train@m-800"' in dag.stdout and '"tpe@lr3e-3-bs32"' in dag.stdout
    status = subprocess.run(["dvc", "status"], cwd=tmp_path, capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert "train@xs-200" in status.stdout


def test_a_root_inside_a_dvc_project_gets_the_remote_not_a_note_to_run_dvc_init(cli, tmp_path, git_env):
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=project, check=True)
    spec = write_spec(project / "study.yaml", tiny_study())
    result = cli("compile", str(spec), "--root", "other", cwd=project)
    assert result.code == 0 and "not a DVC project" not in result.err + result.out
    assert "DVC remote default -> " in result.err + result.out
    assert subprocess.run(["dvc", "status"], cwd=project / "other", capture_output=True).returncode == 0
    outside = cli("compile", str(spec), "--root", str(tmp_path / "elsewhere"), cwd=project)
    assert "elsewhere is not a DVC project yet: run `git init && dvc init` there" in outside.err + outside.out
    (project / "nested").mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project / "nested", check=True)
    nested = cli("compile", str(spec), "--root", "nested", cwd=project)
    assert "nested is not a DVC project yet" in nested.err + nested.out, "a nested git repository is its own project"


def test_compile_keeps_a_default_remote_the_user_chose_and_says_where_push_goes(cli, tmp_path, git_env):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["dvc", "remote", "add", "-d", "mine", str(tmp_path / "mine")], cwd=tmp_path, check=True)
    spec = write_spec(tmp_path / "study.yaml", tiny_study())
    result = cli("compile", str(spec), cwd=tmp_path)
    assert "`dvc push` goes to 'mine', this project's default: push with `dvc push -r default`" in result.err
    default = subprocess.run(["dvc", "remote", "default"], cwd=tmp_path, capture_output=True, text=True)
    assert default.stdout.strip() == "mine"


def test_data_file_paths_are_made_relative_to_the_project(cli, tmp_path):
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "mols.txt").write_text("CCO\nc1ccccc1\nCC(=O)O\n")
    study = tiny_study()
    study["data"]["source"] = {"file": "mols.txt"}
    study["data"].update(sizes=[1], validation=1, test=1)
    study["hpo"]["tpe"]["data_size"] = 1
    spec = write_spec(tmp_path / "studies" / "s.yaml", study)
    assert cli("compile", str(spec), cwd=tmp_path).code == 0
    pipeline = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    assert pipeline["stages"]["data"]["deps"] == ["studies/mols.txt"]


def _file_study(tmp_path: Path, file: str) -> dict:
    study = tiny_study()
    study["data"]["source"] = {"file": file}
    study["data"].update(sizes=[1], validation=1, test=1)
    study["hpo"]["tpe"]["data_size"] = 1
    return study


def test_a_linked_data_file_is_named_as_the_study_names_it_not_by_its_target(cli, tmp_path):
    (tmp_path / "raw${x}.txt").write_text("CCO\nc1ccccc1\nCC(=O)O\n")
    (tmp_path / "mols.txt").symlink_to("raw${x}.txt")
    spec = write_spec(tmp_path / "s.yaml", _file_study(tmp_path, "mols.txt"))
    assert cli("compile", str(spec), cwd=tmp_path).code == 0
    pipeline = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    assert pipeline["stages"]["data"]["deps"] == ["mols.txt"]
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["cells"]["data"]["source"]["file"] == "mols.txt"


def test_a_data_file_in_a_folder_whose_path_dvc_would_expand_is_refused_before_writing(cli, tmp_path):
    folder = tmp_path / "runs$HOME"
    folder.mkdir()
    (folder / "mols.txt").write_text("CCO\nc1ccccc1\nCC(=O)O\n")
    spec = write_spec(folder / "s.yaml", _file_study(tmp_path, "mols.txt"))
    result = cli("compile", str(spec), "--root", str(tmp_path / "out"), cwd=tmp_path)
    assert result.code == 1 and "Traceback" not in result.err
    assert f"data.source.file 'mols.txt' would stand in dvc.yaml as '{folder}/mols.txt', which contains '$'" \
           in result.err and "nothing was written" in result.err, result.err
    assert not (tmp_path / "out").exists()


def test_a_study_file_whose_name_holds_a_line_break_compiles_to_files_that_parse(cli, tmp_path):
    spec = write_spec(tmp_path / "two\nlines.yaml", tiny_study())
    result = cli("compile", str(spec), "--root", "out", cwd=tmp_path)
    assert result.code == 0, result.err
    for name in ("dvc.yaml", "params.yaml"):
        text = (tmp_path / "out" / name).read_text()
        assert text.startswith(f"# Generated by `chemspec compile {str(spec)!r}`; edit the spec, not this file.\n")
        assert "stages" in yaml.safe_load(text) or "cells" in yaml.safe_load(text)


def test_per_model_size_scope_gives_tpe_cells_per_size(tmp_path):
    study = tiny_study(**{"hpo.tpe.scope": "model_size"})
    del study["hpo"]["tpe"]["model_size"]
    cells = expand(load_study(write_spec(tmp_path / "s.yaml", study)))
    assert sorted(cells.tpe) == sorted(f"{m}-lr{lr}-bs32" for m in ("xs", "s", "m") for lr in ("3e-3", "1e-2"))
    assert cells.select.groups["s"] == ["s-lr3e-3-bs32", "s-lr1e-2-bs32"]
    assert cells.train["m-800"].group == "m" and cells.tpe["m-lr1e-2-bs32"].size_name == "m"


def test_calibration_adds_full_runs_of_every_configuration(tmp_path):
    cells = expand(load_study(write_spec(tmp_path / "s.yaml", tiny_study(**{"hpo.tpe.calibrate": True}))))
    assert sorted(cells.calibrate) == sorted(cells.tpe)
    assert all(c.epochs == 2 and c.window == 1.0 and c.hparams for c in cells.calibrate.values())
    assert all(c.epochs == 2 and c.window == 0.5 for c in cells.tpe.values())
    pipeline = yaml.safe_load(compile_study(load_study(tmp_path / "s.yaml"), "s.yaml")["dvc.yaml"])["stages"]
    assert "calibrate" in pipeline and "calibration" in pipeline


def test_replicate_seeds_add_train_cells_with_other_seeds(tmp_path):
    study = tiny_study(**{"fit.replicate_seeds": 2, "fit.replicate_cells": ["xs-400"]})
    cells = expand(load_study(write_spec(tmp_path / "s.yaml", study)))
    assert cells.train["xs-400-seed1"].seed == 1 and cells.train["xs-400-seed2"].seed == 2
    assert "xs-400-seed2" in cells.fit.metrics
    with pytest.raises(SpecError, match="fit.replicate_cells: \\['xx-1'\\] are not cells"):
        load_study(write_spec(tmp_path / "b.yaml", tiny_study(**{"fit.replicate_seeds": 1,
                                                                  "fit.replicate_cells": ["xx-1"]})))


def test_the_committed_quickstart_pipeline_is_up_to_date(cli):
    result = cli("compile", "--check", str(QUICKSTART), "--root", str(QUICKSTART.parents[1]))
    assert result.code == 0, result.err


def test_generation_adds_a_sample_stage_per_train_cell(tmp_path):
    study = tiny_study(generation={"samples": 10})
    cells = expand(load_study(write_spec(tmp_path / "s.yaml", study)))
    assert sorted(cells.sample) == sorted(cells.train)
    assert cells.sample["m-800"].train_identity == identity(cells.train["m-800"])
    assert cells.fit.generation["xs-200"] == "results/tiny/sample/xs-200/generation.json"
    stages = yaml.safe_load(compile_study(load_study(tmp_path / "s.yaml"), "s.yaml")["dvc.yaml"])["stages"]
    assert stages["sample"]["do"]["deps"][0] == "results/tiny/train/${key}/model"
    # The test set's statistics are computed once, by the reference stage, not by every sample cell.
    assert stages["reference"]["outs"] == ["results/tiny/reference/reference.npz"]
    assert stages["reference"]["metrics"] == [{"results/tiny/reference/reference.json": {"cache": False}}]
    assert stages["reference"]["deps"] == ["data/tiny/molecules.csv", "data/tiny/splits/test.npy"]
    assert "results/tiny/reference/reference.npz" in stages["sample"]["do"]["deps"]
    assert "data/tiny/splits/test.npy" not in stages["sample"]["do"]["deps"]
    # The archive stage hashes every checkpoint into the manifest, so a changed model reruns it.
    assert {f"results/tiny/train/{key}/model" for key in cells.train} <= set(stages["archive"]["deps"])
    assert "results/tiny/sample/m-800/generation.json" in stages["fit"]["deps"]
    without = expand(load_study(write_spec(tmp_path / "n.yaml", tiny_study())))
    assert without.sample == {} and without.reference is None and without.fit.generation == {}
    assert identity(without.train["m-800"]) == identity(cells.train["m-800"])


@pytest.mark.parametrize("extra,message", [
    ("generation: {samples: 10}", "generation: model.family 'painn' does not generate molecules"),
    ("  compile: true", "training.compile: model.family 'painn' cannot be compiled"),
    ("  scheduler: {name: cosine}", "training.scheduler.name: model.family 'painn' trains with the plateau"),
    ("  bucket_batches: 100", "training.bucket_batches: model.family 'painn' batches whole structures"),
    ("  packing: 256", "training.packing: model.family 'painn' batches whole structures"),
    ("  devices: 2", "training.devices: model.family 'painn' trains on one device, so 2 would only make SLURM jobs "
                     "ask for GPUs that stay idle; set devices to 1"),
    ("  devices: auto", "training.devices: model.family 'painn' trains on one device"),
    ("  scheduler: {name: constant}", "training.scheduler.name: model.family 'painn' trains with the plateau"),
    ("  scheduler: {name: plateau, warmup_steps: 10}", "training.scheduler.warmup_steps: model.family 'painn' trains "
                                                       "with the plateau schedule, which has no warm-up"),
    ("  scheduler: {name: plateau, min_lr: 1.0e-3}", r"hpo.grid.learning_rate: \[0.001\] at or below "
                                                     r"training.scheduler.min_lr \(0.001\), where the plateau "
                                                     r"schedule of model.family 'painn' stops training after the "
                                                     r"first epoch"),
])
def test_language_model_settings_are_refused_for_force_fields(tmp_path, extra, message):
    text = (QUICKSTART.parent / "quickstart-nff.yaml").read_text()
    if extra.startswith("  "):
        text = re.sub(r"\n  scheduler:[^\n]*", "", text).replace("\ntraining:\n", f"\ntraining:\n{extra}\n")
    (tmp_path / "nff.yaml").write_text(text + ("" if extra.startswith("  ") else extra + "\n"))
    with pytest.raises(SpecError, match=message):
        load_study(tmp_path / "nff.yaml")


def test_a_force_field_study_that_leaves_the_scheduler_out_trains_on_the_plateau_schedule(tmp_path):
    text = re.sub(r"\n  scheduler:[^\n]*", "", (QUICKSTART.parent / "quickstart-nff.yaml").read_text())
    (tmp_path / "nff.yaml").write_text(text)
    assert "name" not in load_study(tmp_path / "nff.yaml").training.scheduler.model_fields_set
    assert load_study(QUICKSTART.parent / "calibration-painn.yaml").training.devices == 1


def test_bf16_true_is_refused_for_force_fields_only(tmp_path):
    text = (QUICKSTART.parent / "quickstart-nff.yaml").read_text()
    (tmp_path / "true.yaml").write_text(text.replace("precision: 32-true", "precision: bf16-true"))
    with pytest.raises(SpecError, match=r"training.precision: bf16-true casts the energy shift and energy targets "
                                        r"of model.family 'painn' to bf16.*use 32-true, or bf16-mixed"):
        load_study(tmp_path / "true.yaml")
    (tmp_path / "mixed.yaml").write_text(text.replace("precision: 32-true", "precision: bf16-mixed"))
    assert load_study(tmp_path / "mixed.yaml").training.precision == "bf16-mixed"
    chemgpt = write_spec(tmp_path / "chemgpt.yaml", tiny_study(**{"training.precision": "bf16-true"}))
    assert load_study(chemgpt).training.precision == "bf16-true"


def _big_grid(sizes: int) -> dict:
    return tiny_study(**{"model.sizes": {f"m{i}": {"n_layer": 1, "n_embd": 8 * (i + 1), "n_head": 2}
                                         for i in range(sizes)},
                         "data.sizes": [100, 200, 300, 400, 500], "data.source.max_molecules": 1200,
                         "hpo.tpe": {"budget_fraction": 0.5, "model_size": "m0", "data_size": 100},
                         "generation": {"samples": 10}})


def test_a_big_grid_is_split_into_one_pipeline_per_model_size_that_dvc_reads(cli, tmp_path, git_env):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True)
    spec = write_spec(tmp_path / "study.yaml", _big_grid(10))
    assert cli("compile", str(spec), cwd=tmp_path).code == 0
    root = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]
    assert "train" not in root and "sample" not in root and "fit" in root
    per_size = sorted(p.parent.name for p in (tmp_path / "pipelines").glob("*/dvc.yaml"))
    assert per_size == sorted(f"m{i}" for i in range(10))
    m3 = yaml.safe_load((tmp_path / "pipelines/m3/dvc.yaml").read_text())["stages"]
    assert sorted(m3["train"]["foreach"]) == [f"m3-{n}" for n in (100, 200, 300, 400, 500)]
    assert m3["train"]["do"]["wdir"] == "../.." and m3["sample"]["do"]["wdir"] == "../.."
    status = subprocess.run(["dvc", "status", "--json"], cwd=tmp_path, capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert "pipelines/m3/dvc.yaml:train@m3-300" in status.stdout and "fit" in status.stdout
    assert cli("compile", "--check", str(spec), cwd=tmp_path).code == 0

    (tmp_path / "pipelines/m9/dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    write_spec(spec, _big_grid(9) | {"data": {**_big_grid(9)["data"], "sizes": list(range(100, 700, 100))}})
    stale = cli("compile", "--check", str(spec), cwd=tmp_path)
    assert stale.code == 1 and "pipelines/m9/dvc.yaml" in stale.err
    result = cli("compile", str(spec), cwd=tmp_path)
    assert result.code == 0 and "removed pipelines/m9/dvc.yaml" in result.out
    assert not (tmp_path / "pipelines/m9").exists()
    assert (tmp_path / "pipelines/m8/dvc.yaml").is_file()


def test_a_small_grid_stays_in_one_dvc_yaml(tmp_path):
    files = compile_study(load_study(write_spec(tmp_path / "s.yaml", _big_grid(9))), "s.yaml")
    assert sorted(files) == ["dvc.yaml", "params.yaml"]
