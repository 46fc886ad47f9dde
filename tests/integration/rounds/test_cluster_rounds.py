"""Rounds end to end with real node processes on a real anvil (docs/protocol.md, "A round").

Each test runs one local cluster; the draw is random, so the tests steer it
with stake (a node with ten times the stake of the others almost always takes
the first seats) and read what happened from the chain.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flocknode.chain.events import Rewarded, Slashed
from flocknode.chain.types import Phase, RoundView
from flocknode.cluster.launcher import ClusterSpec
from flocknode.rounds.byzantine import Behaviour
from tests.integration.rounds.harness import Harness, cluster

pytestmark = pytest.mark.integration

H = Behaviour.HONEST


def winners(view: RoundView) -> list[int]:
    return [
        i for i, v in enumerate(view.votes) if v.revealed and v.aggregate_hash == view.winning_hash
    ]


def assert_honest_voters_agree(h: Harness, view: RoundView, honest: set[str]) -> None:
    for wallet, vote in zip(view.voters, view.votes, strict=True):
        if vote.revealed and h.by_wallet[wallet] in honest:
            assert vote.aggregate_hash == view.winning_hash, f"round {view.round}: disagreement"


def test_rounds_agree_survive_two_voters_down_and_catch_up_a_late_node(tmp_path: Path) -> None:
    spec = ClusterSpec(
        nodes=5, rounds=4, proposers=2, voters=3, commit_seconds=12, reveal_seconds=8
    )
    with cluster(tmp_path / "c", spec, start=False) as h:
        everyone = [n.name for n in h.state.nodes]
        h.start(*everyone[:4])  # node-4 joins late
        v1 = h.wait_finalized(1)
        v2 = h.wait_finalized(2)
        h.start("node-4")

        # Round 3: two of its three voters die right after the election.
        v3 = h.wait_phase(3, {Phase.TRAIN})
        victims = [h.by_wallet[w] for w in v3.voters[:2]]
        for name in victims:
            h.kill(name)
        v3 = h.wait_finalized(3, timeout=90)
        assert not v3.accepted and v3.winning_hash == bytes(32), "no quorum, no winner"
        assert v3.global_model_hash_after == v2.global_model_hash_after, "the model stays"

        h.start(*victims)
        v4 = h.wait_finalized(4, timeout=150)
        for v in (v1, v2, v4):
            if v.winning_hash != bytes(32):
                assert_honest_voters_agree(h, v, set(everyone))
        assert v1.accepted, h.tails()
        # every node, the late one and the restarted ones included, holds the final model
        h.wait_all_hold(v4.global_model_hash_after, everyone)
        acc0 = h.initial_accuracy()
        acc1 = h.accuracy(v1.global_model_hash_after)
        acc4 = h.accuracy(v4.global_model_hash_after)
        # Round 1 averages two updates from non-IID shards at outer_lr 0.5: they can
        # pull apart (node-0's and node-2's gave 0.80 and 0.69 alone, 0.39 together)
        assert acc1 > acc0 + 0.15, (acc0, acc1)
        assert acc4 >= acc1 - 0.05, (acc1, acc4)


def test_sign_flip_proposer_is_rejected_and_slashed_while_accuracy_rises(tmp_path: Path) -> None:
    # node-3 has the largest honest update norm of the 5 shards, so its 4x sign flip
    # stands out against any honest median; 10x stake makes it propose almost always.
    spec = ClusterSpec(
        nodes=5,
        rounds=3,
        proposers=3,
        voters=2,
        rule="median",
        byzantine=(H, H, H, Behaviour.SIGN_FLIP),
        stakes=(100, 100, 100, 1000),
    )
    with cluster(tmp_path / "c", spec) as h:
        final = h.wait_finalized(3, timeout=180)
        sf = h.wallet("node-3")
        caught = 0
        for r in (1, 2, 3):
            v = h.client.get_round(r)
            slashed = {(e.wallet, e.reason) for e in h.events(Slashed, r)}
            assert not any(w != sf and "norm" in why for w, why in slashed), slashed
            win = winners(v)
            if sf in v.proposers and v.updates[v.proposers.index(sf)].submitted and win:
                seat = v.proposers.index(sf)
                assert v.votes[win[0]].rejected_bits >> seat & 1, f"round {r}: not rejected"
                assert any(w == sf and "norm" in why for w, why in slashed), (r, slashed)
                caught += 1
        assert caught >= 1, "the sign flipper never proposed"
        assert h.accuracy(final.global_model_hash_after) > h.initial_accuracy() + 0.3


def test_label_flip_proposer_goes_unrewarded_when_flagged(tmp_path: Path) -> None:
    # Each voter judges on its own small validation split (tens of samples), so
    # one voter alone flags the label flipper in only about 60 % of rounds: with
    # 2 voters (both must flag) "never flagged in 3 rounds" happened 1 run in 5.
    # 3 voters (2 of 3 flag) over 4 rounds leave it at about 1 %.
    spec = ClusterSpec(
        nodes=6,
        rounds=4,
        proposers=3,
        voters=3,
        rule="median",
        byzantine=(Behaviour.LABEL_FLIP,),
        stakes=(1000, 100, 100, 100, 100, 100),
    )
    with cluster(tmp_path / "c", spec) as h:
        h.wait_finalized(4, timeout=240)
        lf = h.wallet("node-0")
        flagged = 0
        for r in (1, 2, 3, 4):
            v = h.client.get_round(r)
            slashed = {(e.wallet, e.reason) for e in h.events(Slashed, r)}
            rewarded = {e.wallet for e in h.events(Rewarded, r)}
            # flags withhold rewards but never slash (a norm rejection may)
            assert not any(w == lf and "norm" not in why for w, why in slashed), slashed
            win = winners(v)
            if lf not in v.proposers or not win:
                continue
            seat = v.proposers.index(lf)
            flags = sum(v.votes[i].flag_bits >> seat & 1 for i in win)
            if flags * 10000 >= 6666 * len(v.voters):
                assert lf not in rewarded, f"round {r}: flagged label flipper rewarded"
                flagged += 1
        assert flagged >= 1, "the label flipper was never flagged by a quorum"


def test_cheating_voters_are_slashed(tmp_path: Path) -> None:
    # node-0 (10x stake) proposes; the other five vote. 3 of 5 seats make a quorum at 60%.
    # A voter killed and restarted mid-round commits and reveals what it journaled:
    # tests/unit/rounds/test_voter_run.py restarts one at every journal point.
    behaviours = (H, Behaviour.WRONG_HASH, Behaviour.NO_REVEAL, H, H, H)
    spec = ClusterSpec(
        nodes=6,
        rounds=2,
        proposers=1,
        voters=5,
        quorum_bps=6000,
        byzantine=behaviours,
        stakes=(1000, 100, 100, 100, 100, 100),
    )
    with cluster(tmp_path / "c", spec) as h:
        wh, nr = h.wallet("node-1"), h.wallet("node-2")
        for r in (1, 2):
            view = h.wait_finalized(r, timeout=120)
            assert view.winning_hash != bytes(32), f"round {r}: honest voters reach quorum"
            slashed = {e.wallet: e.reason for e in h.events(Slashed, r)}
            if wh in view.voters:
                assert wh in slashed, f"round {r}: wrong-hash voter not slashed {slashed}"
            if nr in view.voters:
                assert nr in slashed, f"round {r}: non-revealer not slashed {slashed}"
            assert_honest_voters_agree(h, view, {"node-0", "node-3", "node-4", "node-5"})
