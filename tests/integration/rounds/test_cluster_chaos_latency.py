"""``flocknode cluster up --chaos latency`` end to end: a real 4-node cluster
whose nodes dial each other through TCP relays (flocknode/cluster/relay.py);
two 10 s faults slow every p2p link of a seat holder (50-300 ms one way,
jitter, loss held back as retransmission timeouts, now and then a cut), and
every promise of docs/protocol.md, "Faults and the promises kept under them",
holds, with no slash excused: a slowed node is not out.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from flocknode.cluster.launcher import ClusterState, NodeInfo
from tests.integration.rounds.chaos_run import run_cluster_up

pytestmark = pytest.mark.integration


def test_latency_faults_keep_every_promise(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    cmd = [sys.executable, "-m", "flocknode.cli", "cluster", "up", "--dir", str(directory)]
    cmd += ["--nodes", "4", "--rounds", "6", "--isolation", "none", "--json"]
    cmd += ["--chaos", "latency=2", "--chaos-seed", "1"]
    done = run_cluster_up(cmd, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    s = json.loads(done.stdout)
    faults = s["chaos"]["faults"]
    assert [f["kind"] for f in faults] == ["latency", "latency"], s["chaos"]
    assert s["chaos"]["not_injected"] == []
    for f in faults:
        assert f["role"] in ("proposer", "voter") and f["undone"], f
        assert f["seconds"] < 15.0, f  # undone on time ...
        assert f["out_rounds"] == []  # a slowed node is not excused
        assert 50 <= f["delay_ms"] <= 300 and f["loss"] > 0, f
        others = {f"node-{i}" for i in range(4)} - {f["node"]}
        assert f["links"] and set(f["links"]) <= others, f  # some or all of its links
    assert faults[0]["seconds"] >= 10.0, faults  # ... after 10 s (the last: or at the end)
    relays = s["chaos"]["latency"]
    # every node was dialed through its relay, and the faults slowed real traffic
    for name, node in relays["nodes"].items():
        assert node["connections"] > 0 and node["bytes"] > 0, relays
        config = tomllib.loads((directory / name / "node.toml").read_text())
        assert config["p2p"]["announce"] != config["p2p"]["listen"]  # the relay's address
        assert config["p2p"]["announce"][0].startswith("/ip4/127.0.0.1/tcp/")
    assert relays["delayed"] > 0 and relays["max_hold_ms"] >= 50, relays
    checks = s["invariants"]
    assert all(c["ok"] for c in checks.values()), checks
    assert checks["honest_not_slashed"]["idle_slashes_of_stopped_nodes"] == 0
    assert s["ok"] and len([r for r in s["rounds"] if not r["voided"]]) == 6
    assert "chaos: latency" in done.stderr


@pytest.mark.parametrize(
    ("chaos", "says"),
    [
        (
            ["latency", "--keep"],
            "--chaos latency: --keep would leave the nodes dialed through relays that stop",
        ),
        (
            ["latency,partition"],
            "--chaos latency and partition do not go together: pick one per run",
        ),
    ],
)
def test_latency_chaos_refusals_are_one_line(tmp_path: Path, chaos: list[str], says: str) -> None:
    cmd = [sys.executable, "-m", "flocknode.cli", "cluster", "up", "--dir", str(tmp_path / "c")]
    done = subprocess.run([*cmd, "--chaos", *chaos], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == says
    assert not (tmp_path / "c").exists()


def test_cluster_chaos_refuses_latency_in_one_line(tmp_path: Path) -> None:
    # a cluster whose "chain" runs (this process stands in for anvil): the
    # refusal comes before anything is read from it
    node = NodeInfo("node-0", 0, "0x" + "11" * 20, "0x", 1, str(tmp_path / "node-0"))
    state = ClusterState(
        str(tmp_path),
        "http://127.0.0.1:1",
        31337,
        os.getpid(),
        "0x",
        "0x",
        4,
        "fedavg",
        [node],
        str(tmp_path / "task-settings.json"),
    )
    state.save()
    cmd = [sys.executable, "-m", "flocknode.cli", "cluster", "chaos", "latency"]
    done = subprocess.run([*cmd, "--dir", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"{tmp_path}: latency faults need the relays of: cluster up --chaos latency ..."
    )
    assert dataclasses.asdict(ClusterState.load(tmp_path)) == dataclasses.asdict(state)
