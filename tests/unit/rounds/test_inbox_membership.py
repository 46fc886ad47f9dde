"""The round engine's gossip inbox and its chain-backed membership table."""

from __future__ import annotations

from libp2p.peer.id import ID

from flocknode.chain.registry import Member, Registry
from flocknode.identity import PeerKey
from flocknode.p2p.gossip import Received
from flocknode.p2p.messages import KeyWraps, ModelAvailable, UpdateAnnounce, WireKeyWrap
from flocknode.rounds.inbox import Inbox
from flocknode.rounds.membership import ChainMembership
from flocknode.rounds.windows import GOSSIP_ROUNDS_KEPT
from tests.unit.rounds.views import make_view

ME = b"\x01" * 32
OTHER = b"\x02" * 32


def peer() -> ID:
    return PeerKey.generate().peer_id


def test_inbox_keeps_only_wraps_addressed_to_this_node() -> None:
    inbox, p = Inbox(ME), peer()
    blob = b"\xaa" * 32
    wraps = (WireKeyWrap(OTHER, b"x" * 72), WireKeyWrap(ME, b"y" * 72))
    inbox.on_message(Received(p, KeyWraps(3, blob, wraps)))
    assert inbox.wrap_for(3, blob, p) == b"y" * 72
    assert inbox.wrap_for(3, blob, peer()) is None  # another origin: not the proposer's
    inbox.on_message(Received(p, KeyWraps(4, blob, (WireKeyWrap(OTHER, b"z" * 72),))))
    assert inbox.wrap_for(4, blob, p) is None


def test_inbox_tracks_holders_and_forgets_old_rounds() -> None:
    inbox = Inbox(ME)
    a, b = peer(), peer()
    blob = b"\xbb" * 32
    inbox.on_message(Received(a, UpdateAnnounce(1, blob, 10)))
    inbox.on_message(Received(b, UpdateAnnounce(1, blob, 10)))
    assert inbox.holders(1, blob) == {a, b}
    inbox.on_message(Received(a, UpdateAnnounce(9, b"\xcc" * 32, 10)))
    assert inbox.holders(1, blob) == set()  # pruned: too old
    inbox.on_message(Received(a, ModelAvailable(9, b"\xdd" * 32, 100)))
    assert inbox.model_holders[b"\xdd" * 32] == {a}


def member(wallet: str, eligible: bool = True) -> Member:
    return Member(
        wallet, peer(), b"\x03" * 32, ("/ip4/127.0.0.1/tcp/4001", "garbage"), 10, eligible
    )


def test_membership_follows_registry_stake_and_round_seats() -> None:
    m = ChainMembership()
    alice, bob, carol = member("0xA1"), member("0xB2"), member("0xC3", eligible=False)
    m.update_registry(Registry((alice, bob, carol), 0))
    assert m.is_member(alice.peer_id) and m.is_member(bob.peer_id)
    assert not m.is_member(carol.peer_id)  # registered, stake below the minimum
    assert [str(a) for a in m.addrs(alice.peer_id)] == ["/ip4/127.0.0.1/tcp/4001"]
    assert m.wallet_of(bob.peer_id) == "0xB2" and m.peer_of("0xb2") == bob.peer_id
    m.update_round(make_view(5, voters=("0xB2",)))
    assert m.current_round() == 5
    assert m.is_voter(5, bob.peer_id) and not m.is_voter(5, alice.peer_id)
    m.update_registry(Registry((alice,), 0))  # bob unstaked and left
    assert not m.is_member(bob.peer_id) and not m.is_voter(5, bob.peer_id)


def test_a_seated_leaver_stays_a_member_until_its_round_is_no_longer_kept() -> None:
    # docs/protocol.md, "Faults and the promises kept under them": a participant
    # that requested its unstake still holds its seat in the current round and
    # must be heard (and hear) until that role is done
    m = ChainMembership()
    alice, bob = member("0xA1"), member("0xB2")
    m.update_registry(Registry((alice, bob), 0))
    m.update_round(make_view(5, voters=("0xB2",)))
    bob_unstaked = Member(
        "0xB2", bob.peer_id, bob.box_public_key, bob.multiaddrs, 0, eligible=False
    )
    m.update_registry(Registry((alice, bob_unstaked), 0))
    assert m.is_member(bob.peer_id) and m.is_voter(5, bob.peer_id)
    assert [str(a) for a in m.addrs(bob.peer_id)] == ["/ip4/127.0.0.1/tcp/4001"]
    m.update_round(make_view(6, voters=("0xA1",)))
    assert m.is_member(bob.peer_id)  # round 5 is still kept: its role may still run
    m.update_round(make_view(5 + GOSSIP_ROUNDS_KEPT + 1, voters=("0xA1",)))
    assert not m.is_member(bob.peer_id) and m.is_member(alice.peer_id)


def test_a_newcomer_is_a_member_once_staked_before_it_holds_a_seat() -> None:
    m = ChainMembership()
    alice, newcomer = member("0xA1"), member("0xD4", eligible=False)
    m.update_registry(Registry((alice, newcomer), 0))
    m.update_round(make_view(3, voters=("0xA1",)))
    assert not m.is_member(newcomer.peer_id)  # registered, not staked
    staked = Member(
        "0xD4", newcomer.peer_id, newcomer.box_public_key, newcomer.multiaddrs, 10, True
    )
    m.update_registry(Registry((alice, staked), 0))
    assert m.is_member(newcomer.peer_id) and not m.is_voter(3, newcomer.peer_id)
