"""``cluster down`` returns only once every process it started has exited: real
child processes, one that exits on SIGTERM and one that ignores it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from flocknode.cluster.launcher import ClusterState, NodeInfo, _alive, down

OBEYS = "import time; print('ready', flush=True); time.sleep(600)"
IGNORES = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(600)"
)


def spawn(code: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def node(name: str, pid: int) -> NodeInfo:
    return NodeInfo(name, 0, "0xW", "key", 0, "/nonexistent", pid=pid)


def test_down_waits_for_every_process_and_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    obeys, ignores, chain = spawn(OBEYS), spawn(IGNORES), spawn(OBEYS)
    state = ClusterState(
        directory=str(tmp_path),
        rpc_url="http://127.0.0.1:1",
        chain_id=31337,
        anvil_pid=chain.pid,
        task="0xT",
        token="0xK",
        rounds=1,
        rule="fedavg",
        nodes=[node("node-0", obeys.pid), node("node-1", ignores.pid), node("node-2", 0)],
        settings_file="",
    )
    try:
        stopped = down(state, timeout=1.0)
        pids = [obeys.pid, ignores.pid, chain.pid]
        assert [p for p in pids if _alive(p)] == []
        how = {s.name: s.how for s in stopped}
        assert how == {
            "node-0": "exited",
            "node-1": "killed",
            "node-2": "not running",
            "anvil": "exited",
        }
        assert not any(s.running for s in stopped)
    finally:
        for p in (obeys, ignores, chain):
            p.kill()
            p.wait()
