"""The chaos tests' runner stops ``cluster up`` as Ctrl-C does when it runs
over its time, so a hung run leaves no cluster behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.rounds.chaos_run import run_cluster_up

# stands in for cluster up: says it is ready, brings "its cluster" down on SIGTERM
FAKE_UP = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (print("cluster down", flush=True), sys.exit(130)))
print("up", flush=True)
time.sleep(120)
"""


def test_a_run_past_its_time_is_stopped_with_sigterm() -> None:
    with pytest.raises(subprocess.TimeoutExpired) as e:
        run_cluster_up([sys.executable, "-c", FAKE_UP], timeout=8)  # started well before
    assert e.value.output == "up\ncluster down\n"  # it brought its cluster down


def test_a_run_in_time_is_returned_as_it_ended() -> None:
    done = run_cluster_up([sys.executable, "-c", "import sys; print('{}'); sys.exit(3)"], 30)
    assert (done.returncode, done.stdout) == (3, "{}\n")
