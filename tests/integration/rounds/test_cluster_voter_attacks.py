"""Proposer attacks on the voters, end to end: zero updates and partial key wraps.

Real node processes on a real anvil (run under the shared heavy-test lock).
node-0 cheats and has ten times the stake of the others, so it takes a
proposer seat in almost every round; the tests read what happened from chain.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flocknode.chain.events import Rewarded, Slashed
from flocknode.cluster.launcher import ClusterSpec
from flocknode.rounds.byzantine import Behaviour
from tests.integration.rounds.harness import Harness, cluster
from tests.integration.rounds.test_cluster_rounds import winners

pytestmark = pytest.mark.integration

STAKES = (1000, 100, 100, 100, 100)
ROUNDS = 3


def _cheater_rounds(h: Harness, cheater: str) -> int:
    """Rounds in which the cheater submitted as a proposer (and there was a winner)."""
    n = 0
    for r in range(1, ROUNDS + 1):
        v = h.client.get_round(r)
        if cheater in v.proposers and v.updates[v.proposers.index(cheater)].submitted:
            n += bool(winners(v))
    return n


def test_finding5_zero_update_proposer_gets_no_honest_proposer_rejected_and_no_pay(
    tmp_path: Path,
) -> None:
    # Two proposer seats: with [zero, honest] the old lower-median limit was 0.
    spec = ClusterSpec(
        nodes=5,
        rounds=ROUNDS,
        proposers=2,
        voters=3,
        byzantine=(Behaviour.ZERO_UPDATE,),
        stakes=STAKES,
    )
    with cluster(tmp_path / "c", spec) as h:
        h.wait_finalized(ROUNDS, timeout=240)
        zero = h.wallet("node-0")
        for r in range(1, ROUNDS + 1):
            v = h.client.get_round(r)
            slashed = {(e.wallet, e.reason) for e in h.events(Slashed, r)}
            rewarded = {e.wallet for e in h.events(Rewarded, r)}
            win = winners(v)
            assert win, f"round {r}: no winning group {h.tails()}"
            rej = v.votes[win[0]].rejected_bits
            for seat, p in enumerate(v.proposers):
                if p == zero:
                    if v.updates[seat].submitted:
                        assert rej >> seat & 1, f"round {r}: zero update not rejected"
                        assert p not in rewarded, f"round {r}: zero update paid"
                else:
                    assert not rej >> seat & 1, f"round {r}: honest proposer rejected"
                    assert not any(w == p for w, _ in slashed), (r, slashed)
                    if v.accepted and v.updates[seat].submitted:
                        assert p in rewarded, f"round {r}: honest proposer unpaid"
        assert _cheater_rounds(h, zero) >= 1, "the zero-update node never proposed"


def test_finding9_partial_wraps_do_not_split_voters(tmp_path: Path) -> None:
    # node-0 publishes its key wrap to one voter only; the other voters get the
    # key relayed by that voter and every honest voter is in the winning group.
    spec = ClusterSpec(
        nodes=5,
        rounds=ROUNDS,
        proposers=2,
        voters=3,
        byzantine=(Behaviour.PARTIAL_WRAPS,),
        stakes=STAKES,
    )
    with cluster(tmp_path / "c", spec) as h:
        h.wait_finalized(ROUNDS, timeout=240)
        cheater = h.wallet("node-0")
        for r in range(1, ROUNDS + 1):
            v = h.client.get_round(r)
            assert v.winning_hash != bytes(32), f"round {r}: no winner {h.tails()}"
            for wallet, vote in zip(v.voters, v.votes, strict=True):
                assert vote.revealed, f"round {r}: voter {h.by_wallet[wallet]} did not reveal"
                assert vote.aggregate_hash == v.winning_hash, f"round {r}: voters split"
            if cheater in v.proposers and v.updates[v.proposers.index(cheater)].submitted:
                seat = v.proposers.index(cheater)
                assert v.winning_included_bits >> seat & 1, f"round {r}: seat not opened"
            slashed = {e.wallet for e in h.events(Slashed, r)}
            assert not slashed & set(v.voters), (r, slashed)
        assert _cheater_rounds(h, cheater) >= 1, "the partial-wraps node never proposed"
