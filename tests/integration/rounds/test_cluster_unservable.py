"""An unservable global model on a live cluster (docs/protocol.md "Unservable
models"): two colluding voter seats adopt a hash nobody holds, the next round's
voters vote "base model unavailable", the model rolls back and rounds go on.

The draw is steered with stake: node-0 (honest, 100x) takes the one proposer
seat almost always, and the colluders (10x) then take two of the three voter
seats in about 19 rounds of 20.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flocknode.chain.events import Slashed
from flocknode.cluster.launcher import ClusterSpec
from flocknode.rounds.byzantine import Behaviour
from flocknode.rounds.unservable import unservable_hash
from tests.integration.rounds.harness import Harness, cluster

pytestmark = pytest.mark.integration

H = Behaviour.HONEST
U = Behaviour.UNSERVABLE_HASH


def reasons(h: Harness, r: int) -> set[tuple[str, str]]:
    return {(e.wallet, e.reason) for e in h.events(Slashed, r)}


def test_finding6_colluders_unservable_model_is_rolled_back_and_rounds_go_on(
    tmp_path: Path,
) -> None:
    # The colluders hold two of the three voter seats in a round with chance
    # 0.81 (stake-weighted draw): four chances leave 0.1% of runs without an
    # attack, three would leave 0.7%.
    spec = ClusterSpec(
        nodes=5,
        rounds=6,
        proposers=1,
        voters=3,
        byzantine=(H, U, U, H, H),
        stakes=(10_000, 1000, 1000, 100, 100),
    )
    with cluster(tmp_path / "c", spec) as h:
        colluders = {h.wallet("node-1"), h.wallet("node-2")}
        model = h.client.params().initial_model_hash
        attack = None
        for r in (1, 2, 3, 4):
            v = h.wait_finalized(r, timeout=150)
            if v.accepted and v.winning_hash == unservable_hash(r):
                attack = v
                break
            model = v.global_model_hash_after
        assert attack is not None, "the colluders never held two voter seats\n" + h.tails()
        a = attack.round
        assert {
            w
            for w, vote in zip(attack.voters, attack.votes, strict=True)
            if vote.revealed and vote.aggregate_hash == attack.winning_hash
        } == colluders

        after = h.wait_finalized(a + 1, timeout=180)
        assert after.winning_hash == bytes(32) and not after.accepted, h.tails()
        assert after.global_model_hash_after == model, "rolled back to the model before"
        slashed = reasons(h, a + 1)  # at round a + 1's settlement
        assert {(w, "unservable model") for w in colluders} <= slashed
        assert not any("idle: no update" in why for _w, why in slashed)
        # every node follows the rolled-back model (it still holds it) ...
        h.wait_all_hold(model, [n.name for n in h.state.nodes])
        # ... and the next round trains on it again
        h.wait_finalized(a + 2, timeout=180)
