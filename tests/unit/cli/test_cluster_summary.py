"""The cluster summary names the model after a round and the round's winning
aggregate separately: they differ when a round is rejected."""

from __future__ import annotations

from flocknode.chain.types import Phase, RoundView
from flocknode.cluster.monitor import round_summary

BEFORE = bytes([1]) * 32
AGGREGATE = bytes([2]) * 32


def view(accepted: bool, winning: bytes, after: bytes) -> RoundView:
    return RoundView(
        round=3,
        phase=Phase.FINALIZED,
        seed_block=0,
        seed=b"",
        elected_at=0,
        train_end=0,
        commit_end=0,
        reveal_end=0,
        eligible=(),
        eligible_stakes=(),
        proposers=("0xA",),
        voters=("0xB",),
        updates=(),
        votes=(),
        finalized=True,
        accepted=accepted,
        winning_hash=winning,
        winning_included_bits=0,
        global_model_hash_after=after,
    )


def summary(v: RoundView) -> dict[str, object]:
    names = {"0xA": "node-0", "0xB": "node-1"}
    return round_summary(
        v, names.__getitem__, accuracy=0.5, node_hashes={}, slashed=[], seconds=1.0
    ).to_json()


def test_an_accepted_round_moves_the_model_to_its_aggregate() -> None:
    s = summary(view(True, AGGREGATE, AGGREGATE))
    assert s["model_after"] == s["winning_aggregate"] == "0x" + AGGREGATE.hex()
    assert (s["proposers"], s["voters"]) == (["node-0"], ["node-1"])


def test_a_rejected_round_keeps_the_previous_model_and_names_its_aggregate() -> None:
    s = summary(view(False, AGGREGATE, BEFORE))
    assert s["model_after"] == "0x" + BEFORE.hex()
    assert s["winning_aggregate"] == "0x" + AGGREGATE.hex()
    s = summary(view(False, bytes(32), BEFORE))  # no aggregate won
    assert s["model_after"] == "0x" + BEFORE.hex() and s["winning_aggregate"] == ""
