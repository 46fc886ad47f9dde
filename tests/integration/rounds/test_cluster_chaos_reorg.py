"""``flocknode cluster up --chaos reorg=2`` end to end: a real 4-node cluster, 3
rounds, the chain's last 1-3 blocks replaced twice right after a seat holder's
transaction was mined in them, and the invariants the summary reports
(docs/protocol.md, "Faults and the promises kept under them"; "Chain
reorganisations and confirmations").
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import pytest

from tests.integration.rounds.chaos_run import run_cluster_up

pytestmark = pytest.mark.integration


def test_reorg_faults_keep_every_promise(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    cmd = [sys.executable, "-m", "flocknode.cli", "cluster", "up", "--dir", str(directory)]
    cmd += ["--nodes", "4", "--rounds", "3", "--isolation", "none", "--json"]
    cmd += ["--chaos", "reorg=2", "--chaos-seed", "1"]
    done = run_cluster_up(cmd, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    s = json.loads(done.stdout)
    faults = s["chaos"]["faults"]
    assert [f["kind"] for f in faults] == ["reorg", "reorg"], s["chaos"]
    assert s["chaos"]["not_injected"] == []
    for f in faults:
        assert 1 <= f["depth"] <= 3 and f["method"] in ("anvil_reorg", "anvil_rollback"), f
        assert 2 <= f["round"] <= 3 and f["phase"] in ("train", "commit", "reveal"), f
    # each reorg came right after a seat holder's transaction and removed it
    removed = [t for f in faults for t in f["removed"]]
    seat_txs = [t for t in removed if t["action"] in ("submitUpdate", "commitVote", "revealVote")]
    assert len(seat_txs) >= 2, faults
    assert all(f["role"] in ("proposer", "voter") for f in faults), faults
    checks = s["invariants"]
    assert set(checks) == {
        "agreement",
        "honest_not_slashed",
        "committed_votes_revealed",
        "rounds_finalized",
        "bounded_growth",
        "reorged_txs_mined_again",
        "reorged_votes_revealed",
    }
    assert all(c["ok"] for c in checks.values()), checks
    assert checks["reorged_txs_mined_again"]["removed_own"] >= len(seat_txs)
    assert s["ok"] and len([r for r in s["rounds"] if not r["voided"]]) == 3
    # the nodes ran with one confirmation, and the senders of the removed
    # transactions noticed and broadcast them again
    senders = {t["node"] for t in removed if t["node"]}
    for name in senders:
        cfg = tomllib.loads((directory / name / "node.toml").read_text())
        assert cfg["chain"]["confirmations"] == 1
        log = (directory / name / "node.log").read_text(errors="replace")
        assert "broadcast again" in log, log[-2000:]
    assert "chaos: reorg" in done.stderr
