"""A tiny ChemGPT study through real `chemspec compile` + `dvc repro` in a temporary git repository."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import chemspec

from tests.conftest import copy_project, launch_project, tiny_study, tool_env, write_spec

pytestmark = pytest.mark.slow


def sh(*args: str, cwd: Path) -> str:
    done = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, env=tool_env())
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def project(tiny_project, tmp_path_factory):
    base, first = tiny_project
    return copy_project(base, tmp_path_factory.mktemp("study") / "study"), first


def test_first_repro_runs_every_stage(project):
    _, first = project
    assert {"data", "split", "select", "fit", "archive", "tpe@lr3e-3-bs32", "tpe@lr1e-2-bs32",
            "train@xs-200", "train@m-800"} <= ran_stages(first)


def test_report_json_has_cells_and_fits(project):
    root, _ = project
    report = json.loads(sh("chemspec", "report", "--json", cwd=root))
    assert report["study"] == "tiny"
    assert len(report["cells"]) == 9
    assert set(report["cells"][0]) == {"model", "params", "data_size", "val_loss", "test_loss", "status",
                                       "wall_time_s", "train_tokens_per_s", "peak_gpu_memory_mb"}
    assert report["cells"][0]["wall_time_s"] > 0 and report["cells"][0]["test_loss"] > 0
    assert all(c["train_tokens_per_s"] > 0 and c["peak_gpu_memory_mb"] is None for c in report["cells"])  # CPU
    data_fits = [f for f in report["fits"] if f["axis"] == "data" and f["law"] == "power"]
    assert len(data_fits) == 3 and all(f["status"] == "ok" for f in data_fits)
    assert all(len(f["ci"]) == 2 and f["ci"][0] <= f["exponent"] <= f["ci"][1] for f in data_fits)
    for model in ("xs", "s", "m"):
        losses = [c["val_loss"] for c in sorted(report["cells"], key=lambda c: c["data_size"])
                  if c["model"] == model]
        assert losses == sorted(losses, reverse=True), f"{model}: loss must fall with data size {losses}"
    text = sh("chemspec", "report", cwd=root)
    assert "exponent" in text and "xs" in text
    assert "Val and test loss: the mean cross-entropy of the next token, in nats." in text, "the loss's unit"
    assert re.search(r"Trained with torch \S+ \((CPU build|CUDA [\d.]+)\), lightning .+ on cpu \(", text), text


def test_manifest_objects_match_their_names(project):
    root, _ = project
    ref = json.loads((root / "archive" / "refs" / "tiny.json").read_text())
    objects = root / "archive" / "objects"
    manifest = json.loads((objects / ref["manifest"][:2] / ref["manifest"]).read_bytes())
    assert manifest["study"] == "tiny"
    assert set(manifest["objects"]) >= {"spec", "data", "split", "selected", "fit", "cells", "plots", "train", "tpe"}
    assert len(manifest["objects"]["train"]) == 9
    assert manifest["provenance"]["versions"]["torch"]
    import torch

    stack = {"python": platform.python_version(), "cuda": torch.version.cuda,
             **{name: importlib.metadata.version(name) for name in ("torch", "lightning", "transformers")}}
    assert manifest["provenance"]["trained_with"] == [stack], "what the cells trained with, from their timings"
    assert manifest["provenance"]["trained_unrecorded"] == 0
    trained_on = manifest["provenance"]["trained_on"]  # every cell trained on this machine's CPU
    assert len(trained_on) == 1 and re.fullmatch(r"cpu \(.+, \d+ threads\)", trained_on[0]), trained_on
    digest = min(manifest["objects"]["train"].values())
    train = json.loads((objects / digest[:2] / digest).read_bytes())
    assert "stack" not in train and "device" not in train, "versions stay out of the results' hashes"
    source = Path(chemspec.__file__).resolve().parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True).stdout.strip()
    assert manifest["provenance"]["chemspec_source"]["commit"] == (head or None), "the chemspec code that ran"
    files = [p for p in objects.rglob("*") if p.is_file()]
    assert len(files) >= 20
    for path in files:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
    assert "verified" in sh("chemspec", "archive", "verify", cwd=root)


def test_second_repro_runs_nothing(project):
    root, _ = project
    assert ran_stages(sh("dvc", "repro", cwd=root)) == set()


def test_editing_one_model_size_reruns_only_its_cells(project):
    """compile says what the next repro runs against dvc.lock's record: an edit undone before it runs nothing."""
    root, _ = project
    write_spec(root / "study.yaml", tiny_study(**{"data.validation": 150}))
    assert "every cell retrains" in sh("chemspec", "compile", "study.yaml", cwd=root)
    write_spec(root / "study.yaml", tiny_study())
    assert "retrains" not in sh("chemspec", "compile", "study.yaml", cwd=root)
    study = tiny_study()
    study["model"]["sizes"]["s"]["n_embd"] = 24
    write_spec(root / "study.yaml", study)
    assert ("note: against their last run as dvc.lock records it, the next `dvc repro` runs 3 train cells (3 whose "
            "settings changed)\n") in sh("chemspec", "compile", "study.yaml", cwd=root)
    assert ("warning: these results predate params.yaml as compiled now: 4 stages did not run as compiled (archive, "
            "train@s-200, train@s-400, train@s-800)") in sh("chemspec", "report", "--no-files", cwd=root)
    rerun = ran_stages(sh("dvc", "repro", cwd=root))
    assert rerun == {"train@s-200", "train@s-400", "train@s-800", "fit", "archive"}
    assert "warning" not in sh("chemspec", "report", "--no-files", cwd=root)


