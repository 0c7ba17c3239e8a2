"""Shared helpers: run the real CLI in-process, and tiny real study specs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from filelock import FileLock

# Without a GPU, runtime.molecule_attention's Triton kernels run under Triton's interpreter, which
# triton.jit chooses when it defines them, at their module's first import: before any chemspec import.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from chemspec.archive import Store  # noqa: E402
from chemspec.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "specs" / "quickstart.yaml"


def _shared_data() -> Path:
    """../shared/data beside the repository, or beside the local repository it was cloned from (a clean
    clone in a temporary folder), or where CHEMSPEC_SHARED_DATA points."""
    if os.environ.get("CHEMSPEC_SHARED_DATA"):
        return Path(os.environ["CHEMSPEC_SHARED_DATA"])
    beside = REPO.parent / "shared" / "data"
    origin = subprocess.run(["git", "-C", str(REPO), "config", "--get", "remote.origin.url"],
                            capture_output=True, text=True).stdout.strip()
    if beside.is_dir() or not origin or not Path(origin).is_dir():
        return beside
    return Path(origin).resolve().parent / "shared" / "data"


SHARED_DATA = _shared_data()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny graphs on 2 shared cores run several times faster on one intra-op thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def shared() -> Path:
    """The real MD17, rMD17, ANI-1x and extxyz files of ../shared/data beside the repository."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (the ../shared/data folder beside the repository "
                    "or its origin; or set CHEMSPEC_SHARED_DATA)")
    return SHARED_DATA


