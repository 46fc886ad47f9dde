"""When every peer is gone: /readyz turns 503 with the reason, /metrics and the page
say so, and doctor fails the peer check with its fix (a running node, and a stopped
one that dials the registered addresses itself). Runs last: it kills the cluster's
other nodes."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from flocknode.cluster.launcher import _alive, node_status
from flocknode.commands.doctor import Doctor
from flocknode.config import ENV_PRIVATE_KEY
from tests.integration.operators.operators_cluster import KEYSTORE_NODE, OperatorCluster

pytestmark = pytest.mark.integration


def readyz(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_no_peers_not_ready_and_doctor_says_why(
    settled: OperatorCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = settled
    keystore_node = h.state.node(KEYSTORE_NODE)
    if keystore_node.pid and _alive(keystore_node.pid):
        h.terminate(KEYSTORE_NODE, "before the copy", 15.0)
    stopped = tmp_path / "node"
    shutil.copytree(
        keystore_node.data_dir, stopped, ignore=shutil.ignore_patterns("store", "status.json")
    )
    for n in h.state.nodes:
        if n.name not in ("node-0", KEYSTORE_NODE):
            h.kill(n.name)
    url = h.url("node-0")
    _, doc = h.wait("node-0 to notice", lambda: (r := readyz(url))[0] == 503 and r, 60)
    assert doc["ready"] is False and "no peer connected" in doc["reasons"], doc
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert "flocknode_ready 0.0" in metrics and "flocknode_peers 0.0" in metrics
    with urllib.request.urlopen(url + "/", timeout=10) as r:
        assert "not ready" in r.read().decode()

    # doctor reads a running node's status.json (rewritten every second)
    def no_peers() -> bool:
        s = node_status(h.state.node("node-0")).status
        return s is not None and s.p2p.peers == ()

    h.wait("status.json", no_peers, 10)
    monkeypatch.setenv(ENV_PRIVATE_KEY, h.state.node("node-0").key)
    checks = {c.name: c for c in Doctor(Path(h.state.node("node-0").data_dir) / "node.toml").run()}
    assert checks["peers"].status == "FAIL" and checks["peers"].fix, checks["peers"]
    assert [n for n, c in checks.items() if c.status != "PASS"] == ["peers"]

    monkeypatch.delenv(ENV_PRIVATE_KEY)
    h.kill("node-0")
    checks = {c.name: c for c in Doctor(stopped / "node.toml", peer_timeout=5.0).run()}
    assert checks["peers"].status == "FAIL", checks["peers"]
    assert "none of 3 registered peers answered" in checks["peers"].detail
    assert "firewall" in checks["peers"].fix