def test_another_estimator_retrains_only_the_cells_whose_choice_it_changes(project):
    """select estimates from the TPE runs' loss logs, and each train cell depends on its choice file alone:
    no TPE cell trains again, and the train cells retrain exactly when the kept configuration changed."""
    root, _ = project
    choice = root / "results" / "tiny" / "selected" / "r1.json"
    before = choice.read_bytes()
    study = tiny_study(**{"hpo.tpe.estimator": "val"})
    study["model"]["sizes"]["s"]["n_embd"] = 24
    write_spec(root / "study.yaml", study)
    sh("chemspec", "compile", "study.yaml", cwd=root)
    rerun = ran_stages(sh("dvc", "repro", cwd=root))
    selected = json.loads((root / "results" / "tiny" / "selected.json").read_text())
    assert selected["estimator"] == "val" and json.loads(choice.read_text())["hparams"] == selected["kept"]["*"][0]
    trained = {f"train@{m}-{n}" for m in ("xs", "s", "m") for n in (200, 400, 800)}
    assert rerun == {"select", "fit", "archive"} | (trained if choice.read_bytes() != before else set())
    assert ran_stages(sh("dvc", "repro", cwd=root)) == set()


def test_report_pages_embed_every_plot(project):
    root, _ = project
    sh("chemspec", "report", cwd=root)
    page = (root / "results" / "tiny" / "report" / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "joint" in page and "Training Performance Estimation" in page
    summary = (root / "results" / "tiny" / "report" / "report.md").read_text()
    assert summary.startswith("# tiny") and "| power | data | xs |" in summary


def test_dvc_plots_show_renders_the_study(project):
    root, _ = project
    out = sh("dvc", "plots", "show", "-o", "dvc_plots", cwd=root)
    assert (root / "dvc_plots" / "index.html").is_file(), out


def test_a_nan_at_one_step_marks_only_that_cell_diverged(project):
    root, _ = project
    env_fault = {"CHEMSPEC_FAULT": "train@xs-400:nan@3"}
    done = subprocess.run(["dvc", "repro", "-f", "-s", "train@xs-400"], cwd=root, capture_output=True, text=True,
                          env={**tool_env(), **env_fault})
    assert done.returncode == 0, done.stderr
    sh("dvc", "repro", cwd=root)
    report = json.loads(sh("chemspec", "report", "--json", cwd=root))
    status = {(c["model"], c["data_size"]): c["status"] for c in report["cells"]}
    assert status.pop(("xs", 400)) == "diverged"
    assert set(status.values()) == {"ok"}
    xs_fit = next(f for f in report["fits"] if f["axis"] == "data" and f["group"] == "xs" and f["law"] == "power")
    assert xs_fit["n"] == 2 and xs_fit["status"] == "cannot fit"
    assert "diverged at step 3" in (root / "results" / "tiny" / "report" / "index.html").read_text()
    assert "DIVERGED" in sh("chemspec", "report", cwd=root)
    metrics = json.loads((root / "results" / "tiny" / "train" / "xs-400" / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["epochs_trained"] == round(3 / metrics["steps_per_epoch"], 4)
    assert metrics["epochs"] > metrics["epochs_trained"], "epochs: the configured count, as for every cell"


def test_a_stage_that_fails_under_dvc_says_how_to_get_its_removed_outputs_back(tiny_project, tmp_path):
    root = copy_project(tiny_project[0], tmp_path / "study")
    splits = root / "data" / "tiny" / "splits"
    kept = {path.name: path.read_bytes() for path in splits.iterdir()}
    info = root / "data" / "tiny" / "data.json"
    good = info.read_bytes()
    info.write_text("<<<<<<< HEAD\n")
    done = subprocess.run(["dvc", "repro", "-f", "-s", "split"], cwd=root, capture_output=True, text=True,
                          env=tool_env())
    assert done.returncode != 0 and "data/tiny/data.json is not readable JSON" in done.stderr, done.stderr
    assert ("note: dvc removed the outputs of this stage's last run before running it again; `dvc checkout` puts "
            "them back from DVC's cache") in done.stderr, done.stderr
    assert not list(splits.glob("*.npy")), "dvc removed them before the stage ran"
    info.write_bytes(good)
    sh("dvc", "checkout", cwd=root)
    assert {path.name: path.read_bytes() for path in splits.iterdir()} == kept
    assert "Data and pipelines are up to date" in sh("dvc", "status", cwd=root)
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    del lock["stages"]["split"]  # as before the stage's first run
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    info.write_text("<<<<<<< HEAD\n")
    first = subprocess.run(["dvc", "repro", "-s", "split"], cwd=root, capture_output=True, text=True, env=tool_env())
    assert first.returncode != 0 and "data/tiny/data.json is not readable JSON" in first.stderr, first.stderr
    assert "dvc removed" not in first.stderr, "a first run had no outputs to remove"


def test_outputs_of_a_first_repro_that_failed_stay_out_of_git(tmp_path):
    """DVC takes back the .gitignore entries it wrote in a repro that fails, finished stages' included, and
    `git add -A` then took data and splits; compile's block in .gitignore keeps them out whatever DVC does."""
    root = launch_project(tmp_path)
    sh("chemspec", "compile", "study.yaml", cwd=root)
    done = subprocess.run(["dvc", "repro"], cwd=root, capture_output=True, text=True,
                          env=tool_env() | {"CHEMSPEC_FAULT": "tpe@lr3e-3-bs32:kill@1"})
    assert done.returncode != 0 and (root / "data" / "tiny" / "splits" / "val.npy").is_file(), done.stderr
    status = sh("git", "status", "--porcelain", "--untracked-files=all", cwd=root)
    assert not [line for line in status.splitlines() if "data/" in line or "results/" in line], status
    for path in ("data/tiny/tokens.npy", "data/tiny/splits/train-200.npy", "results/tiny/train/xs-200/model"):
        assert sh("git", "check-ignore", path, cwd=root).strip() == path
    assert subprocess.run(["git", "check-ignore", "-q", "results/tiny/fit/fit.json"], cwd=root).returncode == 1


def test_dropping_a_model_size_refits_without_its_cells(tiny_project, tmp_path):
    """DVC finds a stage changed where a dependency is added, not where one is dropped: the fit once kept
    fitting the cells of a size the study no longer had, and the archive recorded that fit beside the new spec."""
    root = copy_project(tiny_project[0], tmp_path / "study")
    study = tiny_study()
    del study["model"]["sizes"]["m"]
    write_spec(root / "study.yaml", study)
    sh("chemspec", "compile", "study.yaml", cwd=root)
    assert "fit:" in sh("dvc", "status", cwd=root)
    assert ran_stages(sh("dvc", "repro", cwd=root)) == {"fit", "archive"}
    cells = json.loads((root / "results" / "tiny" / "fit" / "cells.json").read_text())
    assert sorted({c["model"] for c in cells}) == ["s", "xs"] and len(cells) == 6
    report = json.loads(sh("chemspec", "report", "--json", "--no-files", cwd=root))
    assert {c["model"] for c in report["cells"]} == {"s", "xs"} and report["stale"] is None


def test_a_study_edited_and_not_compiled_is_named_by_report_and_diff(tiny_project, tmp_path):
    """dvc repro finds nothing to do, since it runs the pipeline as compiled: report and diff said nothing."""
    root = copy_project(tiny_project[0], tmp_path / "study")
    write_spec(root / "study.yaml", tiny_study(**{"model.sizes.s.n_embd": 24}))
    said = ("study.yaml compiles to other files now (dvc.yaml, params.yaml would differ: the study or chemspec changed "
            "since the last compile, or params.yaml was edited by hand); these results are of the study as last "
            "compiled: run `chemspec compile study.yaml`, then `dvc repro`")
    report = subprocess.run(["chemspec", "report", "--no-files"], cwd=root, capture_output=True, text=True,
                            env=tool_env())
    assert report.returncode == 0 and f"warning: {said}" in report.stderr, report.stderr
    diff = subprocess.run(["chemspec", "diff"], cwd=root, capture_output=True, text=True, env=tool_env())
    assert diff.returncode == 0 and f"note: WORKTREE: {said}" in diff.stderr, diff.stderr
    sh("chemspec", "compile", "study.yaml", cwd=root)
    report = subprocess.run(["chemspec", "report", "--no-files"], cwd=root, capture_output=True, text=True,
                            env=tool_env())
    assert "compiles to other files now" not in report.stderr and "did not run as compiled" in report.stderr


def test_results_that_are_not_the_run_dvc_lock_records_are_named_by_report(tiny_project, tmp_path):
    """After `git checkout <older commit>` without `dvc checkout`, fit.json (in git) was the older run's and
    cells.json (in DVC) the newer one's: report showed the two together without a word."""
    root = copy_project(tiny_project[0], tmp_path / "study")
    table = root / "results" / "tiny" / "fit" / "cells.json"
    table.write_text(json.dumps(json.loads(table.read_text()), indent=1))  # another run's bytes, as DVC sees it
    report = subprocess.run(["chemspec", "report", "--no-files"], cwd=root, capture_output=True, text=True,
                            env=tool_env())
    assert report.returncode == 0 and ("warning: results/tiny/fit/cells.json is not what dvc.lock records, so these "
                                       "results may mix two runs (a `git checkout` without `dvc checkout` does "
                                       "this): run `dvc checkout`") in report.stderr, report.stderr
    sh("dvc", "checkout", "--force", cwd=root)  # --force: this edit, unlike a run's file, is in no cache
    clean = subprocess.run(["chemspec", "report", "--no-files"], cwd=root, capture_output=True, text=True,
                           env=tool_env())
    assert "warning" not in clean.stderr, clean.stderr


def test_results_deleted_from_disk_are_named_by_report(tiny_project, tmp_path):
    """A cell's folder removed (by hand, or by DVC for a run then stopped): report showed its row as if there."""
    root = copy_project(tiny_project[0], tmp_path / "study")
    cell = next((root / "results" / "tiny" / "train").iterdir())
    shutil.rmtree(cell)
    report = subprocess.run(["chemspec", "report", "--no-files"], cwd=root, capture_output=True, text=True,
                            env=tool_env())
    assert report.returncode == 0 and (f"warning: the outputs that dvc.lock records of 1 stage are not on disk "
                                       f"(train@{cell.name}); the report shows their results as the fit stage "
                                       "recorded them: `dvc checkout` restores them") in report.stderr, report.stderr
    sh("dvc", "checkout", cwd=root)
    assert cell.is_dir()
    clean = subprocess.run(["chemspec", "report", "--no-files"], cwd=root, capture_output=True, text=True,
                           env=tool_env())
    assert "warning" not in clean.stderr, clean.stderr


def test_a_checkpoint_no_run_will_resume_is_named_by_report(tiny_project, tmp_path):
    """Ctrl-C mid-cell, then `dvc repro` restored the cell from DVC's run cache: its checkpoint stayed, unnamed."""
    root = copy_project(tiny_project[0], tmp_path / "study")
    cells = yaml.safe_load((root / "params.yaml").read_text())["cells"]["train"]
    key, cell = next(iter(cells.items()))
    (root / cell["resume_dir"]).mkdir(parents=True)
    (root / cell["resume_dir"] / "last.ckpt").write_bytes(b"\0" * 800_000)
    report = subprocess.run(["chemspec", "report", "--no-files"], cwd=root, capture_output=True, text=True,
                            env=tool_env())
    assert report.returncode == 0 and (f"note: {cell['resume_dir']} holds the checkpoint of a stopped run of "
                                       f"train@{key}, which dvc.lock records as done since (restored from DVC's "
                                       f"run cache), so only a forced run (`dvc repro -f --no-run-cache -s "
                                       f"train@{key}`) would resume from it: delete it to free 0.8 MB"
                                       ) in report.stderr, report.stderr
