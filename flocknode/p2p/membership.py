"""Who the p2p layer may talk to: the task's registered, staked participants.

The p2p layer depends only on the small ``Membership`` protocol below. The round
engine implements it over the chain registry (a cached view it refreshes from
the chain: registered, active stake >= minimum, registration signature valid via
``flocknode.identity.verify_registration``); tests use ``StaticMembership``.

Rules for implementations, because the gossip validator and every stream
handler call these methods on the event loop for every message:
- they are synchronous, cheap (dictionary look-ups) and never block or do I/O;
- they never raise: an unknown peer is simply not a member.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from libp2p.peer.id import ID
from multiaddr import Multiaddr

KEEP_VOTER_ROUNDS = 16  # a blob request names its round; older rounds' voters are dropped


@runtime_checkable
class Membership(Protocol):
    """The view of the task's participants that the p2p layer needs."""

    def is_member(self, peer_id: ID) -> bool:
        """Registered, staked, and its registration signature checks out."""
        ...

    def addrs(self, peer_id: ID) -> list[Multiaddr]:
        """The multiaddrs the member registered (without ``/p2p/``); [] if unknown."""
        ...

    def members(self) -> list[ID]:
        """Every current member's peer id (the node's own id included)."""
        ...

    def is_voter(self, round_number: int, peer_id: ID) -> bool:
        """True iff ``peer_id`` holds a voter seat in ``round_number``."""
        ...

    def current_round(self) -> int:
        """The latest opened round (0 before the first round opens)."""
        ...


class StaticMembership:
    """An in-memory, mutable membership table (tests, and the chain adaptor's cache).

    Mutations take effect immediately for every later check.
    """

    def __init__(self, round_number: int = 0) -> None:
        self._addrs: dict[ID, list[Multiaddr]] = {}
        self._voters: dict[int, set[ID]] = {}
        self._round = round_number

    # -- mutation --------------------------------------------------------
    def add(self, peer_id: ID, addrs: Iterable[Multiaddr | str] = ()) -> None:
        """Add (or update the addresses of) a member."""
        self._addrs[peer_id] = [_strip_p2p(Multiaddr(str(a))) for a in addrs]

    def remove(self, peer_id: ID) -> None:
        self._addrs.pop(peer_id, None)

    def set_round(self, round_number: int) -> None:
        self._round = round_number

    def set_voters(self, round_number: int, voters: Iterable[ID]) -> None:
        """The voters of a round; rounds more than KEEP_VOTER_ROUNDS older are forgotten."""
        self._voters[round_number] = set(voters)
        for r in [r for r in self._voters if r < round_number - KEEP_VOTER_ROUNDS]:
            del self._voters[r]

    # -- Membership ------------------------------------------------------
    def is_member(self, peer_id: ID) -> bool:
        return peer_id in self._addrs

    def addrs(self, peer_id: ID) -> list[Multiaddr]:
        return list(self._addrs.get(peer_id, ()))

    def members(self) -> list[ID]:
        return list(self._addrs)

    def is_voter(self, round_number: int, peer_id: ID) -> bool:
        return peer_id in self._addrs and peer_id in self._voters.get(round_number, ())

    def current_round(self) -> int:
        return self._round


def _strip_p2p(addr: Multiaddr) -> Multiaddr:
    """Drop a trailing ``/p2p/<id>`` so the address can go into the peerstore."""
    try:
        addr.value_for_protocol("p2p")
    except Exception:
        return addr
    return addr.decapsulate(Multiaddr("/p2p/" + addr.value_for_protocol("p2p")))
