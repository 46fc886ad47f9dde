"""SIGTERM (what systemd sends on stop) in the train, commit and reveal phases, then a
restart: the node exits before systemd's stop timeout and loses nothing (docs/protocol.md,
"Local state"): a proposer stopped while training still gets its update in, a voter
stopped after its commitment or before its reveal still reveals (journal resume).

Runs first in this package: it needs the cluster's rounds while they happen.
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path

import pytest

from flocknode.chain.types import Phase, RoundView
from tests.integration.operators.conftest import SPEC
from tests.integration.operators.operators_cluster import OperatorCluster

pytestmark = pytest.mark.integration

UNIT = Path(__file__).resolve().parents[3] / "config" / "flocknode.service"


def stop_timeout() -> float:
    """TimeoutStopSec of the systemd unit: after it, systemd sends SIGKILL."""
    m = re.search(r"^TimeoutStopSec=(\d+)$", UNIT.read_text(), re.M)
    assert m, "the unit sets TimeoutStopSec"
    return float(m.group(1))


def _moment(h: OperatorCluster, r: int, phase: Phase) -> tuple[str, str, int, bool]:
    """Wait for the moment to stop a node in round ``r``: (node, role, seat, paused).

    train: the proposer while the phase is open (it is training);
    commit: the first voter whose commitment is on chain;
    reveal: the first voter whose commitment is on chain is paused (SIGSTOP) until
    the reveal phase opens, so the SIGTERM lands in it before that voter revealed.
    """
    h.wait_phase(r, {Phase.TRAIN, Phase.COMMIT, Phase.REVEAL}, timeout=150)
    pick: list[tuple[str, str, int, bool]] = []

    def ready() -> bool:
        v = h.round_view(r)
        if v is None:
            return False
        if phase is Phase.TRAIN:
            if v.phase is Phase.TRAIN:
                pick.append((h.by_wallet[v.proposers[0]], "proposer", 0, False))
            return bool(pick)
        committed = [i for i, vote in enumerate(v.votes) if vote.committed]
        if not committed:
            return False
        seat = committed[0]
        name = h.by_wallet[v.voters[seat]]
        paused = phase is Phase.REVEAL and v.phase is Phase.COMMIT
        if paused:
            h.pause(name)
        pick.append((name, "voter", seat, paused))
        return True

    h.wait(f"round {r}: the moment to stop a node ({phase.label})", ready, 150, poll=0.05)
    if pick[0][3]:
        h.wait_phase(r, {Phase.REVEAL, Phase.FINALIZABLE, Phase.FINALIZED}, timeout=120)
    return pick[0]


def test_sigterm_in_train_commit_and_reveal_loses_nothing(op_cluster: OperatorCluster) -> None:
    h = op_cluster
    limit = stop_timeout()
    r = 1
    for phase in (Phase.TRAIN, Phase.COMMIT, Phase.REVEAL):
        name, role, seat, paused = _moment(h, r, phase)
        now: RoundView | None = h.round_view(r)
        assert now is not None
        took = h.terminate(name, now.phase.label, limit, resume=paused)
        assert took < limit, f"{name} did not exit within TimeoutStopSec={limit:.0f} s\n{h.tails()}"
        started = time.time()
        h.start(name)
        h.wait_up(name, started)
        final = h.wait_finalized(r, timeout=300)
        assert final.winning_hash != bytes(32), f"round {r}: no quorum after {name} restarted"
        if role == "proposer":
            assert final.updates[seat].submitted, f"round {r}: the update of {name} was lost"
            assert final.winning_included_bits >> seat & 1, f"round {r}: update not included"
        else:
            assert final.votes[seat].revealed, f"round {r}: {name} lost its vote"
            journal = h.journal(name, r)
            assert journal.get("committed") and journal.get("revealed"), journal
        state = "already revealed" if role == "voter" and now.votes[seat].revealed else ""
        print(f"round {r}: SIGTERM {role} {name} in {now.phase.label} {state}: ok after restart")
        if state:
            warnings.warn(f"round {r}: every voter revealed before the SIGTERM", stacklevel=1)
        # the next case takes a round elected after the restarted node was up
        r = max(r, h.client.current_round()) + 1
    assert r <= SPEC.rounds + 1
    for node, phase_label, seconds in h.stop_seconds:  # for the report (pytest -s)
        print(f"SIGTERM {node} in {phase_label}: exited after {seconds:.2f} s")
