"""``flocknode cluster up --chaos join,leave`` end to end: a real 4-node cluster
with a spare, 12 rounds (a node takes tens of seconds to start on a loaded
machine, a round a few); the spare registers and starts in round 2 and stakes
once it runs, an honest node unstakes (once the newcomer's stake keeps every
seat fillable without it), withdraws and stops from round 7, and the invariants hold
(docs/protocol.md, "Faults and the promises kept under them"), as a tester runs it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.integration.rounds.chaos_run import run_cluster_up

pytestmark = pytest.mark.integration


def test_a_participant_joins_and_another_leaves_mid_task(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    cmd = [sys.executable, "-m", "flocknode.cli", "cluster", "up", "--dir", str(directory)]
    cmd += ["--nodes", "4", "--rounds", "12", "--isolation", "none", "--json"]
    # seed 7 draws the join in round 2's train phase and the leave in round 7's
    # commit phase: once the leaver's stake is gone the 4 seats take every
    # eligible node, the newcomer included
    cmd += ["--chaos", "join,leave", "--chaos-seed", "7"]
    done = run_cluster_up(cmd, timeout=280)
    assert done.returncode == 0, done.stderr[-4000:]
    s = json.loads(done.stdout)
    assert s["chaos"]["not_injected"] == [] and s["chaos"]["faults"] == [], s["chaos"]
    churn = s["chaos"]["churn"]
    [join], [leave] = churn["joins"], churn["leaves"]
    assert join["node"] == "node-4" and join["round"] == 2 and join["step"] == "staked", churn
    assert leave["step"] == "left" and leave["round"] == 7, churn
    assert leave["unstake_round"] >= max(7, join["staked_round"]), churn
    assert leave["left_round"] >= leave["unstake_round"], churn
    checks = s["invariants"]
    assert set(checks) == {
        "agreement",
        "honest_not_slashed",
        "committed_votes_revealed",
        "rounds_finalized",
        "bounded_growth",
        "new_participants_contribute",
        "leavers_left",
    }
    assert all(c["ok"] for c in checks.values()), checks
    [contrib] = checks["new_participants_contribute"]["joins"]
    # the stake counts from the round after the one current at the stake (or
    # that one, if it opened between the stake and the look at the round)
    assert contrib["counts_from"] in (join["staked_round"], join["staked_round"] + 1), contrib
    # the newcomer acted in a seat it was drawn for
    assert any(seat["acted"] for seat in contrib["seats"]), contrib
    rounds = {r["round"]: r for r in s["rounds"]}
    assert s["ok"] and len(rounds) == 12 and not any(r["voided"] for r in rounds.values())
    # the newcomer is in the summary's rounds like any node; the leaver is not,
    # once gone, and holds no seat after the round of its request
    last = rounds[12]
    assert last["node_hashes"].get("node-4") == last["model_after"], last
    for r in rounds.values():
        if r["round"] > leave["left_round"]:
            assert leave["node"] not in r["node_hashes"], r
    seated = [r for r in rounds.values() if "node-4" in r["proposers"] + r["voters"]]
    assert seated and min(r["round"] for r in seated) >= contrib["counts_from"]
    for r in rounds.values():
        if r["round"] > leave["unstake_round"]:
            assert leave["node"] not in r["proposers"] + r["voters"], r
    log = (directory / leave["node"] / "node.log").read_text(errors="replace")
    assert log.count("node started") == 1 and "stopping on SIGTERM" in log, log[-2000:]
    assert "chaos: join node-4" in done.stderr and f"chaos: leave {leave['node']}" in done.stderr
