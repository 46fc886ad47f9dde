"""``flocknode cluster up --chaos rpc`` end to end: a real 4-node cluster whose
nodes reach anvil through fault proxies (flocknode/cluster/rpcproxy.py); two
20 s fault windows on seat holders give errors, held requests, dropped
connections, 429s and stale answers, and every promise of docs/protocol.md,
"Faults and the promises kept under them", holds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.integration.rounds.chaos_run import run_cluster_up

pytestmark = pytest.mark.integration

WINDOW_KINDS = ("error", "rate_limit", "drop", "stale", "timeout")


def test_rpc_faults_keep_every_promise(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    cmd = [sys.executable, "-m", "flocknode.cli", "cluster", "up", "--dir", str(directory)]
    cmd += ["--nodes", "4", "--rounds", "4", "--isolation", "none", "--json"]
    cmd += ["--chaos", "rpc=2", "--chaos-seed", "1"]
    done = run_cluster_up(cmd, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    s = json.loads(done.stdout)
    faults = s["chaos"]["faults"]
    assert [f["kind"] for f in faults] == ["rpc", "rpc"], s["chaos"]
    assert s["chaos"]["not_injected"] == []
    for f in faults:
        assert f["role"] in ("proposer", "voter") and f["undone"], f
        assert f["seconds"] < 25.0, f  # closed on time ...
        assert f["out_rounds"] == []  # a node behind a faulty RPC is not excused
    assert faults[0]["seconds"] >= 20.0, faults  # ... after 20 s (the last: or at the end)
    rpc = s["chaos"]["rpc"]
    assert all(rpc["injected"][k] > 0 for k in WINDOW_KINDS), rpc
    assert rpc["get_logs_range_cap"] == 1000
    # faults only on the nodes whose window was open; every node went through its proxy
    hit = {f["node"] for f in faults}
    for name, node in rpc["nodes"].items():
        assert node["requests"] > 100, rpc
        assert (sum(node["injected"].values()) > 0) == (name in hit), rpc
        config = tomllib.loads((directory / name / "node.toml").read_text())
        assert config["chain"]["rpc_url"] != s["rpc_url"]  # the proxy, not anvil
    checks = s["invariants"]
    assert all(c["ok"] for c in checks.values()), checks
    assert checks["honest_not_slashed"]["idle_slashes_of_stopped_nodes"] == 0
    assert s["ok"] and len([r for r in s["rounds"] if not r["voided"]]) == 4
    assert "chaos: rpc" in done.stderr


def test_rpc_chaos_and_keep_do_not_go_together(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "flocknode.cli", "cluster", "up", "--dir", str(tmp_path / "c")]
    done = subprocess.run([*cmd, "--chaos", "rpc", "--keep"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "--chaos rpc: --keep would leave the nodes on RPC proxies that stop with cluster up"
    )
    assert not (tmp_path / "c").exists()
