"""How a training stage tells that the dvc above it has died: by pid and start, not by pid alone."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time

import pytest

from chemspec.runtime.dvc_parent import Process, _is_dvc, _state


def test_a_process_is_gone_once_it_exits_even_before_it_is_reaped_and_is_picklable():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    watched = Process(child.pid, _state(child.pid)[0])
    assert not watched.gone() and not pickle.loads(pickle.dumps(watched)).gone()
    deadline = time.monotonic() + 10
    while not watched.gone():  # a zombie: exited, not yet reaped
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child.wait()
    assert watched.gone()


def test_a_pid_taken_again_by_another_process_is_not_the_one_watched():
    assert Process(os.getpid(), _state(os.getpid())[0] + 1).gone()
    assert not Process(os.getpid(), None).gone(), "a start that could not be read: taken to run on"


@pytest.mark.parametrize("args,dvc", [
    (["/venv/bin/dvc", "repro"], True), (["/venv/bin/python", "/venv/bin/dvc", "repro", "-s", "x"], True),
    (["python3", "-m", "dvc", "--wait-for-lock", "repro"], True), (["python3.12", "-u", "-m", "dvc", "exp", "run"], True),
    (["git", "commit", "-m", "dvc"], False), (["bash", "-c", "dvc repro"], False), ([], False),
])
def test_dvc_is_known_by_its_program_or_module(args, dvc):
    assert _is_dvc(args) is dvc
