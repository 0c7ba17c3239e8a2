"""`chemspec run` prints the stacks of a stage that seems hung when sent SIGUSR2, and keeps running."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from tests.conftest import tool_env

STAGE = textwrap.dedent("""
    import sys, time
    from chemspec import api
    from chemspec.cli import main

    def stuck_stage(*args, **kwargs):
        print("ready", flush=True)
        time.sleep(60)

    api.run = stuck_stage
    sys.exit(main(["run", "data"]))
""")


def test_sigusr2_prints_every_threads_stack_of_a_running_stage(tmp_path):
    with subprocess.Popen([sys.executable, "-c", STAGE], cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=tool_env()) as proc:
        try:
            assert proc.stdout.readline() == "ready\n"
            proc.send_signal(signal.SIGUSR2)
            lines = [proc.stderr.readline() for _ in range(4)]
            assert proc.poll() is None, "the stage keeps running after printing its stacks"
        finally:
            proc.kill()
    assert lines[0].startswith(("Current thread 0x", "Thread 0x")), lines
    assert any("stuck_stage" in line for line in lines), lines