class Result:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `chemspec ARGS` in-process in a directory; returns exit code and captured output."""

    def run(*args: str, cwd: Path | None = None) -> Result:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def tiny_study(**overrides) -> dict:
    """A study small enough to train end to end in about a minute on 2 CPU cores."""
    study = {
        "study": "tiny",
        "seed": 0,
        "data": {"kind": "smiles", "source": {"package": "moses", "max_molecules": 1500},
                 "sizes": [200, 400, 800], "validation": 200, "test": 200},
        "model": {"family": "chemgpt", "sizes": {
            "xs": {"n_layer": 1, "n_embd": 16, "n_head": 2, "max_length": 64},
            "s": {"n_layer": 1, "n_embd": 32, "n_head": 2, "max_length": 64},
            "m": {"n_layer": 2, "n_embd": 32, "n_head": 2, "max_length": 64}}},
        "training": {"max_epochs": 2, "accelerator": "cpu"},
        "hpo": {"grid": {"learning_rate": [3.0e-3, 1.0e-2], "batch_size": [32]},
                "tpe": {"budget_fraction": 0.5, "model_size": "xs", "data_size": 400}},
    }
    for dotted, value in overrides.items():
        node = study
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return study


def write_spec(path: Path, study: dict) -> Path:
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def atoms_data_cell(tmp_path: Path, monkeypatch, source: dict):
    """The data cell of a tiny PaiNN study of `source` (a data.source mapping), compiled in tmp_path, the
    working folder from then on."""
    from chemspec.compiler import expand
    from chemspec.specs import load_study

    study = tiny_study(**{"data.kind": "atoms", "data.source": source, "hpo.tpe.model_size": "w8d1",
                          "model": {"family": "painn", "widths": [8], "depths": [1]}})
    monkeypatch.chdir(tmp_path)
    return expand(load_study(write_spec(tmp_path / "study.yaml", study))).data


def shared_temp(tmp_path_factory) -> Path:
    """This run's temporary folder that every pytest-xdist worker sees (`make test` runs `pytest -n 2
    --dist loadfile`: each test file on one worker, so module fixtures are made once)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session", autouse=True)
def _private_dvc_remote(tmp_path_factory):
    """The default DVC remote of every test project lives in a temporary directory, not the user's cache."""
    remote = shared_temp(tmp_path_factory) / "dvc-remote"
    remote.mkdir(exist_ok=True)
    os.environ["CHEMSPEC_REMOTE"] = str(remote)


def tool_env() -> dict[str, str]:
    """The environment for git, dvc and chemspec subprocesses: this venv first, a git identity, no telemetry."""
    return {**os.environ, "GIT_AUTHOR_NAME": "chemspec tests", "GIT_AUTHOR_EMAIL": "tests@chemspec.invalid",
            "GIT_COMMITTER_NAME": "chemspec tests", "GIT_COMMITTER_EMAIL": "tests@chemspec.invalid",
            "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


@pytest.fixture
def git_env(monkeypatch):
    for key, value in tool_env().items():
        monkeypatch.setenv(key, value)


def sh(*args: str, cwd: Path) -> str:
    """Run a tool (git, dvc, chemspec) in `cwd`; assert it succeeded; its stdout and stderr together."""
    done = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, env=tool_env())
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> tuple[Path, str]:
    """tiny_study() compiled, reproduced, pushed and committed once a run: its root and the output of its
    `dvc repro`. Several modules start from it, each from a `copy_project`; the first xdist worker to
    need it makes it while the others wait."""
    root = shared_temp(tmp_path_factory) / "tiny-base"
    output = root.with_name("tiny-base.out")
    with FileLock(f"{root}.lock"):
        if not output.is_file():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            sh("git", "init", "-q", cwd=root)
            sh("dvc", "init", "-q", cwd=root)
            output.write_text(repro_and_commit(root, tiny_study(), "tiny study"))
    return root, output.read_text()


def launch_project(root: Path, **overrides) -> Path:
    """A git + DVC project at `root` with tiny_study(**overrides) as study.yaml, not compiled."""
    for args in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(args, cwd=root, env=tool_env(), check=True)
    write_spec(root / "study.yaml", tiny_study(**overrides))
    return root


def repro_and_commit(root: Path, study: dict, message: str) -> str:
    """Write `study` as study.yaml, compile it, `dvc repro`, push and commit; the repro's output."""
    write_spec(root / "study.yaml", study)
    sh("chemspec", "compile", "study.yaml", cwd=root)
    out = sh("dvc", "repro", cwd=root)
    sh("dvc", "push", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", message, cwd=root)
    return out


def archive_commit(root: Path, cells: list[dict], fits: list[dict], study: str = "s", spec_archive: dict | None = None,
                   plots: dict[str, bytes] | None = None, selected: dict | None = None,
                   identities: dict[str, str] | None = None, generation_fits: list[dict] | None = None,
                   error_fits: list[dict] | None = None, data: dict | None = None, **manifest) -> str:
    """Archive a run of `study` by hand in the git repository at `root` and commit it; the manifest id."""
    store = Store(root / "archive")
    spec = {"study": study, "data": {"kind": "smiles"}, "model": {"family": "chemgpt"}, "fit": {"confidence": 0.95},
            **({"archive": spec_archive} if spec_archive else {})}
    objects = {"spec": store.put_json(spec),
               "cells": store.put_json(cells), "fit": store.put_json({"study": study, "fits": fits, "confidence": 0.95,
                                                                      "generation": generation_fits,
                                                                      "errors": error_fits}),
               **({"plots": {name: store.put_bytes(data) for name, data in plots.items()}} if plots else {}),
               **({"selected": store.put_json(selected)} if selected else {}),
               **({"data": store.put_json(data)} if data else {})}
    digest = store.put_json({"kind": "chemspec-manifest", "study": study, "objects": objects, "checkpoints": {},
                             "provenance": {"git": {"commit": None}, "compute_hours": 0.0},
                             **({"cells": identities} if identities else {}), **manifest})
    store.set_ref(study, digest)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, env=tool_env())
    subprocess.run(["git", "commit", "-qm", f"archive {study}"], cwd=root, check=True, env=tool_env())
    return digest


def copy_project(base: Path, to: Path) -> Path:
    """A copy of a git + DVC project, history and DVC cache included, that can change on its own."""
    shutil.copytree(base, to, symlinks=True)
    return to
