"""SIGTERM (what systemd sends on stop) during train, commit and reveal, then a restart:
the node exits before systemd's stop timeout and loses no vote (PROTOCOL.md
"Local state": the journal-based resume reveals what it committed).

Runs first in this package: it needs the cluster's rounds 1-3 while they happen.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from flocknode.chain.types import Phase, RoundView
from tests.integration.operators.operators_cluster import KEYSTORE_NODE, OperatorCluster

pytestmark = pytest.mark.integration

UNIT = Path(__file__).resolve().parents[3] / "config" / "flocknode.service"


def stop_timeout() -> float:
    """TimeoutStopSec of the systemd unit: after it, systemd sends SIGKILL."""
    m = re.search(r"^TimeoutStopSec=(\d+)$", UNIT.read_text(), re.M)
    assert m, "the unit sets TimeoutStopSec"
    return float(m.group(1))


def _pick_voter(h: OperatorCluster, view: RoundView) -> tuple[str, int]:
    names = [h.by_wallet[w] for w in view.voters]
    name = KEYSTORE_NODE if KEYSTORE_NODE in names else names[0]
    return name, names.index(name)


def _signal_in(h: OperatorCluster, r: int, phase: Phase, limit: float) -> tuple[str, int, str]:
    """SIGTERM a voter of round ``r``: in its train phase, right after its commitment is
    on chain, or in the reveal phase before it revealed. Returns (node, seat, phase)."""
    elected = h.wait_phase(r, {Phase.TRAIN, Phase.COMMIT, Phase.REVEAL}, timeout=150)
    name, seat = _pick_voter(h, elected)

    def ready() -> RoundView | None:
        nonlocal name, seat
        v = h.round_view(r)
        if v is None:
            return None
        if phase is Phase.TRAIN:
            return v if v.phase is Phase.TRAIN else None
        if phase is Phase.COMMIT:  # the first voter whose commitment is on chain
            committed = [i for i, vote in enumerate(v.votes) if vote.committed]
            if not committed:
                return None
            seat = seat if seat in committed else committed[0]
            name = h.by_wallet[v.voters[seat]]
            return v
        return v if v.phase is Phase.REVEAL else None

    view = h.wait(f"round {r}: the moment to stop a voter ({phase.label})", ready, 120, poll=0.02)
    if phase is Phase.REVEAL and view.votes[seat].revealed:  # lost the race: try the other
        seat = 1 - seat
        name = h.by_wallet[view.voters[seat]]
    now = h.round_view(r)
    assert now is not None
    took = h.terminate(name, now.phase.label, limit)
    assert took < limit, f"{name} did not exit within TimeoutStopSec={limit:.0f} s\n{h.tails()}"
    label = now.phase.label
    if now.votes[seat].committed:
        label += ", vote committed"
    if now.votes[seat].revealed:
        label += ", already revealed"
    return name, seat, label


def test_sigterm_in_train_commit_and_reveal_loses_no_vote(op_cluster: OperatorCluster) -> None:
    h = op_cluster
    limit = stop_timeout()
    for r, phase in enumerate((Phase.TRAIN, Phase.COMMIT, Phase.REVEAL), start=1):
        name, seat, at = _signal_in(h, r, phase, limit)
        h.start(name)
        final = h.wait_finalized(r, timeout=180)
        assert final.votes[seat].revealed, f"round {r}: {name} (stopped in {at}) lost its vote"
        assert final.winning_hash != bytes(32), f"round {r}: no quorum after {name} restarted"
        journal = h.journal(name, r)
        assert journal.get("committed") and journal.get("revealed"), journal
        print(f"round {r}: SIGTERM {name} in {at}; revealed after restart")
        if "already revealed" in at:
            warnings.warn(f"round {r}: both voters revealed before SIGTERM", stacklevel=1)
    # the numbers for the report (pytest -s shows them)
    for node, phase_label, seconds in h.stop_seconds:
        print(f"SIGTERM {node} in {phase_label}: exited after {seconds:.2f} s")
