"""Run ``flocknode cluster up ... --chaos`` as a tester does, and never leave a
cluster behind: a run past its time limit is stopped the way Ctrl-C stops it
(SIGTERM: ``cluster up`` brings its nodes, anvil, proxies and namespaces
down), and killed only if that does not end it."""

from __future__ import annotations

import signal
import subprocess


def run_cluster_up(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)``,
    except that on the time limit ``cluster up`` gets SIGTERM and 60 s to bring
    its cluster down before it is killed; ``TimeoutExpired`` is raised after."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        raise subprocess.TimeoutExpired(cmd, timeout, out, err) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
