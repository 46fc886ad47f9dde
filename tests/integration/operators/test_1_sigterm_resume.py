"""SIGTERM (what systemd sends on stop) in the train, commit and reveal phases, then a
restart: the node exits before systemd's stop timeout and loses nothing (docs/protocol.md,
"Local state"): a proposer stopped while training still gets its update in, a voter
stopped after its commitment or before its reveal still reveals (journal resume).

Runs first in this package: it needs the cluster's rounds while they happen.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from flocknode.chain.types import Phase
from tests.integration.operators.conftest import SPEC
from tests.integration.operators.operators_cluster import OperatorCluster

pytestmark = pytest.mark.integration

UNIT = Path(__file__).resolve().parents[3] / "config" / "flocknode.service"


def stop_timeout() -> float:
    """TimeoutStopSec of the systemd unit: after it, systemd sends SIGKILL."""
    m = re.search(r"^TimeoutStopSec=(\d+)$", UNIT.read_text(), re.M)
    assert m, "the unit sets TimeoutStopSec"
    return float(m.group(1))


def _proposer_moment(h: OperatorCluster, r: int) -> tuple[str, int]:
    """The proposer of round ``r`` while its train phase is open (it is training)."""
    v = h.wait_phase(r, {Phase.TRAIN}, timeout=150)
    return h.by_wallet[v.proposers[0]], 0


def _hold_other_voters(h: OperatorCluster, r: int) -> tuple[str, list[str]]:
    """Round ``r``'s first voter, once its commitment is on chain while the commit
    phase is still open: the other voters are paused (SIGSTOP) from the train
    phase until then, so their commitments cannot end the commit phase early
    and the first voter cannot have revealed. The caller resumes them."""
    v = h.wait_phase(r, {Phase.TRAIN}, timeout=150)
    target, *others = [h.by_wallet[w] for w in v.voters]
    for name in others:
        h.pause(name)

    def committed() -> bool:
        now = h.round_view(r)
        return now is not None and now.votes[0].committed

    h.wait(f"round {r}: {target}'s commitment", committed, 150, poll=0.05)
    now = h.round_view(r)
    assert now is not None and now.phase is Phase.COMMIT and not now.votes[0].revealed
    return target, others


def _stop(h: OperatorCluster, name: str, phase: Phase, resume: bool = False) -> None:
    took = h.terminate(name, phase.label, stop_timeout(), resume=resume)
    assert took < stop_timeout(), (
        f"{name} did not exit within TimeoutStopSec={stop_timeout():.0f} s\n{h.tails()}"
    )


def _restart(h: OperatorCluster, name: str) -> None:
    started = time.time()
    h.start(name)
    h.wait_up(name, started)


def _next_round(h: OperatorCluster) -> int:
    """A round elected after every node is up again."""
    r = h.client.current_round() + 1
    assert r <= SPEC.rounds, f"round {r}: the cluster ran out of rounds for the next case"
    return r


def test_sigterm_in_train_commit_and_reveal_loses_nothing(op_cluster: OperatorCluster) -> None:
    h = op_cluster
    # train: the proposer, while it trains
    r = 1
    name, seat = _proposer_moment(h, r)
    _stop(h, name, Phase.TRAIN)
    _restart(h, name)
    final = h.wait_finalized(r, timeout=300)
    assert final.winning_hash != bytes(32), f"round {r}: no quorum after {name} restarted"
    assert final.updates[seat].submitted, f"round {r}: the update of {name} was lost"
    assert final.winning_included_bits >> seat & 1, f"round {r}: update not included"
    print(f"round {r}: SIGTERM proposer {name} in train: ok after restart")

    # commit: a voter whose commitment is on chain, in the commit phase
    # reveal: the same, paused until the reveal phase opens, so the SIGTERM
    # lands in the reveal phase before that voter revealed
    for phase in (Phase.COMMIT, Phase.REVEAL):
        r = _next_round(h)
        name, others = _hold_other_voters(h, r)
        if phase is Phase.COMMIT:
            _stop(h, name, phase)
            for other in others:
                h.resume(other)
        else:
            h.pause(name)
            for other in others:
                h.resume(other)
            now = h.wait_phase(r, {Phase.REVEAL}, timeout=120)
            assert not now.votes[0].revealed
            _stop(h, name, phase, resume=True)
        _restart(h, name)
        final = h.wait_finalized(r, timeout=300)
        assert final.winning_hash != bytes(32), f"round {r}: no quorum after {name} restarted"
        assert final.votes[0].revealed, f"round {r}: {name} lost its vote"
        journal = h.journal(name, r)
        assert journal.get("committed") and journal.get("revealed"), journal
        print(f"round {r}: SIGTERM voter {name} in {phase.label}: ok after restart")
    for node, phase_label, seconds in h.stop_seconds:  # for the report (pytest -s)
        print(f"SIGTERM {node} in {phase_label}: exited after {seconds:.2f} s")
