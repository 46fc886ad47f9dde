"""Semantic checks of gossip messages (pure; a static membership table)."""

from __future__ import annotations

import pytest

from flocknode.identity.keys import PeerKey
from flocknode.p2p.codec import encode_message
from flocknode.p2p.membership import StaticMembership
from flocknode.p2p.messages import KeyWraps, ModelAvailable, UpdateAnnounce, WireKeyWrap
from flocknode.p2p.validation import check_gossip, check_message

H = b"\x01" * 32


@pytest.mark.parametrize(
    ("round_", "current", "reason"),
    [
        (5, 5, ""),
        (6, 5, ""),
        (4, 5, "stale_round"),
        (7, 5, "future_round"),
        (0, 0, "bad_round"),
        (1, 0, ""),
    ],
)
def test_round_window(round_: int, current: int, reason: str) -> None:
    assert check_message(UpdateAnnounce(round_, H, 10), current) == reason


def test_content_and_wrap_checks() -> None:
    assert check_message(UpdateAnnounce(1, H, 0), 1) == "empty_content"
    assert check_message(ModelAvailable(1, H, 0), 1) == "empty_content"
    assert check_message(KeyWraps(1, H, ()), 1) == "no_wraps"
    w = WireKeyWrap(b"\x02" * 32, b"\x03" * 72)
    assert check_message(KeyWraps(1, H, (w, w)), 1) == "duplicate_recipient"
    assert check_message(KeyWraps(1, H, (w, WireKeyWrap(b"\x04" * 32, b"\x03" * 72))), 1) == ""


def test_check_gossip_needs_a_member_origin_and_well_formed_bytes() -> None:
    member, outsider = PeerKey.generate().peer_id, PeerKey.generate().peer_id
    m = StaticMembership(round_number=3)
    m.add(member)
    good = encode_message(ModelAvailable(3, H, 9))
    v = check_gossip(good, member, m)
    assert v.accepted and v.message == ModelAvailable(3, H, 9)
    assert check_gossip(good, outsider, m).reason == "not_member"
    assert check_gossip(b"\x93\x01\x02\x03", member, m).reason == "malformed"
    assert check_gossip(encode_message(ModelAvailable(2, H, 9)), member, m).reason == "stale_round"
    assert not check_gossip(b"", member, m).accepted
