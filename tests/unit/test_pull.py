"""`chemspec pull` on archives made by hand: which run a target names, and what it refuses."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import archive_commit


def _cells(loss: float) -> list[dict]:
    return [{"model": "xs", "params": 100, "data_size": 100, "val_loss": loss, "status": "ok", "wall_time_s": 1.0,
             "hparams": {}}]


@pytest.fixture
def two_studies(tmp_path, git_env):
    """A repository whose HEAD archives studies alpha and beta, each with its own manifest."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    alpha = archive_commit(tmp_path, _cells(2.0), [], study="alpha")
    beta = archive_commit(tmp_path, _cells(1.0), [], study="beta")
    return tmp_path, alpha, beta


def test_a_manifest_id_pulls_its_own_study_where_several_are_archived(cli, two_studies):
    root, alpha, beta = two_studies
    result = cli("pull", alpha[:10], "--to", "a", cwd=root)
    assert result.code == 0 and "pulled study alpha" in result.out, result.err
    assert json.loads((root / "a" / "manifest.json").read_text())["study"] == "alpha"
    assert json.loads((root / "a" / "cells.json").read_text())[0]["val_loss"] == 2.0
    assert cli("pull", beta[:10], "--to", "b", "--study", "beta", cwd=root).code == 0
    assert json.loads((root / "b" / "cells.json").read_text())[0]["val_loss"] == 1.0


def test_a_study_that_disagrees_with_the_manifest_id_is_refused(cli, two_studies):
    root, alpha, _ = two_studies
    result = cli("pull", alpha[:10], "--to", "a", "--study", "beta", cwd=root)
    assert result.code == 1 and f"manifest {alpha[:16]} is a run of study 'alpha', not 'beta'" in result.err
    assert not (root / "a").exists()


def test_a_prefix_that_is_also_a_git_revision_is_refused_as_ambiguous(cli, two_studies):
    root, alpha, _ = two_studies
    subprocess.run(["git", "branch", alpha[:8]], cwd=root, check=True)
    result = cli("pull", alpha[:8], "--to", "a", cwd=root)
    assert result.code == 1 and f"{alpha[:8]!r} is both a git revision" in result.err, result.err
    assert f"the start of manifest {alpha}" in result.err and not (root / "a").exists()


def test_a_revision_still_needs_study_where_several_are_archived(cli, two_studies):
    root, _, _ = two_studies
    assert "name one with --study" in cli("pull", "HEAD", "--to", "h", cwd=root).err
    pulled = cli("pull", "HEAD", "--to", "h", "--study", "beta", cwd=root)
    assert pulled.code == 0 and "pulled study beta" in pulled.out, pulled.err
