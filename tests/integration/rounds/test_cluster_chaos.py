"""Chaos end to end, as a tester runs it: ``flocknode cluster chaos kill,pause``
against a real 4-node cluster that ``cluster up`` runs, one kill -9
and one SIGSTOP of an honest node holding a seat over 5 of them, and the
invariants the summary reports (docs/protocol.md, "Faults and the promises kept
under them"). ``cluster up --chaos`` takes the same path (``commands.follow``);
each fault kind's own test runs through it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flocknode.cluster.launcher import ClusterError, ClusterState, _alive
from flocknode.cluster.monitor import cluster_client

pytestmark = pytest.mark.integration


def wait_for_round(directory: Path, number: int, timeout: float) -> int:
    """Poll (with a deadline) until the cluster's chain is at round ``number``."""
    deadline = time.monotonic() + timeout
    client = None
    while time.monotonic() < deadline:
        try:
            if client is None:
                client = cluster_client(ClusterState.load(directory))
            current = client.current_round()
            if current >= number:
                return current
        except (ClusterError, OSError, ValueError):
            client = None  # not laid out yet, or the chain not up yet
        time.sleep(0.5)
    raise AssertionError(f"round {number} not reached in {timeout} s")


def test_kill_and_pause_faults_on_a_running_cluster_keep_every_promise(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    up_cmd = [sys.executable, "-m", "flocknode.cli", "cluster", "up", "--dir", str(directory)]
    # more rounds than the test follows: cluster up still runs when it is interrupted
    up_cmd += ["--nodes", "4", "--rounds", "30", "--isolation", "none", "--json"]
    up = subprocess.Popen(up_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # as soon as the cluster is laid out (its rounds may not have begun)
        current = wait_for_round(directory, 0, timeout=150)
        cmd = [sys.executable, "-m", "flocknode.cli", "cluster", "chaos", "kill,pause"]
        cmd += ["--dir", str(directory), "--rounds", "5", "--chaos-seed", "3", "--json"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=280)
        # SIGTERM (as Ctrl-C) on cluster up: it stops every node, the one the
        # chaos restarted included
        up.send_signal(signal.SIGTERM)
        _, up_err = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.communicate()
            subprocess.run([*up_cmd[:4], "down", "--dir", str(directory)], timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    s = json.loads(done.stdout)
    # five rounds, from the one after the round current when it started on
    followed = [r["round"] for r in s["rounds"] if not r["voided"]]
    first = followed[0]
    assert first > current and followed == list(range(first, first + 5)), followed
    faults = s["chaos"]["faults"]
    assert sorted(f["kind"] for f in faults) == ["kill", "pause"], s["chaos"]
    assert s["chaos"]["not_injected"] == []
    for f in faults:
        # due in the second and third followed rounds (the next round's if the
        # round's role phases passed unseen, never the last); a seat holder
        assert first + 1 <= f["round"] <= first + 3 and f["role"] in ("proposer", "voter"), f
        assert f["phase"] in ("train", "commit", "reveal") and f["undone"], f
        # undone on time, whatever the monitor waits for meanwhile
        assert 5.0 <= f["seconds"] < 10.0, f
    checks = s["invariants"]
    assert set(checks) == {
        "agreement",
        "honest_not_slashed",
        "committed_votes_revealed",
        "rounds_finalized",
        "bounded_growth",
    }
    assert all(c["ok"] for c in checks.values()), checks
    # every live node's usage was sampled at each finalized round
    assert checks["bounded_growth"]["rounds_sampled"] == 5
    assert checks["bounded_growth"]["peak_rss_mb"] > 50, checks["bounded_growth"]
    last = s["rounds"][-1]["usage"]
    assert sorted(last) == ["node-0", "node-1", "node-2", "node-3"], last
    # the killed node was restarted and ran again: two starts in its log
    killed = next(f["node"] for f in faults if f["kind"] == "kill")
    log = (directory / killed / "node.log").read_text(errors="replace")
    assert log.count("node started") == 2, log[-2000:]
    # the progress lines say what the chaos did
    assert "chaos: kill" in done.stderr and "chaos: pause" in done.stderr
    # cluster up, which started the cluster, followed its rounds through the
    # faults; stopped, it stopped every node, the restarted one included
    assert up.returncode == 130 and "interrupted" in up_err, up_err[-3000:]
    state = ClusterState.load(directory)
    assert not any(_alive(n.pid) for n in state.nodes) and not _alive(state.anvil_pid)


def test_a_bad_chaos_spec_is_one_line_and_exit_2(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "flocknode.cli", "cluster", "up", "--dir", str(tmp_path / "c")]
    done = subprocess.run([*cmd, "--chaos", "kill,nuke"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "--chaos 'kill,nuke': unknown fault 'nuke' "
        "(known: kill, pause, partition, rpc, join, leave, reorg, latency)"
    )
    assert not (tmp_path / "c").exists()


def test_cluster_chaos_without_a_cluster_is_one_line_and_exit_2(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "flocknode.cli", "cluster", "chaos", "kill"]
    done = subprocess.run([*cmd, "--dir", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2
    no_cluster = f"{tmp_path}/cluster.json: no cluster here (start one with: cluster up)"
    assert done.stderr.strip() == no_cluster
