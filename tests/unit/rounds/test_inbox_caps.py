"""Finding 11: the gossip inbox is capped per origin and per round."""

from __future__ import annotations

from libp2p.peer.id import ID

from flocknode.identity import PeerKey
from flocknode.p2p.gossip import Received
from flocknode.p2p.messages import KeyWraps, ModelAvailable, UpdateAnnounce, WireKeyWrap
from flocknode.rounds.inbox import BLOBS_PER_ORIGIN, MODELS_PER_ORIGIN, Inbox
from flocknode.rounds.windows import GOSSIP_ROUNDS_KEPT

ME = b"\x01" * 32
FLOOD = 1000


def peer() -> ID:
    return PeerKey.generate().peer_id


def fake(i: int) -> bytes:
    return i.to_bytes(4, "big") * 8


def test_finding11_model_flood_cannot_evict_real_holders() -> None:
    inbox = Inbox(ME)
    honest, attacker = [peer() for _ in range(3)], peer()
    real = b"\x77" * 32
    for p in honest:
        inbox.on_message(Received(p, ModelAvailable(5, real, 1000)))
    for i in range(FLOOD):
        inbox.on_message(Received(attacker, ModelAvailable(5, fake(i), 1000)))
    assert inbox.model_holders[real] == set(honest)
    # the attacker keeps only its newest MODELS_PER_ORIGIN entries
    assert len(inbox.model_holders) == 1 + MODELS_PER_ORIGIN
    assert set(inbox.model_holders) - {real} == {fake(FLOOD - 1), fake(FLOOD - 2)}
    # an honest node that moves on to the next model still counts as holder of both
    nxt = b"\x78" * 32
    inbox.on_message(Received(honest[0], ModelAvailable(6, nxt, 1000)))
    assert honest[0] in inbox.model_holders[real] and inbox.model_holders[nxt] == {honest[0]}
    # models nobody announced for GOSSIP_ROUNDS_KEPT rounds are forgotten
    inbox.on_message(Received(honest[1], ModelAvailable(6 + GOSSIP_ROUNDS_KEPT + 1, nxt, 1000)))
    assert set(inbox.model_holders) == {nxt}


def test_finding11_blob_and_wrap_flood_is_capped_per_origin_and_round() -> None:
    inbox = Inbox(ME)
    proposer, attacker = peer(), peer()
    blob = b"\xbb" * 32
    inbox.on_message(Received(proposer, UpdateAnnounce(3, blob, 10)))
    inbox.on_message(Received(proposer, KeyWraps(3, blob, (WireKeyWrap(ME, b"w" * 72),))))
    for i in range(FLOOD):
        inbox.on_message(Received(attacker, UpdateAnnounce(3, fake(i), 10)))
        inbox.on_message(Received(attacker, KeyWraps(3, fake(i), (WireKeyWrap(ME, b"x" * 72),))))
    assert len(inbox.announced[3]) == 1 + BLOBS_PER_ORIGIN
    assert len(inbox.wraps) == 1 + BLOBS_PER_ORIGIN
    assert inbox.holders(3, blob) == {proposer}
    assert inbox.wrap_for(3, blob, proposer) == b"w" * 72
    assert inbox.dropped["blobs_per_origin"] == 2 * (FLOOD - BLOBS_PER_ORIGIN)
    # the same origin may still use its quota in the next round
    inbox.on_message(Received(attacker, UpdateAnnounce(4, fake(0), 10)))
    assert inbox.holders(4, fake(0)) == {attacker}
    # and the per-round bookkeeping leaves with the round
    inbox.on_message(Received(proposer, UpdateAnnounce(4 + GOSSIP_ROUNDS_KEPT + 1, blob, 10)))
    assert set(inbox.announced) == {4 + GOSSIP_ROUNDS_KEPT + 1} and not inbox.wraps


def test_finding11_a_voter_relaying_a_wrap_per_seat_is_within_its_cap() -> None:
    # voters relay the content key of every seat they opened (finding 9): the node
    # sizes the per-origin cap to the task's proposer seats
    seats = 5
    inbox = Inbox(ME, blobs_per_origin=seats)
    voter = peer()
    for i in range(seats + 1):
        inbox.on_message(Received(voter, KeyWraps(3, fake(i), (WireKeyWrap(ME, b"r" * 72),))))
    assert all(inbox.wrap_for(3, fake(i), voter) == b"r" * 72 for i in range(seats))
    assert inbox.wrap_for(3, fake(seats), voter) is None
    assert inbox.dropped["blobs_per_origin"] == 1
