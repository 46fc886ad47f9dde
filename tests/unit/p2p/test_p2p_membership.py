"""StaticMembership, bootstrap parsing, backoff and the drop counters (pure)."""

from __future__ import annotations

import dataclasses

import pytest
from multiaddr import Multiaddr

from flocknode.identity.keys import PeerKey
from flocknode.p2p.discovery import Backoff, parse_bootstrap
from flocknode.p2p.membership import Membership, StaticMembership
from flocknode.p2p.metrics import P2PCount, P2PCounts, P2PMetrics


def test_static_membership_table() -> None:
    a, b = PeerKey.generate().peer_id, PeerKey.generate().peer_id
    m = StaticMembership(round_number=2)
    assert isinstance(m, Membership)
    m.add(a, [f"/ip4/127.0.0.1/tcp/4040/p2p/{a}", "/ip4/10.0.0.1/tcp/1"])
    assert m.is_member(a) and not m.is_member(b)
    assert m.addrs(a) == [Multiaddr("/ip4/127.0.0.1/tcp/4040"), Multiaddr("/ip4/10.0.0.1/tcp/1")]
    assert m.addrs(b) == [] and m.members() == [a]
    m.set_voters(2, [a, b])
    assert m.is_voter(2, a) and not m.is_voter(2, b)  # b is not a member
    assert not m.is_voter(3, a)
    m.set_round(3)
    assert m.current_round() == 3
    m.remove(a)
    assert not m.is_member(a) and not m.is_voter(2, a)


def test_voters_of_old_rounds_are_forgotten() -> None:
    """A node runs for weeks: the voter table keeps the recent rounds, not every round."""
    from flocknode.p2p.membership import KEEP_VOTER_ROUNDS

    a = PeerKey.generate().peer_id
    m = StaticMembership()
    m.add(a)
    for r in range(1, 1000):
        m.set_voters(r, [a])
    assert m.is_voter(999, a) and m.is_voter(999 - KEEP_VOTER_ROUNDS, a)
    assert not m.is_voter(998 - KEEP_VOTER_ROUNDS, a)
    assert len(m._voters) == KEEP_VOTER_ROUNDS + 1


def test_parse_bootstrap_groups_by_peer() -> None:
    a = PeerKey.generate().peer_id
    out = parse_bootstrap([f"/ip4/127.0.0.1/tcp/1/p2p/{a}", f"/ip4/127.0.0.1/tcp/2/p2p/{a}"])
    assert list(out) == [a] and len(out[a]) == 2
    for bad in ("/ip4/127.0.0.1/tcp/1", "not a multiaddr"):
        with pytest.raises(ValueError, match="bootstrap entry"):
            parse_bootstrap([bad])


def test_backoff_doubles_then_caps() -> None:
    b = Backoff(base=1.0, cap=10.0, jitter=0.0)
    assert [b.delay(n) for n in range(7)] == [0.0, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    jittered = Backoff(base=1.0, cap=10.0, jitter=0.2)
    assert jittered.delay(3, rand=lambda: 0.0) == pytest.approx(3.2)
    assert jittered.delay(3, rand=lambda: 1.0) == pytest.approx(4.8)
    assert Backoff().delay(10_000) <= Backoff().cap * 1.2


def test_metrics_counts_by_reason() -> None:
    m = P2PMetrics()
    m.inc("gossip_dropped", "stale_round")
    m.inc("gossip_dropped", "stale_round")
    m.inc("gossip_dropped", "not_member")
    m.inc("bytes_served", n=100)
    assert m.get("gossip_dropped", "stale_round") == 2
    assert m.total("gossip_dropped") == 3
    assert m.reasons("gossip_dropped") == {"stale_round": 2, "not_member": 1}
    assert m.snapshot() == {
        "bytes_served": 100,
        "gossip_dropped{not_member}": 1,
        "gossip_dropped{stale_round}": 2,
    }


def test_counts_are_a_frozen_labelled_copy_and_round_trip_through_json() -> None:
    m = P2PMetrics()
    m.inc("gossip_dropped", "stale_round", 2)
    m.inc("bytes_served", n=100)
    m.inc("dial", "ok", 0)  # zero: left out
    counts = m.counts()
    assert list(counts) == [
        P2PCount("bytes_served", "", 100),
        P2PCount("gossip_dropped", "stale_round", 2),
    ]
    m.inc("gossip_dropped", "stale_round")  # the copy does not change
    assert counts.get("gossip_dropped", "stale_round") == 2 and counts.total("bytes_served") == 100
    assert counts.reasons("gossip_dropped") == {"stale_round": 2}
    assert counts.to_json() == {"bytes_served": 100, "gossip_dropped{stale_round}": 2}
    assert P2PCounts.from_json(m.snapshot()) == m.counts()
    with pytest.raises(dataclasses.FrozenInstanceError):
        counts.entries = ()  # type: ignore[misc]


def test_counts_from_json_skip_what_is_no_counter() -> None:
    read = P2PCounts.from_json(
        {"a{b}": 1, "c": 2, "bad key{": 3, "d{e}f": 4, "G": 5, "h{i}": "6", "j{}": 7}
    )
    assert [(c.event, c.reason, c.value) for c in read] == [
        ("a", "b", 1),
        ("c", "", 2),
        ("j", "", 7),
    ]
