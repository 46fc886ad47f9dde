"""What a well-formed gossip message must also mean before it is relayed.

Pure functions over decoded messages (``flocknode.p2p.codec`` already checked
their shape). ``check_gossip`` is the whole topic-validator decision: decodes,
known type, the origin is a member, the round is the current or the next one,
sizes in bounds. It returns a drop reason instead of raising.

Left to the round engine (it reads the chain): whether the origin is the
proposer that submitted ``blob_id`` on chain, and whether a wrap's recipient is
an elected voter.
"""

from __future__ import annotations

from dataclasses import dataclass

from libp2p.peer.id import ID

from flocknode.p2p.codec import DecodeError, decode_message
from flocknode.p2p.membership import Membership
from flocknode.p2p.messages import KeyWraps, Message, ModelAvailable, UpdateAnnounce


@dataclass(frozen=True)
class Verdict:
    """The validator's decision: ``message`` when accepted, else the drop ``reason``."""

    message: Message | None
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.message is not None


def check_message(msg: Message, current_round: int) -> str:
    """The reason ``msg`` is not acceptable in ``current_round``, or "" if it is."""
    if msg.round < 1:
        return "bad_round"  # rounds are numbered from 1
    if msg.round < current_round:
        return "stale_round"
    if msg.round > current_round + 1:
        return "future_round"
    if isinstance(msg, UpdateAnnounce | ModelAvailable) and msg.size == 0:
        return "empty_content"
    if isinstance(msg, KeyWraps):
        if not msg.wraps:
            return "no_wraps"
        if len({w.recipient for w in msg.wraps}) != len(msg.wraps):
            return "duplicate_recipient"
    return ""


def check_gossip(data: bytes, origin: ID, membership: Membership) -> Verdict:
    """Decide on one gossip payload signed by ``origin``; never raises on peer input."""
    if not membership.is_member(origin):
        return Verdict(None, "not_member")
    try:
        msg = decode_message(data)
    except DecodeError as e:
        return Verdict(None, e.reason)
    reason = check_message(msg, membership.current_round())
    if reason:
        return Verdict(None, reason)
    return Verdict(msg)
