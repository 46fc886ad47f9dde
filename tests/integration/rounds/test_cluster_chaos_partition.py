"""``flocknode cluster up --chaos partition`` end to end: a real 4-node cluster
whose nodes each run in a network namespace of their own, 5 rounds, one
partition cutting a node off the other three for 30 s while every node still
reaches the chain, and the invariants the summary reports (docs/protocol.md,
"Faults and the promises kept under them"), as a tester runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.rounds.chaos_run import run_cluster_up

pytestmark = pytest.mark.integration

ROOT = os.geteuid() == 0 and shutil.which("ip") is not None


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(not ROOT, reason="network namespaces need root and iproute2")
def test_a_partition_heals_and_the_cluster_resumes_and_agrees(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    cmd = [sys.executable, "-m", "flocknode.cli", "cluster", "up", "--dir", str(directory)]
    cmd += ["--nodes", "4", "--rounds", "5", "--isolation", "none", "--json"]
    cmd += ["--chaos", "partition", "--chaos-seed", "1"]
    done = run_cluster_up(cmd, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    s = json.loads(done.stdout)
    (fault,) = s["chaos"]["faults"]
    assert fault["kind"] == "partition" and s["chaos"]["not_injected"] == []
    minority, majority = fault["sides"]
    assert len(minority) == 1 and len(majority) == 3, fault
    assert sorted(minority + majority) == [f"node-{i}" for i in range(4)]
    assert 2 <= fault["round"] <= 4 and fault["undone"], fault
    assert 30.0 <= fault["seconds"] < 35.0, fault  # healed on time
    checks = s["invariants"]
    assert set(checks) == {
        "agreement",
        "honest_not_slashed",
        "committed_votes_revealed",
        "rounds_finalized",
        "bounded_growth",
        "resumes_after_partition",
    }
    assert all(c["ok"] for c in checks.values()), checks
    assert s["ok"] and len([r for r in s["rounds"] if not r["voided"]]) == 5
    assert "chaos: partition" in done.stderr
    # the nodes listened on their namespaces' addresses, anvil on the bridge's
    state = json.loads((directory / "cluster.json").read_text())
    net = state["network"]
    hosts = [n["host"] for n in state["nodes"]]
    assert all(h.startswith(f"10.213.{net['subnet']}.") for h in hosts), hosts
    assert state["rpc_url"].startswith(f"http://10.213.{net['subnet']}.1:")
    # and the namespaces, veths and bridge are gone with the cluster (the kernel
    # deletes a namespace's veth pair a moment after the namespace)
    left = [n for n in _ip("netns", "list").stdout.split() if net["net_id"] in n]
    assert left == [], left
    deadline = time.monotonic() + 10
    while net["net_id"] in _ip("-o", "link").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    assert net["net_id"] not in _ip("-o", "link").stdout


def test_without_root_a_partition_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flocknode.cli import main

    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # what an ordinary user's process sees
    code = main(["cluster", "up", "--dir", str(tmp_path / "c"), "--chaos", "partition"])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "--chaos partition needs root (network namespaces and a bridge per cluster)"
    )
    assert not (tmp_path / "c").exists()
