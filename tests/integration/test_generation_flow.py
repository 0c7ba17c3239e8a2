"""Generation quality through real `dvc repro`: sample stages, report, archive, diff, and from_pretrained."""

from __future__ import annotations

import csv
import json
import re

import pytest

from tests.conftest import copy_project, repro_and_commit, sh, tiny_study

pytestmark = pytest.mark.slow

METRICS = {"validity", "trivial", "uniqueness", "novelty", "internal_diversity", "fcd", "w_logp", "w_qed", "w_mw"}


def study(temperature: float) -> dict:
    """The shared tiny study without its largest model size, sampling each of its cells. FCD is scored on 40 of
    the 100 samples: the tiny models leave many unfinished at the length limit, which count as invalid."""
    sizes = {name: size for name, size in tiny_study()["model"]["sizes"].items() if name != "m"}
    return tiny_study(**{"model.sizes": sizes, "generation": {"samples": 100, "batch_size": 50,
                                                               "temperature": temperature, "fcd_molecules": 40}})


@pytest.fixture(scope="module")
def project(tiny_project, tmp_path_factory):
    root = copy_project(tiny_project[0], tmp_path_factory.mktemp("generation") / "generation")
    first = repro_and_commit(root, study(1.0), "sample at temperature 1")
    second = repro_and_commit(root, study(0.7), "sample at temperature 0.7")
    return root, first, second


def test_every_trained_cell_is_sampled_and_scored(project):
    root, first, _ = project
    ran = set(re.findall(r"Running stage '([^']+)'", first))
    assert {f"sample@{m}-{n}" for m in ("xs", "s") for n in (200, 400, 800)} <= ran
    assert not [s for s in ran if s.startswith(("train@", "tpe@"))], "adding generation retrains nothing"
    assert "Loading weights" not in first, "transformers' progress bar for each cell's load stays out of dvc's log"
    result = json.loads((root / "results/tiny/sample/s-800/generation.json").read_text())
    assert result["status"] == "ok" and result["samples"] == 100
    assert METRICS - {"w_logp", "w_qed", "w_mw"} <= set(result) and set(result["wasserstein"]) == {"logp", "qed", "mw"}
    assert 0 < result["validity"] <= 1 and result["fcd"] > 0 and result["fcd_molecules"] == 40
    assert 0 < result["fcd_floor"]["value"] < result["fcd"]
    samples = (root / "results/tiny/sample/s-800/samples.csv").read_text().splitlines()
    assert len(samples) == 101 and samples[0] == "text,smiles,terminated,valid,canonical"
    valid = [row for row in csv.DictReader(samples) if row["valid"] == "1"]
    assert len(valid) == round(result["validity"] * 100) and all(row["canonical"] for row in valid)


def test_changing_generation_resamples_without_retraining(project):
    _, _, second = project
    ran = set(re.findall(r"Running stage '([^']+)'", second))
    assert not [s for s in ran if s.startswith(("train@", "tpe@"))], ran
    assert {"sample@xs-200", "sample@s-800", "fit", "archive"} <= ran


def test_report_shows_generation_metrics_and_the_fcd_fit(project):
    root, _, _ = project
    report = json.loads(sh("chemspec", "report", "--json", cwd=root))
    entry = METRICS | {"fcd_molecules", "fcd_floor", "fcd_floor_std", "unfinished", "samples"}
    assert all(set(c["generation"]) == entry for c in report["cells"])
    text = sh("chemspec", "report", cwd=root)
    assert "FCD" in text and "novel" in text
    html = (root / "results/tiny/report/index.html").read_text()
    assert "Generation quality" in html and 'alt="generation"' in html
    assert "A sample that reached the length limit without [EOS] counts as invalid: " in html
    fit = json.loads((root / "results/tiny/fit/fit.json").read_text())
    assert {f["axis"] for f in fit["generation"]} == {"data", "params"}
    assert any(k.startswith("fcd_excess.power.data.") for k in fit["exponents"])
    assert all(f["quantity"].startswith("excess FCD over the 40-sample floor of ") for f in fit["generation"])


def test_archive_holds_the_samples_and_diff_shows_their_change(project):
    root, _, _ = project
    ref = json.loads((root / "archive/refs/tiny.json").read_text())["manifest"]
    manifest = json.loads(sh("chemspec", "archive", "show", ref, cwd=root))
    assert len(manifest["objects"]["sample"]) == 6
    assert "verified" in sh("chemspec", "archive", "verify", cwd=root)
    diff = json.loads(sh("chemspec", "diff", "HEAD~1", "HEAD", "--json", cwd=root))
    assert {"field": "generation.temperature", "before": 1.0, "after": 0.7} in diff["spec"]
    assert {c["metric"] for c in diff["cells"]["generation"]} & {"fcd", "uniqueness"}
    assert "fcd" in sh("chemspec", "diff", "HEAD~1", "HEAD", cwd=root)


def test_an_archived_cell_samples_molecules_after_from_pretrained(project, tmp_path):
    from chemspec.runtime.generation import canonical
    from chemspec.runtime.sample import load_cell, sample

    root, _, _ = project
    sh("chemspec", "pull", "HEAD", "--to", str(tmp_path / "run"), cwd=root)
    model, tokenizer = load_cell(tmp_path / "run" / "checkpoints" / "s-800")
    rows, tokens = sample(model, tokenizer, 20, batch_size=20, seed=3)
    assert len(rows) == 20 and tokens > 20
    assert sum(canonical(r["smiles"]) is not None for r in rows) >= 15
    again, _ = sample(model, tokenizer, 20, batch_size=20, seed=3)
    assert again == rows
