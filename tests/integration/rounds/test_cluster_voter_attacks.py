"""A proposer attack on the voters, end to end: zero updates.

(Partial key wraps, where voters relay the key so they do not split, run in
virtual time in tests/unit/rounds/test_voter_run.py and test_voter_seats.py.)

Real node processes on a real anvil (run under the shared heavy-test lock).
node-0 cheats and has ten times the stake of the others, so it takes a
proposer seat in almost every round; the test reads what happened from chain.
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


def test_finding5_zero_update_gets_no_honest_proposer_rejected_and_no_pay(
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
                        # "no work": flagged by every winner, so unpaid; not slashable
                        assert all(v.votes[w].flag_bits >> seat & 1 for w in win), r
                        assert not rej >> seat & 1, f"round {r}: zero update rejected"
                        assert p not in rewarded, f"round {r}: zero update paid"
                else:
                    assert not rej >> seat & 1, f"round {r}: honest proposer rejected"
                    assert not any(w == p for w, _ in slashed), (r, slashed)
                    if v.accepted and v.updates[seat].submitted:
                        assert p in rewarded, f"round {r}: honest proposer unpaid"
        assert _cheater_rounds(h, zero) >= 1, "the zero-update node never proposed"
